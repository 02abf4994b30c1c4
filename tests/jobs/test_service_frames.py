"""The framed multi-log read that `run --wait` uses to stream a playbook: real sh, real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from offload.jobs.service import READ_LOGS, parse_log_frames


def test_read_logs_returns_exactly_the_new_bytes_of_each_task(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    (a / "log").write_bytes(b"first line\nsecond \xff binary\nno newline")
    (b / "log").write_bytes(b"")
    out = subprocess.run(["sh", "-c", READ_LOGS, "sh", "a", str(a), "6", "b", str(b), "0", "c", str(c), "0"],
                         capture_output=True, check=True).stdout
    assert parse_log_frames(out) == {"a": b"line\nsecond \xff binary\nno newline", "b": b"", "c": b""}


def test_offsets_past_the_end_give_nothing(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"abc")
    out = subprocess.run(["sh", "-c", READ_LOGS, "sh", "t", str(tmp_path), "3"], capture_output=True,
                         check=True).stdout
    assert parse_log_frames(out) == {"t": b""}
