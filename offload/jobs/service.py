"""Jobs on one worker: start (sync + launch), list, follow, attach and clean, over the provider's transport."""

from __future__ import annotations

import os
import secrets
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from offload.errors import JobNotFound, UsageError, WorkerUnreachable
from offload.jobs.layout import JobPaths, State, validate_id
from offload.jobs.playbook import Playbook
from offload.providers.base import WorkerProvider
from offload.runtime.transport import Sink, check

RECONNECT_TIMEOUT = 300.0
T = TypeVar("T")

# `sh -c READ_LOGS sh NAME TASK_DIR OFFSET [NAME TASK_DIR OFFSET ...]`: for each task, a header line
# `NAME COUNT` and then exactly COUNT new bytes of its log (the log only grows, so head -c gets them all).
READ_LOGS = r"""
while [ "$#" -ge 3 ]; do
  size=$(wc -c < "$2/log" 2>/dev/null || echo 0)
  count=$((size - $3))
  [ "$count" -gt 0 ] || count=0
  printf '%s %s\n' "$1" "$count"
  [ "$count" -eq 0 ] || tail -c +"$(($3 + 1))" "$2/log" | head -c "$count"
  shift 3
done
"""

# `sh -c ATTACH_PROBE sh SOCKET JOB [TASK_DIR]`: exit 9 without a live session; else the task's window id,
# waiting a few seconds for a task that is just starting.
ATTACH_PROBE = r"""
tmux -L "$1" has-session -t "=$2" 2>/dev/null || exit 9
[ -n "$3" ] || exit 0
i=0
while [ ! -s "$3/window" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
cat "$3/window"
"""


