"""Fixtures for the worker-side job scripts: a workspace on tmpfs and a local worker that runs them with sh and tmux.

The workspace path holds quotes, spaces, `$(...)`, `;` and backquotes, so every test also checks the quoting.
Each test gets its own TMUX_TMPDIR; every tmux server a test starts is killed by its socket at teardown, and
the teardown checks that no server and no process of the workspace is left.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from offload.jobs.launch import LAUNCHED, launch_script
from offload.worker.layout import JobPaths
from offload.jobs.playbook import Playbook

HOSTILE_DIR = "ws \"it's\" $(touch pwned);`touch pwned2`"
WAIT = 10.0  # seconds: the longest any single wait in these tests may take
SH = shutil.which("sh") or "/bin/sh"


def wait_for(predicate: Callable[[], Any], *, timeout: float = WAIT, what: str = "a condition",
             interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def sh(script: str, *args: str, timeout: float = WAIT, env: dict[str, str] | None = None,
       ) -> subprocess.CompletedProcess[str]:
    """Run SCRIPT as the transport does: `sh -s ARGS...` with the script on stdin."""
    return subprocess.run([SH, "-s", *args], input=script, capture_output=True, text=True, timeout=timeout,
                          env=env)


def read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


def all_argv() -> list[str]:
    """The command line of every process, as one string each."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            out.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return out


def pid_running(pid: int) -> bool:
    """PID exists and is not a zombie (orphans are not always reaped where pid 1 is not an init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def tmux_alive(socket: str, session: str | None = None) -> bool:
    argv = ["tmux", "-f", "/dev/null", "-L", socket, "has-session"] + (["-t", f"={session}"] if session else [])
    return subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=WAIT).returncode == 0


def tmux(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", "-f", "/dev/null", "-L", socket, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=WAIT)


@dataclass
class LocalWorker:
    """A worker that is this machine: scripts run with `sh -s`, jobs in tmux, everything under `workspace`."""

    workspace: str
    sockets: list[str] = field(default_factory=list)

    def paths(self, job: str | None = None) -> JobPaths:
        """A job's paths; its worktree is a plain directory under the workspace (not a warm git worktree)."""
        job = job or f"j{secrets.token_hex(4)}"
        return JobPaths(self.workspace, job, f"{self.workspace}/plain/{job}")

    def launch(self, playbook: Playbook | str, *, job: str | None = None, env: dict[str, str] | None = None,
               meta: dict[str, str] | None = None, linger: int = 0, worktree: str | None = None,
               leased: bool = False) -> JobPaths:
        """Start the job in WORKTREE (default: a plain directory made for it); OFFLOAD_LINGER_SECONDS is LINGER.
        LEASED: the script is built without the worktree, and runs as `sh -s WORKTREE` (as launch.sh runs it)."""
        if isinstance(playbook, str):
            playbook = Playbook.single(playbook)
        paths = self.paths(job)
        if worktree:
            paths = JobPaths(paths.workspace, paths.job, worktree)
        os.makedirs(paths.worktree, exist_ok=True)
        self.sockets.append(paths.tmux_socket)
        script = launch_script(JobPaths(paths.workspace, paths.job) if leased else paths, playbook,
                               env={"OFFLOAD_LINGER_SECONDS": str(linger), **(env or {})},
                               meta=meta or {"created": "2024-01-01T00:00:00Z", "worktree": paths.worktree},
                               leased=leased)
        result = sh(script, paths.worktree) if leased else sh(script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{LAUNCHED} {paths.job} "), result.stdout
        return paths

    def file(self, paths: JobPaths, task: str, name: str) -> str | None:
        value = read(f"{paths.task_dir(task)}/{name}")
        return value.strip() if value is not None else None

    def job_state(self, paths: JobPaths) -> str | None:
        value = read(f"{paths.job_dir}/state")
        return value.strip() if value is not None else None

    def wait_job(self, paths: JobPaths, timeout: float = WAIT) -> str:
        return wait_for(lambda: self.job_state(paths), timeout=timeout, what=f"job {paths.job} to finish")

    def wait_task(self, paths: JobPaths, task: str, state: str, timeout: float = WAIT) -> None:
        wait_for(lambda: self.file(paths, task, "state") == state, timeout=timeout,
                 what=f"task {task} of {paths.job} to be {state}")

    def stop(self) -> None:
        for socket in self.sockets:
            tmux(socket, "kill-server")
        wait_for(lambda: not any(tmux_alive(s) for s in self.sockets), what="the tmux servers to exit")
        wait_for(lambda: not [a for a in all_argv() if self.workspace in a], what="the job processes to exit")


@pytest.fixture(autouse=True)
def tmux_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private, short TMUX_TMPDIR (socket paths are limited to ~100 bytes)."""
    path = tempfile.mkdtemp(prefix="oft-", dir="/dev/shm")
    monkeypatch.setenv("TMUX_TMPDIR", path)
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("TMUX_PANE", raising=False)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workspace(tmp_path: Path) -> str:
    ws = tmp_path / HOSTILE_DIR
    ws.mkdir()
    return str(ws)


@pytest.fixture
def worker(workspace: str, tmp_path: Path, tmux_tmpdir: str) -> Iterator[LocalWorker]:
    w = LocalWorker(workspace)
    try:
        yield w
    finally:
        w.stop()
        pwned = list(tmp_path.rglob("pwned*")) + list(Path.cwd().glob("pwned*")) + list(Path.home().rglob("pwned*"))
        assert not pwned, f"text that should have stayed data was run as shell: {pwned}"
