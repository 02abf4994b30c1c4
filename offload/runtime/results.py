"""A job's result at home: its objects in the local repository, its diff, a three-way apply, and its files.

Only the result commands write locally, and only this: `pull` adds objects and the job's ref (`job_ref`); `apply`
changes the working-tree files the job changed (never the index, HEAD or any ref, never an ignored file); `get`
writes under its destination.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from offload.errors import OffloadError, SyncError, UsageError
from offload.runtime.localgit import run_git
from offload.worker.layout import job_ref


class ApplyConflict(OffloadError):
    """The job's changes do not apply over the local working tree; nothing was written."""

    exit_code = 1


@dataclass(frozen=True)
class Pulled:
    """A job's result in the local repository."""

    job: str
    result: str
    snapshot: str
    pack_bytes: int
    stat: str  # `git diff --stat` of the job's changes


def result_ref(job: str) -> str:
    """Where `pull` keeps a job's result in the local repository."""
    return job_ref(job)


def local_commit(root: Path, rev: str, env: dict[str, str] | None = None) -> str | None:
    """REV as a commit id, if the repository (with ENV's object directories) has it."""
    if not rev:
        return None
    p = run_git(["rev-parse", "-q", "--verify", f"{rev}^{{commit}}"], cwd=root, env=env, check=False)
    return p.stdout.decode().strip() or None


def store_result(root: Path, job: str, result: str, snapshot: str, pack: bytes, *,
                 bases_env: dict[str, str]) -> int:
    """Put the pack's objects into ROOT's repository (bases a thin pack lacks are taken from BASES_ENV's object
    directories, the snapshot cache) and point the job's ref at RESULT. Returns the pack's size."""
    if pack:
        alternates = bases_env.get("GIT_OBJECT_DIRECTORY", "")
        env = {"GIT_ALTERNATE_OBJECT_DIRECTORIES": alternates} if alternates else {}
        run_git(["index-pack", "--stdin", "--fix-thin"], cwd=root, env=env, stdin=pack)
    # The snapshot the result builds on lives in the snapshot cache: copy what the repository lacks of it, so
    # the job's ref is whole on its own.
    if snapshot and not local_commit(root, snapshot):
        revs = f"{snapshot}\n--not\n" + "".join(f"{p}\n" for p in _parents(root, snapshot, bases_env))
        p = run_git(["pack-objects", "--revs", "--stdout", "-q"], cwd=root, env=bases_env, stdin=revs.encode())
        run_git(["index-pack", "--stdin"], cwd=root, stdin=p.stdout)
    if not local_commit(root, result):
        raise SyncError("local", f"the result of job {job} did not arrive whole")
    run_git(["update-ref", result_ref(job), result], cwd=root)
    return len(pack)


def _parents(root: Path, commit: str, env: dict[str, str]) -> list[str]:
    out = run_git(["rev-list", "--parents", "-n", "1", commit], cwd=root, env=env).stdout.decode().split()
    return out[1:]


def snapshot_of_result(root: Path, result: str) -> str:
    """The snapshot a result builds on, as its commit message records it."""
    message = run_git(["log", "-1", "--format=%B", result], cwd=root).stdout.decode("utf-8", "replace")
    for line in message.splitlines():
        if line.startswith("Snapshot: "):
            return line.removeprefix("Snapshot: ").strip()
    raise SyncError("local", f"{result} is not the result of an offload job")


def diffstat(root: Path, snapshot: str, result: str) -> str:
    return run_git(["diff", "--stat", "--no-color", snapshot, result], cwd=root).stdout.decode("utf-8", "replace")


def diff(root: Path, snapshot: str, result: str) -> bytes:
    """The job's changes against its snapshot, as a git diff."""
    return run_git(["diff", "--binary", "--no-color", "--no-ext-diff", snapshot, result], cwd=root).stdout


# --- apply -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Side:
    """One side of a file in a three-way merge: content and mode, or absent."""

    data: bytes | None
    mode: int = 0o100644

    @property
    def present(self) -> bool:
        return self.data is not None


def _tree_side(root: Path, commit: str, path: str) -> _Side:
    p = run_git(["ls-tree", "-z", commit, "--", path], cwd=root)
    if not p.stdout:
        return _Side(None)
    meta, _, _ = p.stdout.partition(b"\t")
    mode, kind, obj = meta.split()
    if kind != b"blob":
        return _Side(None)
    data = run_git(["cat-file", "blob", obj.decode()], cwd=root).stdout
    return _Side(data, int(mode, 8))


def _disk_side(path: Path) -> _Side:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return _Side(None)
    if stat.S_ISLNK(st.st_mode):
        return _Side(os.fsencode(os.readlink(path)), 0o120000)
    if not stat.S_ISREG(st.st_mode):
        return _Side(b"\0directory", 0o040000)  # never equal to a file: a conflict
    return _Side(path.read_bytes(), 0o100755 if st.st_mode & stat.S_IXUSR else 0o100644)


def _changed_paths(root: Path, snapshot: str, result: str) -> list[str]:
    out = run_git(["diff", "--name-only", "--no-renames", "-z", snapshot, result], cwd=root).stdout
    return [os.fsdecode(p) for p in out.split(b"\0") if p]


