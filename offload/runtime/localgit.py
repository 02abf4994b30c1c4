"""git on this machine, for offload's own reads of the user's repository.

The caller's GIT_DIR, GIT_WORK_TREE and GIT_INDEX_FILE never reach these calls: inside a git hook they point at
the hook's own index, and offload must see the repository as it is on disk, not write into it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import IO, Sequence

from offload.errors import SyncError, UsageError

_CALLER_ONLY = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")


def _git_env(env: dict[str, str] | None) -> dict[str, str]:
    full_env = dict(os.environ)
    full_env["GIT_OPTIONAL_LOCKS"] = "0"
    for name in _CALLER_ONLY:
        full_env.pop(name, None)
    if env:
        full_env.update(env)
    return full_env


def start_git(args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None,
              stderr: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """`git ARGS` in CWD with ENV added, started with its stdin and stdout as pipes (STDERR: a file, or none)."""
    try:
        return subprocess.Popen(["git", *args], cwd=cwd, env=_git_env(env), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr if stderr is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise UsageError("git is not installed on this machine") from None


def git_failure(args: Sequence[str], returncode: int, stderr: bytes) -> SyncError:
    msg = stderr.decode("utf-8", "replace").strip().splitlines()
    return SyncError("local", f"git {args[0]} failed: {msg[-1] if msg else returncode}")


def run_git(args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, stdin: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """`git ARGS` in CWD with ENV added; a failure raises a one-line SyncError unless CHECK is false."""
    try:
        p = subprocess.run(["git", *args], cwd=cwd, env=_git_env(env), input=stdin or b"", capture_output=True)
    except FileNotFoundError:
        raise UsageError("git is not installed on this machine") from None
    if check and p.returncode != 0:
        raise git_failure(args, p.returncode, p.stderr)
    return p


def repo_root(cwd: Path) -> Path:
    """The top of the working tree that CWD is in; a UsageError outside a repository."""
    p = run_git(["rev-parse", "--show-toplevel"], cwd=cwd, check=False)
    if p.returncode != 0:
        raise UsageError(f"{cwd} is not inside a git repository; offload runs the working tree of a git repository")
    out = p.stdout[:-1] if p.stdout.endswith(b"\n") else p.stdout
    return Path(os.fsdecode(out))  # a path may hold a newline, or bytes that are not UTF-8
