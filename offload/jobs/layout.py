"""Where a job lives on a worker: the one description of the workspace layout every module uses.

    WORKSPACE/repos/<repo>.git            bare repository that receives snapshots (shared objects)
    WORKSPACE/worktrees/<job>/            the job's fresh worktree (detached at its snapshot commit)
    WORKSPACE/jobs/<job>/                 job state, never inside the worktree
        meta                              key=value lines: repo, commit, worktree, created, playbook
        graph.sh                          the task-graph runner (POSIX sh)
        runner.pid                        pid of the runner (tmux window 0)
        tasks.list                        task names, one per line, in declaration order
        tasks/<task>/cmd                  the task's shell command
        tasks/<task>/needs                names of tasks it needs, one per line (may be empty)
        tasks/<task>/when                 success | failure | always
        tasks/<task>/log                  combined stdout and stderr
        tasks/<task>/state                running | success | failed | skipped (absent: pending)
        tasks/<task>/exit                 exit code, written once the task has finished
        tasks/<task>/pid                  pid of the task's window process, written when it starts
        tasks/<task>/window               tmux window id (`@N`) of the task, for attaching to it
        state                             the job's final state: success | failed (absent: not finished)

The tmux server for a job is `tmux -L offload-<job>`, its session is named `<job>`; every task runs in a
window named after the task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from offload.errors import UsageError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class State(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self in (State.SUCCESS, State.FAILED, State.SKIPPED)


def validate_id(value: str, what: str = "job id") -> str:
    """Job and task ids reach tmux and paths; only inert characters are allowed."""
    if not isinstance(value, str) or not _ID.match(value):
        raise UsageError(f"invalid {what} {value!r}: use 1-63 letters, digits, '_' or '-', starting with a letter "
                         "or digit")
    return value


@dataclass(frozen=True)
class JobPaths:
    """Absolute paths on the worker for one job."""

    workspace: str
    job: str

    @property
    def job_dir(self) -> str:
        return f"{self.workspace}/jobs/{self.job}"

    @property
    def worktree(self) -> str:
        return f"{self.workspace}/worktrees/{self.job}"

    @property
    def tmux_socket(self) -> str:
        return f"offload-{self.job}"

    @property
    def graph_script(self) -> str:
        return f"{self.job_dir}/graph.sh"

    def task_dir(self, task: str) -> str:
        return f"{self.job_dir}/tasks/{task}"

    def task_log(self, task: str) -> str:
        return f"{self.task_dir(task)}/log"

    def repo(self, repo_id: str) -> str:
        return f"{self.workspace}/repos/{repo_id}.git"