def new_job_id() -> str:
    """Sortable by start time, unique enough for one developer's workers."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def command_text(command: Sequence[str]) -> str:
    """One argument is shell text as typed (`'make a && make b'`); several are argv, quoted to stay words."""
    if not command:
        raise UsageError("nothing to run: give a command after `--` or --playbook NAME")
    return command[0] if len(command) == 1 else shlex.join(command)


def in_subdirectory(cwd: Path, text: str) -> str:
    """A command typed in a subdirectory of the repository runs in the same subdirectory of the worktree."""
    root = repo_root_of(cwd)
    rel = Path(os.path.relpath(cwd.resolve(), root.resolve()))
    if rel == Path(".") or rel.parts[0] == "..":
        return text
    return f"cd -- {shlex.quote(rel.as_posix())} || exit 1\n{text}"


@dataclass
class StartedJob:
    """A job that is running on a worker."""

    id: str
    worker: str
    paths: JobPaths
    pack_bytes: int
    playbook: Playbook


class JobService:
    """Every job operation for one worker; each is one or two round trips on the shared connection."""

    def __init__(self, provider: WorkerProvider) -> None:
        self.provider = provider

    # --- start -----------------------------------------------------------------------------------

    def start(self, snapshot, playbook: Playbook, *, job_id: str, env: dict[str, str],
              meta: dict[str, str] | None = None) -> StartedJob:
        from offload.jobs.launch import launch_script

        validate_id(job_id)
        paths = self.provider.paths(job_id)
        stats = self.provider.sync(snapshot, paths, checkout=False)
        info = {"repo": paths.repo(snapshot.repo_id), "commit": snapshot.commit,
                "worktree": paths.worktree, "created": str(int(time.time())),
                "playbook": playbook.name, "branch": snapshot.branch or ""}
        info.update(meta or {})
        script = launch_script(paths, playbook, env=env, meta=info)
        self.provider.launch(script.encode(), job_id)
        return StartedJob(job_id, self.provider.name, paths, stats.pack_bytes, playbook)

    # --- state -----------------------------------------------------------------------------------

    def jobs(self, ids: Sequence[str] = ()):
        """JobStatus for every job on the worker (or only IDS)."""
        from offload.jobs.state import parse_status, status_script

        for job in ids:
            validate_id(job)
        argv = ["sh", "-c", status_script(self.provider.workspace), "sh", *ids]
        result = check(self.provider.exec(argv, timeout=60), self.provider.name, "reading job state")
        return parse_status(result.text())

    def job(self, job_id: str):
        found = [j for j in self.jobs([job_id]) if j.id == job_id]
        if not found:
            raise JobNotFound(f"no job {job_id} on worker {self.provider.name}", hint="see `offload status`")
        return found[0]

    # --- output ----------------------------------------------------------------------------------

    def read_log(self, job_id: str, task: str, offset: int = 0) -> bytes:
        from offload.jobs.state import follow_args, log_script

        paths = self.provider.paths(job_id)
        argv = ["sh", "-c", log_script(), "sh", *follow_args(paths, task, offset, follow=False)]
        result = self.provider.exec(argv, timeout=120)
        if not result.ok:
            raise JobNotFound(f"no log for task {task} of job {job_id} on worker {self.provider.name}",
                              hint="see `offload status`")
        return result.stdout

    def follow(self, job_id: str, task: str, sink: Sink, *, offset: int = 0,
               on_reconnect: Callable[[str], None] = lambda msg: None) -> int:
        """Stream a task's log until the task has finished; survive dropped connections by resuming at the
        last byte received. Returns the number of bytes streamed in total (offset included)."""
        from offload.jobs.state import follow_args, follow_script

        paths = self.provider.paths(job_id)
        position = offset

        def counted(chunk: bytes) -> None:
            nonlocal position
            position += len(chunk)
            sink(chunk)

        def stream_rest() -> int:
            argv = ["sh", "-c", follow_script(), "sh", *follow_args(paths, task, position)]
            if self.provider.stream(argv, counted) == 3:
                raise JobNotFound(f"no task {task} in job {job_id} on worker {self.provider.name}",
                                  hint="see `offload status`")
            return position

        return self._resilient(stream_rest, on_reconnect)

    def _resilient(self, step: Callable[[], T], on_reconnect: Callable[[str], None]) -> T:
        """STEP, repeated over a fresh connection while the worker is unreachable, for RECONNECT_TIMEOUT."""
        deadline: float | None = None
        while True:
            try:
                return step()
            except WorkerUnreachable as e:
                deadline = deadline or time.monotonic() + RECONNECT_TIMEOUT
                if time.monotonic() > deadline:
                    raise
                on_reconnect(f"{e.message}; reconnecting")
                self._reconnect(deadline)

    def _reconnect(self, deadline: float) -> None:
        while True:
            self.provider.close()
            try:
                self.provider.ensure_ready()
                return
            except WorkerUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def wait(self, job_id: str, sink: Sink, *, on_reconnect: Callable[[str], None] = lambda msg: None) -> int:
        """Stream the job's output to the end and return its exit code.

        A single-task job streams its log raw; a playbook streams every task's log, each line prefixed
        with the task name, as tasks produce it.
        """
        job = self._resilient(lambda: self.job(job_id), on_reconnect)
        if [t.name for t in job.tasks] == ["main"]:
            self.follow(job_id, "main", sink, on_reconnect=on_reconnect)
            while job.state in (State.RUNNING, State.PENDING):  # the log is complete; the state follows
                job = self._resilient(lambda: self.job(job_id), on_reconnect)
                if job.state in (State.RUNNING, State.PENDING):
                    time.sleep(0.1)
        else:
            job = self._wait_playbook(job_id, sink, on_reconnect)
        return exit_code_of(job)

    def _wait_playbook(self, job_id: str, sink: Sink, on_reconnect: Callable[[str], None]):
        offsets: dict[str, int] = {}
        partial: dict[str, bytes] = {}
        while True:
            job = self._resilient(lambda: self.job(job_id), on_reconnect)
            started = [t for t in job.tasks if t.state not in (State.PENDING, State.SKIPPED)]
            chunks = self._resilient(lambda: self._read_logs(job_id, started, offsets), on_reconnect)
            for t in started:
                data = chunks.get(t.name, b"")
                offsets[t.name] = offsets.get(t.name, 0) + len(data)
                *lines, rest = (partial.get(t.name, b"") + data).split(b"\n")
                if t.state.finished and rest:
                    lines, rest = lines + [rest], b""
                partial[t.name] = rest
                for line in lines:
                    sink(f"[{t.name}] ".encode() + line + b"\n")
            if job.state not in (State.RUNNING, State.PENDING):
                return job
            time.sleep(0.3)

    def _read_logs(self, job_id: str, tasks, offsets: dict[str, int]) -> dict[str, bytes]:
        """New log bytes of every task in TASKS past its offset, in one round trip."""
        if not tasks:
            return {}
        paths = self.provider.paths(job_id)
        args = [x for t in tasks for x in (t.name, paths.task_dir(t.name), str(offsets.get(t.name, 0)))]
        result = check(self.provider.exec(["sh", "-c", READ_LOGS, "sh", *args], timeout=120), self.provider.name,
                       f"reading the logs of job {job_id}")
        return parse_log_frames(result.stdout)

    # --- interactive and cleanup -----------------------------------------------------------------

    def attach(self, job_id: str, task: str | None = None) -> int:
        import re

        paths = self.provider.paths(validate_id(job_id))
        if task is None:
            # A single-task job opens on its task; a playbook on the runner's overview window.
            names = [t.name for t in self.job(job_id).tasks]
            task = names[0] if len(names) == 1 else None
        probe = self.provider.exec(["sh", "-c", ATTACH_PROBE, "sh", paths.tmux_socket, job_id,
                                    paths.task_dir(validate_id(task, "task name")) if task else ""], timeout=30)
        if probe.exit_code == 9:
            raise JobNotFound(f"job {job_id} has no live tmux session on worker {self.provider.name}",
                              hint=f"its output stays available: `offload logs {job_id}`")
        argv = ["tmux", "-L", paths.tmux_socket, "attach-session", "-t", f"={job_id}"]
        if task:
            window = probe.text().strip()
            if not probe.ok or not re.fullmatch(r"@[0-9]+", window):
                raise JobNotFound(f"task {task} of job {job_id} has not started", hint="see `offload status`")
            argv += [";", "select-window", "-t", window]
        return self.provider.attach(argv)

    def shell(self, job_id: str) -> int:
        paths = self.provider.paths(validate_id(job_id))
        script = 'cd "$1" || exit 1; exec "$(command -v bash || echo sh)" -l'
        return self.provider.attach(["sh", "-c", script, "sh", paths.worktree])

    def clean(self, job_id: str) -> None:
        from offload.jobs.state import clean_script, parse_clean

        script = clean_script(self.provider.workspace, validate_id(job_id)).encode()
        result = check(self.provider.exec(["sh", "-s"], stdin=script, timeout=120), self.provider.name,
                       f"cleaning job {job_id}")
        if not parse_clean(result.text()).get(job_id):
            raise JobNotFound(f"no job {job_id} on worker {self.provider.name}", hint="see `offload status`")


def exit_code_of(job) -> int:
    """The job's exit code: the single task's, or for a playbook the first failed task's (1 if none)."""
    if len(job.tasks) == 1 and job.tasks[0].exit_code is not None:
        return job.tasks[0].exit_code
    code = job.exit_code
    return 1 if code is None else code


def resolve_env(names: Sequence[str], environ: dict[str, str]) -> dict[str, str]:
    """--env NAME takes NAME's value from this environment; it never travels in an argv."""
    import re

    out: dict[str, str] = {}
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise UsageError(f"--env takes a variable name, got {name!r}",
                             hint="set the variable locally and pass only its name")
        if name not in environ:
            raise UsageError(f"--env {name}: {name} is not set in your environment")
        out[name] = environ[name]
    return out


def repo_root_of(cwd: Path) -> Path:
    from offload.runtime.sync import _git

    p = _git(["rev-parse", "--show-toplevel"], cwd=cwd, check=False)
    if p.returncode != 0:
        raise UsageError(f"{cwd} is not inside a git repository")
    return Path(p.stdout.decode().strip())


def parse_log_frames(data: bytes) -> dict[str, bytes]:
    """The output of READ_LOGS as {task: new bytes}."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        name, count = data[pos:end].decode().split(" ")
        start = end + 1
        out[name] = data[start:start + int(count)]
        pos = start + int(count)
    return out
