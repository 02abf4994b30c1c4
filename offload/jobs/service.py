"""Jobs on one worker: start (sync + launch), list, follow, attach and clean, over the provider's transport."""

from __future__ import annotations

import secrets
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from offload.errors import JobNotFound, UsageError, WorkerUnreachable
from offload.jobs.layout import JobPaths, State, validate_id
from offload.jobs.playbook import Playbook
from offload.providers.base import WorkerProvider
from offload.runtime.transport import Sink, check

RECONNECT_TIMEOUT = 300.0

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
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def command_text(command: Sequence[str]) -> str:
    """One argument is shell text as typed (`'make a && make b'`); several are argv, quoted to stay words."""
    if not command:
        raise UsageError("nothing to run: give a command after `--` or --playbook NAME")
    return command[0] if len(command) == 1 else shlex.join(command)


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
        deadline: float | None = None

        def counted(chunk: bytes) -> None:
            nonlocal position
            position += len(chunk)
            sink(chunk)

        while True:
            try:
                argv = ["sh", "-c", follow_script(), "sh", *follow_args(paths, task, position)]
                code = self.provider.stream(argv, counted)
                if code == 3:
                    raise JobNotFound(f"no task {task} in job {job_id} on worker {self.provider.name}",
                                      hint="see `offload status`")
                return position
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

    def wait(self, job_id: str, sink: Sink, *, on_reconnect: Callable[[str], None] = lambda msg: None,
             task_sink: Callable[[str, bytes], None] | None = None) -> int:
        """Stream the job's output to the end and return its exit code.

        A single-task job streams its log raw; a playbook streams every task's log, each line prefixed
        with the task name, as tasks produce it.
        """
        job = self.job(job_id)
        if [t.name for t in job.tasks] == ["main"]:
            self.follow(job_id, "main", sink, on_reconnect=on_reconnect)
            job = self._final(job_id, on_reconnect)
        else:
            job = self._wait_playbook(job_id, sink, on_reconnect)
        return exit_code_of(job)

    def _final(self, job_id: str, on_reconnect: Callable[[str], None]):
        deadline = time.monotonic() + RECONNECT_TIMEOUT
        while True:
            try:
                job = self.job(job_id)
            except WorkerUnreachable as e:
                on_reconnect(f"{e.message}; reconnecting")
                self._reconnect(deadline)
                continue
            if job.state not in (State.RUNNING, State.PENDING):
                return job
            time.sleep(0.2)

    def _wait_playbook(self, job_id: str, sink: Sink, on_reconnect: Callable[[str], None]):
        offsets: dict[str, int] = {}
        partial: dict[str, bytes] = {}
        deadline: float | None = None
        while True:
            try:
                job = self.job(job_id)
                for t in job.tasks:
                    if t.state is State.PENDING or t.state is State.SKIPPED:
                        continue
                    data = self.read_log(job_id, t.name, offsets.get(t.name, 0))
                    offsets[t.name] = offsets.get(t.name, 0) + len(data)
                    buf = partial.get(t.name, b"") + data
                    *lines, rest = buf.split(b"\n")
                    if t.state.finished and rest:
                        lines, rest = lines + [rest], b""
                    partial[t.name] = rest
                    for line in lines:
                        sink(f"[{t.name}] ".encode() + line + b"\n")
                deadline = None
            except WorkerUnreachable as e:
                deadline = deadline or time.monotonic() + RECONNECT_TIMEOUT
                if time.monotonic() > deadline:
                    raise
                on_reconnect(f"{e.message}; reconnecting")
                self._reconnect(deadline)
                continue
            if job.state not in (State.RUNNING, State.PENDING):
                return job
            time.sleep(0.3)

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
