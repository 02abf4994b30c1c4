"""The framed multi-log read that `run --wait` uses to stream a playbook: real sh, real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from offload.jobs.state import parse_log_frames, read_logs_argv
from offload.worker.layout import JobPaths


def _tasks(tmp_path: Path, *names: str) -> JobPaths:
    paths = JobPaths(str(tmp_path), "j1")
    for name in names:
        Path(paths.task_dir(name)).mkdir(parents=True)
    return paths


def test_read_logs_returns_exactly_the_new_bytes_of_each_task(tmp_path: Path) -> None:
    paths = _tasks(tmp_path, "a", "b", "c")
    Path(paths.task_log("a")).write_bytes(b"first line\nsecond \xff binary\nno newline")
    Path(paths.task_log("b")).write_bytes(b"")
    out = subprocess.run(read_logs_argv(paths, {"a": 6, "b": 0, "c": 0}), capture_output=True, check=True).stdout
    assert parse_log_frames(out) == {"a": b"line\nsecond \xff binary\nno newline", "b": b"", "c": b""}


def test_offsets_past_the_end_give_nothing(tmp_path: Path) -> None:
    paths = _tasks(tmp_path, "t")
    Path(paths.task_log("t")).write_bytes(b"abc")
    out = subprocess.run(read_logs_argv(paths, {"t": 3}), capture_output=True, check=True).stdout
    assert parse_log_frames(out) == {"t": b""}


def test_a_hostile_task_name_reads_nothing(tmp_path: Path) -> None:
    paths = _tasks(tmp_path, "t")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "log").write_bytes(b"not yours")
    argv = read_logs_argv(paths, {"t": 0})
    result = subprocess.run(argv[:-2] + ["../../../secret", "0"], capture_output=True)
    assert result.returncode == 2 and b"not yours" not in result.stdout
