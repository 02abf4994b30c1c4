"""What a newcomer meets when something is wrong, against a real sshd: a refused key, a changed host key and an
unreachable worker are three one-line errors with three exit codes, the same whether the connection agent dials or
the command does; key files that cannot be keys are usage errors; `run --wait` keeps the job's exit codes apart
from offload's own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import offload, stderr_line
from tests.workers import SshdWorker, make_repo, sshd_record, write_outputs

HINT = "(pass --identity or set OFFLOAD_SSH_KEY (a private key))"
# Through the connection agent (the default), and with none: the command dials itself.
DIALS = pytest.mark.parametrize("persist", ["600", "0"], ids=["agent", "direct"])


@pytest.fixture
def setup(sshd_worker: SshdWorker, tmp_path: Path) -> dict[str, Any]:
    out = write_outputs(tmp_path / "outputs.json", "ssh", [sshd_record(sshd_worker)])
    return {"ssh": sshd_worker, "out": out, "repo": make_repo(tmp_path / "repo"), "name": f"ssh-{sshd_worker.port}"}


def cmd(s: dict[str, Any], *args: str, key: Path, persist: str) -> subprocess.CompletedProcess[bytes]:
    return offload(args[0], "--outputs", str(s["out"]), *args[1:], cwd=s["repo"],
                   env={"OFFLOAD_SSH_KEY": str(key), "OFFLOAD_PERSIST": persist})


def status(s: dict[str, Any], key: Path, persist: str) -> tuple[int, dict[str, Any], str]:
    p = cmd(s, "status", "--json", key=key, persist=persist)
    (worker,) = json.loads(p.stdout)["workers"]
    return p.returncode, worker, p.stderr.decode()


@DIALS
def test_a_refused_key_is_an_auth_error_with_its_hint(setup: dict[str, Any], tmp_path: Path, persist: str) -> None:
    ssh: SshdWorker = setup["ssh"]
    other = tmp_path / "not-authorized"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    line = (f"offload: worker {setup['name']} at {ssh.user}@{ssh.host}:{ssh.port} refused the SSH login with key "
            f"{other} {HINT}")
    p = cmd(setup, "run", "--", "true", key=other, persist=persist)
    assert (p.returncode, stderr_line(p)) == (8, line)
    p = cmd(setup, "run", "--wait", "--", "true", key=other, persist=persist)
    assert (p.returncode, stderr_line(p)) == (208, line), "under --wait, offload's own failures exit 200 + code"
    code, worker, _ = status(setup, other, persist)
    assert (code, worker["state"], f"offload: {worker['error']}") == (1, "auth failed", line)
    agent = json.loads(offload("agent", "status", "--json", cwd=setup["repo"]).stdout)
    assert agent["running"] is (persist != "0"), "the agent's error came across its socket as the same error"
    table = cmd(setup, "status", key=other, persist=persist)
    assert table.returncode == 1
    lines = table.stdout.decode().splitlines()
    assert lines[0] == "worker\tprovider\tstate\tmachine\tcost\tidle stop in\trunning\tworkspace disk"
    assert lines[1].split("\t")[:3] == [setup["name"], "ssh", "auth failed"]
    assert table.stderr.decode() == f"offload: {setup['name']}: {line.removeprefix('offload: ')}\n"


@DIALS
def test_no_key_at_all_is_an_auth_error_too(setup: dict[str, Any], persist: str) -> None:
    p = offload("status", "--outputs", str(setup["out"]), "--json", cwd=setup["repo"],
                env={"OFFLOAD_PERSIST": persist})
    (worker,) = json.loads(p.stdout)["workers"]
    assert (p.returncode, worker["state"]) == (1, "auth failed")
    assert "no SSH key to log in to worker" in worker["error"] and worker["error"].endswith(HINT)
    assert "is it running" not in p.stderr.decode()


@DIALS
def test_a_changed_host_key_names_the_outputs_and_status_says_so(setup: dict[str, Any], persist: str) -> None:
    ssh: SshdWorker = setup["ssh"]
    assert cmd(setup, "status", key=ssh.key_path, persist=persist).returncode == 0
    ssh.rotate_host_key()
    p = cmd(setup, "run", "--", "true", key=ssh.key_path, persist=persist)
    assert p.returncode == 4
    assert "does not match the host_keys pinned for it in the stack outputs); refusing to connect" in stderr_line(p)
    assert "known_hosts" not in stderr_line(p)
    code, worker, _ = status(setup, ssh.key_path, persist)
    assert (code, worker["state"]) == (1, "host key changed")


@DIALS
def test_an_unreachable_worker_is_neither(setup: dict[str, Any], persist: str) -> None:
    ssh: SshdWorker = setup["ssh"]
    ssh.stop()
    p = cmd(setup, "run", "--", "true", key=ssh.key_path, persist=persist)
    assert p.returncode == 3 and "cannot reach worker" in stderr_line(p)
    assert cmd(setup, "run", "--wait", "--", "true", key=ssh.key_path, persist=persist).returncode == 203
    code, worker, _ = status(setup, ssh.key_path, persist)
    assert (code, worker["state"]) == (1, "unreachable")


@DIALS
def test_key_files_that_cannot_be_private_keys_are_usage_errors(setup: dict[str, Any], tmp_path: Path,
                                                                persist: str) -> None:
    ssh: SshdWorker = setup["ssh"]
    before = ssh.accepted_count()
    missing = tmp_path / "no-such-key"
    p = cmd(setup, "status", key=missing, persist=persist)
    assert (p.returncode, stderr_line(p)) == (1, f"offload: {setup['name']}: SSH key {missing} does not exist {HINT}")
    p = cmd(setup, "run", "--", "true", key=missing, persist=persist)
    assert (p.returncode, stderr_line(p)) == (2, f"offload: SSH key {missing} does not exist {HINT}")
    public = Path(f"{ssh.key_path}.pub")
    p = cmd(setup, "run", "--", "true", key=public, persist=persist)
    assert (p.returncode, stderr_line(p)) == (2, f"offload: SSH key {public} is a public key, not a private key "
                                                 f"(offload needs the private key: {ssh.key_path})")
    assert ssh.accepted_count() == before, "nothing was dialled"


def test_wait_keeps_the_jobs_exit_codes_and_names_the_job_on_stderr(setup: dict[str, Any]) -> None:
    ssh: SshdWorker = setup["ssh"]
    for code in (2, 3, 4, 5, 6):
        p = cmd(setup, "run", "--job", f"exit{code}", "--wait", "--", f"echo out; exit {code}", key=ssh.key_path,
                persist="600")
        assert (p.returncode, p.stdout) == (code, b"out\n")
        assert p.stderr.decode() == f"offload: job exit{code} runs on {setup['name']}\n"


def test_a_command_line_error_under_wait_is_offloads_own(setup: dict[str, Any]) -> None:
    p = offload("run", "--wait", "--no-such-option", "--", "true", cwd=setup["repo"])
    assert p.returncode == 202 and "No such option" in stderr_line(p)
    p = offload("run", "--no-such-option", "--", "true", cwd=setup["repo"])
    assert p.returncode == 2
    # Without `--`, words after the command's first one are the command's: this --wait is not offload's.
    p = offload("run", "--worker", "nowhere", "echo", "--wait", cwd=setup["repo"])
    assert p.returncode == 2 and "no worker named 'nowhere'" in stderr_line(p)