def _merge_text(ours: bytes, base: bytes, theirs: bytes) -> bytes | None:
    """A clean three-way merge of text, or None on a conflict (or binary content)."""
    if b"\0" in ours or b"\0" in base or b"\0" in theirs:
        return None
    with tempfile.TemporaryDirectory(prefix="offload-merge-") as tmp:
        files = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            f = Path(tmp) / name
            f.write_bytes(data)
            files.append(str(f))
        p = run_git(["merge-file", "-p", "-q", *files], cwd=Path(tmp), check=False)
        return p.stdout if p.returncode == 0 else None


def ignored_here(root: Path, paths: list[str]) -> list[str]:
    """The PATHS this working tree ignores (a tracked file never is). Ignore rules of this machine only
    (.git/info/exclude, core.excludesFile) do not reach the worker, so a job may have made such a file."""
    if not paths:
        return []
    listed = b"".join(os.fsencode(p) + b"\0" for p in paths)
    p = run_git(["check-ignore", "-z", "--stdin"], cwd=root, stdin=listed, check=False)
    if p.returncode not in (0, 1):  # 1: none is ignored
        raise SyncError("local", f"git check-ignore failed: {p.stderr.decode('utf-8', 'replace').strip()}")
    return [os.fsdecode(x) for x in p.stdout.split(b"\0") if x]


def plan_apply(root: Path, snapshot: str, result: str) -> tuple[dict[str, _Side], list[str]]:
    """What every path the job changed becomes in the working tree, and the changed paths left out because
    they are ignored here; ApplyConflict (naming the paths) when a change meets local work it cannot merge
    with."""
    plan: dict[str, _Side] = {}
    conflicts: list[str] = []
    changed = _changed_paths(root, snapshot, result)
    skipped = ignored_here(root, changed)
    for rel in changed:
        if rel in skipped:
            continue
        base, theirs = _tree_side(root, snapshot, rel), _tree_side(root, result, rel)
        ours = _disk_side(root / rel)
        if ours == theirs:
            continue  # already so here
        if ours == base:
            plan[rel] = theirs  # untouched here: take the job's version (content, mode, or its removal)
            continue
        merged = None
        if ours.present and base.present and theirs.present and 0o120000 not in (ours.mode, base.mode, theirs.mode):
            merged = _merge_text(ours.data or b"", base.data or b"", theirs.data or b"")
            # A mode the job changed goes with the merged content, unless it changed here too.
            mode = theirs.mode if ours.mode == base.mode else ours.mode
            if merged is not None and (theirs.mode == base.mode or ours.mode == base.mode):
                plan[rel] = _Side(merged, mode)
                continue
        conflicts.append(rel)
    if conflicts:
        shown = ", ".join(conflicts[:8]) + (f" and {len(conflicts) - 8} more" if len(conflicts) > 8 else "")
        raise ApplyConflict(f"the job's changes conflict with local changes in {shown}; nothing was applied",
                            hint="commit or stash your changes, or see them with `offload diff`")
    return plan, skipped


def write_plan(root: Path, plan: dict[str, _Side]) -> list[str]:
    """Carry PLAN out: every file written to a temporary name first, then renamed into place. Returns the paths."""
    staged: list[tuple[Path, Path | None]] = []
    try:
        for rel, side in sorted(plan.items()):
            target = root / rel
            if not side.present:
                staged.append((target, None))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.offload-apply")
            if side.mode == 0o120000:
                os.symlink(os.fsdecode(side.data or b""), tmp)
            else:
                tmp.write_bytes(side.data or b"")
                tmp.chmod(0o755 if side.mode == 0o100755 else 0o644)
            staged.append((target, tmp))
    except BaseException:
        for _, tmp in staged:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        raise
    for target, tmp in staged:
        if tmp is None:
            target.unlink(missing_ok=True)
            _prune_empty_dirs(target.parent, root)
        else:
            os.replace(tmp, target)
    return [str(t.relative_to(root)) for t, _ in staged]


def _prune_empty_dirs(directory: Path, root: Path) -> None:
    while directory != root and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent


# --- get ---------------------------------------------------------------------------------------------------------


def extract(stream: BinaryIO, dest: Path) -> list[str]:
    """Unpack a tar stream into DEST, refusing any member that would land outside it (tarfile's data filter:
    no absolute paths, no `..`, no links that leave DEST). Returns the names written."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                tar.extract(member, dest, filter="data")
                names.append(member.name)
    except (tarfile.TarError, OSError) as e:
        raise UsageError(f"cannot unpack the job's files into {dest}: {e}") from None
    return names


def exclude_locally(root: Path, directory: str) -> None:
    """Add DIRECTORY (relative to ROOT) to the repository's .git/info/exclude, once."""
    p = run_git(["rev-parse", "--git-path", "info/exclude"], cwd=root)
    path = Path(os.fsdecode(p.stdout.strip()))
    if not path.is_absolute():
        path = root / path
    line = f"/{directory.strip('/')}/"
    try:
        current = path.read_text()
    except FileNotFoundError:
        current = ""
    if line in current.splitlines():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(("" if not current or current.endswith("\n") else "\n") + line + "\n")


__all__ = ["ApplyConflict", "Pulled", "diff", "diffstat", "exclude_locally", "extract", "local_commit",
           "plan_apply", "result_ref", "snapshot_of_result", "store_result", "write_plan"]
