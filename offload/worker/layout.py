"""The workspace layout of a worker and the id rule: the one Python description of the tree that the
worker-side shell library (`sh/lib.sh`) lays out in the same way.

    WORKSPACE/repos/<repo>.git            bare repository that receives snapshots (shared objects)
    WORKSPACE/trees/<repo>/<n>/           warm worktrees of that repository, n = 1, 2, ...
    WORKSPACE/trees/<repo>/<n>.lease/job  the job that holds worktree n while it runs (mkdir is the lease)
    WORKSPACE/trees/<repo>/<n>.used       when worktree n was last given back (epoch seconds)
    WORKSPACE/trees/<repo>/.lock          locked (flock) for a moment while a worktree is leased, given back or
                                          pruned
    WORKSPACE/home/, WORKSPACE/cache/     HOME and XDG_CACHE_HOME of jobs in a worker container
    WORKSPACE/jobs/<job>/                 job state, never inside a worktree
        meta                              key=value lines: repo, commit, worktree, created, playbook, command,
                                          branch, fresh, keep_jobs, warm_worktrees
        boot                              the kernel's boot id when the job started (older pids are dead)
        graph.sh                          the task-graph runner (POSIX sh)
        runner.pid                        pid of the runner (tmux window 0)
        checked-out                       the commit the worktree was moved to, once it was
        tasks.list                        task names, one per line, in declaration order
        tasks/<task>/cmd                  the task's shell command
        tasks/<task>/needs                names of tasks it needs, one per line (may be empty)
        tasks/<task>/when                 success | failure | always
        tasks/<task>/log                  combined stdout and stderr
        tasks/<task>/state                running | success | failed | skipped (absent: pending)
        tasks/<task>/exit                 exit code, written once the task has finished
        tasks/<task>/pid                  pid of the task's window process, written when it starts
        tasks/<task>/window               tmux window id (`@N`) of the task, for attaching to it
        finished                          when the job finished, in seconds since the epoch
        state                             the job's final state: success | failed (absent: not finished)
        result-key                        the key that signs the job's result, until the runner has read it
        result                            `COMMIT MAC`: the job's result and the runner's proof of it (`-`: none)

A job's snapshot is kept under the ref `refs/offload/jobs/<job>` of its repository, and its result's objects
under `refs/offload/results/<job>`; in the local repository, `pull` puts the result under a ref of the job's ref's
name (`pulled_ref`). The tmux server of a job
is `tmux -L offload-<job>`, its session is named `<job>`, and every task runs in a window named after the task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from offload.errors import UsageError

# What a worker keeps once a job ends (graph.sh: finish), unless the stack or the run says otherwise.
DEFAULT_KEEP_JOBS = 20        # finished jobs, newest first
DEFAULT_WARM_WORKTREES = 4    # idle warm worktrees per repository, most recently used first
MAX_KEEP_JOBS = 10_000
MAX_WARM_WORKTREES = 100

# A job's meta file stays small, whatever a command or a branch name is: a value is at most META_VALUE_BYTES
# (launch.py refuses more; a command is cut well below it, its whole text being in the task's cmd file), and
# status.sh reads at most META_READ_BYTES of the file (a line cut there is left out), so that what an older
# offload or the job itself left there cannot make `status` slow or large.
META_VALUE_BYTES = 4096
META_READ_BYTES = 16384

# Ids reach tmux, paths and refs: only inert characters. `sh/lib.sh` (is_id) applies the same rule.
ID_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
JOB_REF_PREFIX = "refs/offload/jobs/"


def validate_id(value: object, what: str = "job id") -> str:
    """VALUE if it is a valid job, task or playbook id, else a one-line UsageError naming WHAT."""
    if not isinstance(value, str) or not ID_RULE.fullmatch(value):
        raise UsageError(f"invalid {what} {value!r}: use 1-63 letters, digits, '_' or '-', starting with a letter "
                         "or digit")
    return value


def job_ref(job: str) -> str:
    """The ref that holds JOB's snapshot in its repository on the worker."""
    return f"{JOB_REF_PREFIX}{job}"


def pulled_ref(job: str) -> str:
    """The ref of the local repository that `pull` fetches JOB's result into. It has the name job_ref gives the
    job's snapshot on the worker; here it holds the result."""
    return job_ref(job)


def tmux_socket(job: str) -> str:
    """The name (`tmux -L`) of JOB's own tmux server."""
    return f"offload-{job}"


@dataclass(frozen=True)
class WorkerLayout:
    """Absolute paths under one worker's workspace."""

    workspace: str

    @property
    def repos_dir(self) -> str:
        return f"{self.workspace}/repos"

    @property
    def jobs_dir(self) -> str:
        return f"{self.workspace}/jobs"

    @property
    def trees_dir(self) -> str:
        return f"{self.workspace}/trees"

    @property
    def home(self) -> str:
        """HOME of jobs in a worker container: kept with the workspace, so caches outlive the container."""
        return f"{self.workspace}/home"

    @property
    def cache(self) -> str:
        """XDG_CACHE_HOME of jobs in a worker container."""
        return f"{self.workspace}/cache"

    def repo(self, repo_id: str) -> str:
        return f"{self.repos_dir}/{repo_id}.git"

    def pool(self, repo_id: str) -> str:
        """The directory of the repository's warm worktrees."""
        return f"{self.trees_dir}/{repo_id}"

    def job(self, job: str) -> "JobPaths":
        return JobPaths(self.workspace, job)


@dataclass(frozen=True)
class JobPaths:
    """Absolute paths on the worker for one job. WORKTREE is the warm worktree the job leased (known once the
    sync has leased it)."""

    workspace: str
    job: str
    worktree: str = ""

    @property
    def job_dir(self) -> str:
        return f"{self.workspace}/jobs/{self.job}"

    @property
    def tmux_socket(self) -> str:
        return tmux_socket(self.job)

    @property
    def ref(self) -> str:
        return job_ref(self.job)

    @property
    def graph_script(self) -> str:
        return f"{self.job_dir}/graph.sh"

    def task_dir(self, task: str) -> str:
        return f"{self.job_dir}/tasks/{task}"

    def task_log(self, task: str) -> str:
        return f"{self.task_dir(task)}/log"

    def repo(self, repo_id: str) -> str:
        return WorkerLayout(self.workspace).repo(repo_id)
