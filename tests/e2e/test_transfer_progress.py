"""Long transfers show progress on a terminal and end with one summary line; piped, only the summary line comes,
and stdout (a job id, --json) is unchanged. Over a real sshd worker behind a relay held to 1 MB/s."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from offload.cli.ui import TransferDisplay, size_text
from offload.runtime.meter import Direction
from tests.e2e.helpers import offload
from tests.workers import SshdWorker, git, make_long_history, proxy_relay, sshd_record, write_outputs

SUMMARY = re.compile(r"^offload: (sent|received) \d+\.\d MB in \d+\.\d s$")


@pytest.fixture
def big_repo(tmp_path: Path) -> Path:
    """A tree of about 2.4 MB that no compression shrinks much: a sync of it takes seconds at 1 MB/s."""
    return make_long_history(tmp_path / "big", commits=1, files=3, file_bytes=800_000)


def slow_worker(worker: SshdWorker, tmp_path: Path) -> dict[str, Any]:
    record = sshd_record(worker, proxy_command=proxy_relay(tmp_path, upload_rate=1_000_000))
    out = write_outputs(tmp_path / "o.json", "ssh", [record])
    return {"args": ["--outputs", str(out)], "env": {"OFFLOAD_SSH_KEY": str(worker.key_path)}}


def test_summary_lines_and_their_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    display = TransferDisplay(live=False)
    big = display(Direction.SENT, 3_600_000)
    big.advance(3_600_000)
    big.done()
    small = display(Direction.RECEIVED, None)
    small.advance(900_000)
    small.done()
    out, err = capsys.readouterr()
    assert out == "" and SUMMARY.match(err.strip()) and err.startswith("offload: sent 3.6 MB in ")
    assert err.count("\n") == 1, "a transfer under 1 MB says nothing"
    assert [size_text(n) for n in (512, 912_000, 3_600_000, 130_200_000, 2_500_000_000)] == [
        "512 bytes", "912 kB", "3.6 MB", "130.2 MB", "2.5 GB"]
    quiet = TransferDisplay(live=False, summaries=False)(Direction.SENT, 5_000_000)
    quiet.advance(5_000_000)
    quiet.done()
    assert capsys.readouterr() == ("", "")


BAR = """
import time
from offload.cli.ui import TransferDisplay
from offload.runtime.meter import Direction
transfer = TransferDisplay()(Direction.RECEIVED, None)
for _ in range(14):
    transfer.advance(250_000)
    time.sleep(0.1)
transfer.done()
"""


def test_without_a_spinner_a_terminal_gets_a_bar_that_goes_away() -> None:
    """What `pull` and `get` show: no spinner runs there, so the transfer draws a bar of its own, once it has
    lasted a second, and leaves only the summary line."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", BAR], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=follower, env=dict(os.environ, TERM="xterm", COLUMNS="100"))
    os.close(follower)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 30.0)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", "replace"))
    assert proc.returncode == 0 and out == b"", text
    assert re.search(r"offload: receiving \S+ [\d.]+/\? MB [\d.]+ MB/s", text), text  # bytes so far, and the rate
    assert re.search(r"offload: received 3\.5 MB in \d+\.\d s", text), text


def test_a_piped_run_prints_one_summary_line_and_no_progress(sshd_worker: SshdWorker, big_repo: Path,
                                                             tmp_path: Path) -> None:
    w = slow_worker(sshd_worker, tmp_path)
    p = offload("run", *w["args"], "--json", "--", "true", cwd=big_repo, env=w["env"])
    assert p.returncode == 0, p.stderr.decode()
    assert set(json.loads(p.stdout)) == {"id", "worker"}, "--json prints the job, as before"
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and SUMMARY.match(lines[0]) and lines[0].startswith("offload: sent "), lines
    seconds = float(lines[0].rsplit(" in ", 1)[1].split()[0])
    assert seconds >= 1.0, "held to 1 MB/s, two megabytes take more than a second"
    job = json.loads(p.stdout)["id"]
    # The job makes a result as big; pulling it home is a transfer of its own.
    made = offload("run", *w["args"], "--job", "grow", "--wait", "--",
                   "head -c 1500000 /dev/urandom | base64 > grown.txt", cwd=big_repo, env=w["env"])
    assert made.returncode == 0, made.stderr.decode()
    pulled = offload("pull", *w["args"], "grow", cwd=big_repo, env=w["env"])
    assert pulled.returncode == 0, pulled.stderr.decode()
    summary = [ln for ln in pulled.stderr.decode().splitlines() if ln.startswith("offload: received ")]
    assert len(summary) == 1 and SUMMARY.match(summary[0]), pulled.stderr.decode()
    assert "received" not in pulled.stdout.decode().split("\n", 1)[1], "stdout keeps its diffstat only"
    assert job


def test_a_terminal_shows_bytes_rate_and_time_left(sshd_worker: SshdWorker, big_repo: Path, tmp_path: Path) -> None:
    w = slow_worker(sshd_worker, tmp_path)
    env = dict(os.environ, **w["env"], TERM="xterm", COLUMNS="120")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "offload", "run", *w["args"], "--", "true"], cwd=big_repo,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:
                    break  # the command has exited and closed the terminal
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", "replace"))
    assert proc.returncode == 0, text
    assert re.search(r"sending [\d.]+ [kM]B of [\d.]+ MB, [\d.]+ [kM]B/s, \d+ s left", text), text
    assert re.search(r"offload: sent \d+\.\d MB in \d+\.\d s", text), text
    assert re.fullmatch(rb"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}\n", out), "stdout is the job id alone"
    git(big_repo, "status")  # the repository is as it was
