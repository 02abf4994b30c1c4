"""One SSH connection's steps against a real sshd: all of a step's output arrives even when sshd sends the exit
status first, and a process the step left behind holding its output open does not hang it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.outputs import WorkerRecord
from offload.runtime.connection import ConnectOptions, open_connection
from offload.runtime.hostkeys import KnownHosts
from offload.runtime.transport import SshTransport
from tests.workers import SshdWorker, sshd_record


@pytest.fixture
def transport(sshd_worker: SshdWorker, tmp_path: Path) -> Iterator[SshTransport]:
    record = WorkerRecord.from_dict(sshd_record(sshd_worker))
    options = ConnectOptions(identity=sshd_worker.key_path, known_hosts=KnownHosts(tmp_path / "known_hosts"))
    t = SshTransport("w", open_connection(record, options))
    try:
        yield t
    finally:
        t.close()


def test_output_written_after_the_shell_exits_still_arrives(transport: SshTransport) -> None:
    """The shell exits at once, so sshd sends its exit status first; a process it started writes the last line
    0.7 s later, and closes the output after it. Both halves of the step must wait for that line."""
    late = ["sh", "-c", "(sleep 0.7; echo late) & echo early; exit 3"]
    r = transport.run(late)
    assert (r.exit_code, r.stdout) == (3, b"early\nlate\n")
    got: list[bytes] = []
    assert transport.stream(late, got.append) == 3
    assert b"".join(got) == b"early\nlate\n"


def test_a_large_output_arrives_whole_every_time(transport: SshTransport) -> None:
    """The last 64 KiB of a large output are still in the pipe when sshd collects the command, so they follow its
    exit status."""
    for _ in range(20):
        r = transport.run(["head", "-c", "300000", "/dev/zero"])
        assert (r.exit_code, len(r.stdout)) == (0, 300000)


def test_a_process_left_holding_the_output_does_not_hang_the_step(transport: SshTransport) -> None:
    start = time.monotonic()
    r = transport.run(["sh", "-c", "sleep 120 & echo done"])
    assert (r.exit_code, r.stdout) == (0, b"done\n")
    assert time.monotonic() - start < 60, "given up on once the exit status is in and the output stays quiet"
    assert transport.run(["echo", "next"]).stdout == b"next\n", "and the connection serves the next step"
