"""One SSH connection's steps against a real sshd: all of a step's output arrives even when sshd sends the exit
status first, a process the step left behind holding its output open does not hang it, and a step's timeout
counts from its last progress."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from offload.errors import RemoteCommandError
from offload.runtime.transport import SshTransport
from tests.workers import SshdWorker, proxy_relay, ssh_transport





def test_output_written_after_the_shell_exits_still_arrives(transport: SshTransport) -> None:
    """The shell exits at once, so sshd sends its exit status first; a process it started writes the last line
    0.7 s later, and closes the output after it. Both halves of a step on its own channel must wait for that line;
    the dispatcher answers with what the step wrote by the time its shell exited."""
    late = ["sh", "-c", "(sleep 0.7; echo late) & echo early; exit 3"]
    r = transport.run(late, dispatch=False)
    assert (r.exit_code, r.stdout) == (3, b"early\nlate\n")
    r = transport.run(late, dispatch=True)
    assert (r.exit_code, r.stdout) == (3, b"early\n")
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


def test_a_transfer_that_keeps_moving_outlasts_its_timeout_and_a_stuck_step_does_not(sshd_worker: SshdWorker,
                                                                                     tmp_path: Path) -> None:
    """3 MB up a 1 MB/s link take 3 s, three times the step's timeout, and arrive; a step that does nothing is
    stopped after its timeout."""
    slow = ssh_transport(sshd_worker, tmp_path, proxy_command=proxy_relay(tmp_path, upload_rate=1_000_000))
    try:
        r = slow.run(["wc", "-c"], stdin=b"x" * 3_000_000, timeout=1)
        assert (r.exit_code, r.stdout.strip()) == (0, b"3000000")
        start = time.monotonic()
        with pytest.raises(RemoteCommandError, match="made no progress for 1s"):
            slow.run(["sleep", "30"], timeout=1)
        assert time.monotonic() - start < 20
        assert slow.run(["echo", "next"]).stdout == b"next\n"
    finally:
        slow.close()
