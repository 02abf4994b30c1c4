"""Reading jobs on a worker: the argv of the worker scripts that report, stream and clean them, and the
parsers of what those print.

The scripts (offload/worker/sh) run where the job runs, inside the worker's container when there is one,
because they check processes by pid. The states themselves are derived on the worker by the worker library's one
liveness rule (`sh/lib.sh`); this module only reads them. Ids given to a script are validated first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from offload.worker.layout import JobPaths, validate_id
from offload.worker.scripts import worker_script


class State(str, Enum):
    """The state of a job or a task."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self in (State.SUCCESS, State.FAILED, State.SKIPPED)


@dataclass
class TaskStatus:
    name: str
    state: State
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state.value, "exit_code": self.exit_code}


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class JobStatus:
    id: str
    state: State
    tasks: list[TaskStatus] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    alive: bool = False  # the job's tmux server is up (so `offload attach` can show it)
    runner_alive: bool = False
    finished_at: float | None = None  # when the runner recorded the job's end (epoch seconds)

    @property
    def settled(self) -> bool:
        """Finished, and its runner has recorded the end (the result kept, the worktree given back) or is gone."""
        return self.state.finished and (self.finished_at is not None or not self.runner_alive)

    @property
    def exit_code(self) -> int | None:
        """The job's exit code once finished: 0, else the first failed task's non-zero code (1 if it has none)."""
        if self.state is State.SUCCESS:
            return 0
        if self.state is not State.FAILED:
            return None
        for t in self.tasks:
            if t.state is State.FAILED:
                return t.exit_code if t.exit_code else 1
        return 1

    @property
    def started_at(self) -> float | None:
        """When the job was launched (epoch seconds), from its meta."""
        try:
            return float(self.meta.get("created", ""))
        except ValueError:
            return None

    @property
    def command(self) -> str | None:
        """The command as it was given, for a `run -- COMMAND` job; None for a playbook. A long command's meta
        keeps only its head: then the head, then `… (N bytes)`, N being the whole command's size."""
        raw = self.meta.get("command")
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        if not isinstance(value, str):
            return None
        whole = self.meta.get("command_bytes", "")
        return f"{value}… ({whole} bytes)" if whole.isdigit() else value

    @property
    def playbook(self) -> str | None:
        """The playbook's name, for a playbook job."""
        return None if self.command is not None else (self.meta.get("playbook") or None)

    def to_dict(self) -> dict[str, Any]:
        """The job as `status --json`, `check --json` and the MCP tools give it."""
        return {"id": self.id, "state": self.state.value, "started": _iso(self.started_at),
                "finished": _iso(self.finished_at), "command": self.command, "playbook": self.playbook,
                "exit_code": self.exit_code, "worker_alive": self.alive, "meta": dict(self.meta),
                "tasks": [t.to_dict() for t in self.tasks]}


def job_order(job: JobStatus) -> tuple[float, str]:
    """Oldest first: by launch time, then id (ids start with their launch time)."""
    started = job.started_at
    return (started if started is not None else float("inf"), job.id)


def status_argv(workspace: str, ids: Iterable[str] = ()) -> list[str]:
    """Status of the jobs under WORKSPACE (only IDS, when given; unknown ones are left out)."""
    ids = [validate_id(j) for j in ids]
    return ["sh", "-c", worker_script("status.sh"), "sh", workspace, *ids]


FULL_KB = 64  # a workspace with less free space than this is full: no job can record its state


@dataclass(frozen=True)
class Disk:
    """The workspace's file system as status.sh saw it (None: df could not tell)."""

    free_kb: int | None = None
    size_kb: int | None = None

    @property
    def full(self) -> bool:
        return self.free_kb is not None and self.free_kb < FULL_KB

    def to_dict(self) -> dict[str, Any]:
        return {"free_bytes": None if self.free_kb is None else self.free_kb * 1024,
                "size_bytes": None if self.size_kb is None else self.size_kb * 1024}


def parse_disk(text: str) -> Disk:
    """The `space` record of status.sh's output."""
    for line in text.splitlines():
        fields = line.split("\t")
        if fields[0] == "space" and len(fields) >= 3:
            return Disk(int(fields[1]) if fields[1].isdigit() else None,
                        int(fields[2]) if fields[2].isdigit() else None)
    return Disk()


