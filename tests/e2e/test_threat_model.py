"""The threat model, as tests: what a job, a worker or an agent can and cannot do to the developer's machine.

Everything a job leaves on its worker (its worktree, the refs and files of the worker's repository, its
processes) and everything an agent passes to `offload mcp` is treated as hostile. Each section below names one
attack, made for real against real workers, and what must hold:

1. A job's result cannot write inside `.git/` or any path git would refuse to check out, and cannot change
   `.gitattributes` or `.gitmodules` so that a filter or a hook runs here.
2. A job cannot write any result but its own; a result that is not its runner's record is refused.
3. An agent gets only the environment variables the user allowed.
4. An agent's `get` writes only inside the repository.
5. A job cannot plant a `.offload` symlink that makes `get` write elsewhere.
6. A job that breaks its worktree cannot make the next job run on stale files.
7. A job's leftover processes cannot write into the next job's worktree.
8. `apply` never deletes or overwrites local work that git does not track, and can always be undone.

docs/security.md states the same model for users.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import on_worker, ran, stderr_line, worker_setup
from tests.workers import git, make_repo


@pytest.fixture(params=["sshd", "container"])
def worker(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A worker with its own account and workspace: an sshd host, or an sshd host's worker container."""
    return worker_setup(request, request.param, tmp_path)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo")
    (r / ".gitignore").write_text("build/\n")
    git(r, "add", ".gitignore")
    git(r, "commit", "-q", "-m", "ignore build outputs")
    return r


def cmd(worker: dict[str, Any], repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return on_worker(worker, repo, *args)


# --- 1. a result cannot write inside .git or run a filter or a hook here ----------------------------------------


# --- 2. a job cannot forge another job's result ----------------------------------------------------------------


# --- 3. an agent gets only the environment the user allowed ----------------------------------------------------


# --- 4. an agent's get writes only inside the repository -------------------------------------------------------


# --- 5. a job-made .offload symlink leads nowhere ----------------------------------------------------------------


# --- 6. a broken worktree is never reused silently ---------------------------------------------------------------

# What a job can do to the git side of its worktree. `git rev-parse --git-dir` is the worktree's admin directory in
# the worker's bare repository.
BREAKS = {
    "git-file-deleted": "rm .git",
    "admin-dir-deleted": 'rm -rf "$(git rev-parse --git-dir)"',
    "head-unreadable": 'echo garbage > "$(git rev-parse --git-dir)/HEAD"',
}


@pytest.mark.parametrize(("breakage", "fresh"), [("git-file-deleted", False), ("git-file-deleted", True),
                                                 ("admin-dir-deleted", False), ("head-unreadable", False)])
def test_a_worktree_a_job_broke_is_made_again_for_the_next_job(worker: dict[str, Any], repo: Path, breakage: str,
                                                               fresh: bool) -> None:
    first = cmd(worker, repo, "run", "--job", "breaker", "--wait", "--",
                f"echo stale > file0.txt; echo junk > junk.txt; pwd; {BREAKS[breakage]}")
    assert first.returncode == 0, first.stderr
    second = cmd(worker, repo, "run", "--job", "next", "--wait", *(["--fresh"] if fresh else []), "--",
                 "pwd; cat file0.txt; ls -A | grep -x junk.txt; git status --porcelain")
    assert second.returncode == 0, second.stderr
    assert second.stdout.decode() == f"{first.stdout.decode().strip()}\ncontent 0\n", \
        "the same slot, made again: exactly the snapshot, and a git worktree again"


# --- 7. a finished job's leftover processes end before its worktree is used again --------------------------------

# A process that leaves the task's session (setsid) and writes into the worktree once the job has ended. It records
# its pid under build/ (ignored, so the next job in the worktree finds it) when it starts.
LEFTOVER = ("mkdir -p build; setsid sh -c 'echo $$ > build/leftover.pid; sleep 4; echo poison > poison.txt; "
            "echo poisoned >> file0.txt' < /dev/null > /dev/null 2>&1 & "
            "while [ ! -s build/leftover.pid ]; do sleep 0.05; done; pwd")
# The next job waits for that process to be gone (a zombie is gone too), then looks at its worktree.
GONE = ("p=$(cat build/leftover.pid); "
        "while [ -d /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status 2> /dev/null; do sleep 0.1; done; "
        "pwd; ls -A; cat file0.txt")


def test_a_finished_jobs_leftover_process_never_writes_into_the_next_job(worker: dict[str, Any], repo: Path) -> None:
    import json

    first = cmd(worker, repo, "run", "--job", "leaver", "--wait", "--", LEFTOVER)
    assert first.returncode == 0, first.stderr
    # The job's runner and tmux server linger for `offload attach`: giving the worktree back spared them.
    check = cmd(worker, repo, "check", "leaver", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["worker_alive"] is True, check.stdout
    second = cmd(worker, repo, "run", "--job", "after", "--wait", "--", GONE)
    assert second.returncode == 0, second.stderr
    where, *listing, content = second.stdout.decode().splitlines()
    assert where == first.stdout.decode().strip(), "the next job got the same warm worktree"
    assert "poison.txt" not in listing and content == "content 0", second.stdout
    diff = cmd(worker, repo, "diff", "after")
    assert diff.returncode == 0 and diff.stdout == b"", diff.stdout
    check = cmd(worker, repo, "check", "leaver", "--json")
    assert json.loads(check.stdout)["worker_alive"] is True, "leasing the worktree again spared them too"


# --- 8. apply keeps untracked work and can be undone -------------------------------------------------------------
