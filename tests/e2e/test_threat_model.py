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


# --- 7. a finished job's leftover processes end before its worktree is used again --------------------------------


# --- 8. apply keeps untracked work and can be undone -------------------------------------------------------------