def parse_status(text: str) -> list[JobStatus]:
    """Jobs from the output of status.sh, in the order printed."""
    jobs: dict[str, JobStatus] = {}
    meta: dict[str, dict[str, str]] = {}
    tasks: dict[str, list[TaskStatus]] = {}
    for line in text.splitlines():
        fields = line.split("\t")
        kind = fields[0]
        if kind == "job" and len(fields) >= 6:
            job, state, tmux, runner, finished = fields[1:6]
            jobs[job] = JobStatus(id=job, state=_state(state), alive=tmux == "1", runner_alive=runner == "1",
                                  finished_at=float(finished) if finished.isdigit() else None)
        elif kind == "meta" and len(fields) >= 4:
            key, value = line.split("\t", 3)[2:]
            meta.setdefault(fields[1], {})[key] = value
        elif kind == "task" and len(fields) >= 5:
            name, state, code = fields[2:5]
            tasks.setdefault(fields[1], []).append(
                TaskStatus(name, _state(state), int(code) if code.isdigit() else None))
    for job in jobs.values():
        job.meta = meta.get(job.id, {})
        job.tasks = tasks.get(job.id, [])
    return list(jobs.values())


def _state(token: str) -> State:
    try:
        return State(token)
    except ValueError:
        return State.PENDING


def log_argv(paths: JobPaths, task: str, offset: int = 0, *, follow: bool = False,
             limit: int | None = None) -> list[str]:
    """Print a task's log from byte OFFSET; with FOLLOW, keep following it until the task has finished; with
    LIMIT (and no FOLLOW), print at most LIMIT bytes.

    Every byte from OFFSET on is printed exactly once. Exit 2: a bad offset or name; 3: no such task.
    """
    validate_id(task, "task name")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    if limit is not None and (follow or limit < 1):
        raise ValueError("a limit is at least 1 byte, and only for a read that does not follow")
    mode = "follow" if follow else "once"
    return ["sh", "-c", worker_script("log.sh"), "sh", paths.workspace, paths.job, task, str(offset), mode,
            *([str(limit)] if limit is not None else [])]


def read_logs_argv(paths: JobPaths, offsets: dict[str, int]) -> list[str]:
    """The new bytes of several task logs in one round trip (parse with parse_log_frames)."""
    args = [x for name, offset in offsets.items() for x in (validate_id(name, "task name"), str(offset))]
    return ["sh", "-c", worker_script("read-logs.sh"), "sh", paths.workspace, paths.job, *args]


def parse_log_frames(data: bytes) -> dict[str, bytes]:
    """The output of read-logs.sh as {task: new bytes}."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        name, count = data[pos:end].decode().split(" ")
        start = end + 1
        out[name] = data[start:start + int(count)]
        pos = start + int(count)
    return out


def attach_probe_argv(paths: JobPaths, task: str | None) -> list[str]:
    """Exit 9 without a live session; else print TASK's tmux window id (waiting a little for a new task)."""
    return ["sh", "-c", worker_script("attach-probe.sh"), "sh", paths.workspace, paths.job,
            validate_id(task, "task name") if task else ""]


def clean_argv(workspace: str, jobs: str | Iterable[str], *, repo: str | None = None) -> list[str]:
    """Remove jobs: their processes (TERM, then KILL), tmux server, worktree, refs and the job dir. REPO is the
    bare repository to use when a job's meta has none (a launch that never happened). Parse with parse_clean."""
    ids = [jobs] if isinstance(jobs, str) else list(jobs)
    for job in ids:
        validate_id(job, "job id")
    return ["sh", "-c", worker_script("clean.sh"), "sh", workspace, repo or "", *ids]


@dataclass(frozen=True)
class Survivor:
    """A process of a cleaned job that outlived SIGKILL (another user's, or stuck in the kernel)."""

    job: str
    pid: int
    command: str


def parse_clean(text: str) -> tuple[dict[str, bool], list[Survivor]]:
    """Job id -> whether anything of it was found and removed; and the processes that survived."""
    found: dict[str, bool] = {}
    survivors: list[Survivor] = []
    for line in text.splitlines():
        kind, _, rest = line.partition("\t")
        if kind in ("cleaned", "missing") and rest:
            found[rest] = kind == "cleaned"
        elif kind == "survivor":
            job, pid, command = (rest.split("\t", 2) + ["", ""])[:3]
            if pid.isdigit():
                survivors.append(Survivor(job, int(pid), command))
    return found, survivors


def result_argv(workspace: str, job: str, haves: Iterable[str] = ()) -> list[str]:
    """The result of JOB: a `result<TAB>RESULT<TAB>SNAPSHOT` line, then a thin pack beyond HAVES (see result.sh)."""
    return ["sh", "-c", worker_script("result.sh"), "sh", workspace, validate_id(job), *haves]


def get_argv(workspace: str, job: str, paths: Iterable[str], *, missing_ok: bool = False) -> list[str]:
    """A tar stream of PATHS (files, directories or globs) from JOB's worktree (see get.sh)."""
    return ["sh", "-c", worker_script("get.sh"), "sh", workspace, validate_id(job),
            *(["--missing-ok"] if missing_ok else []), *paths]
