"""The results the MCP tools return, as typed dicts: the SDK turns them into each tool's `outputSchema` and checks
every result against it. They are the shapes the commands' `--json` prints (see docs/mcp.md)."""

from __future__ import annotations

from typing import Literal

from typing_extensions import NotRequired, TypedDict

StateName = Literal["pending", "running", "success", "failed", "skipped"]


class TaskResult(TypedDict):
    name: str
    state: StateName
    exit_code: int | None


class JobResult(TypedDict):
    """One job, as `status` lists it."""

    id: str
    state: StateName
    started: str | None
    finished: str | None
    command: str | None
    playbook: str | None
    exit_code: int | None
    worker_alive: bool
    meta: dict[str, str]
    tasks: list[TaskResult]


class CheckResult(JobResult):
    """One job and the worker it is on."""

    worker: str
    note: str | None


class WorkspaceResult(TypedDict):
    free_bytes: int | None
    size_bytes: int | None


class WorkerResult(TypedDict):
    name: str
    provider: str
    state: str
    machine_type: str | None
    hourly_cost_usd: float | None
    idle_stop_in_minutes: float | None
    error: str | None
    workspace: WorkspaceResult
    jobs: list[JobResult]


class StatusResult(TypedDict):
    workers: list[WorkerResult]


class GetResult(TypedDict):
    id: str
    to: str
    files: list[str]
    replaced: list[str]


class ArtifactsResult(TypedDict):
    """A playbook's `artifacts:` brought home when its job ended within the wait: where, and which entries; or
    the one line saying why they could not be copied."""

    to: NotRequired[str]
    files: NotRequired[list[str]]
    error: NotRequired[str]


class RunResult(TypedDict):
    id: str
    worker: str
    state: NotRequired[StateName]
    exit_code: NotRequired[int | None]
    waited: NotRequired[float]
    note: NotRequired[str]
    artifacts: NotRequired[ArtifactsResult]


class LogsResult(TypedDict):
    data: str
    next_offset: int
    state: StateName
    task: str
    more: bool


class CleanedResult(TypedDict):
    worker: str
    id: str


class CleanErrorResult(TypedDict):
    worker: str
    error: str


class SurvivorResult(TypedDict):
    worker: str
    id: str
    pid: int
    command: str


class CleanResult(TypedDict):
    cleaned: list[CleanedResult]
    errors: list[CleanErrorResult]
    survivors: list[SurvivorResult]


class PullResult(TypedDict):
    id: str
    worker: str
    ref: str
    result: str
    snapshot: str
    pack_bytes: int
    stat: str


class DiffResult(TypedDict):
    id: str
    diff: str


class ApplyResult(TypedDict):
    id: str
    files: list[str]
    skipped: list[str]
