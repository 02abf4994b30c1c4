"""A job's result at home: the record that proves a result is its runner's own, its objects in the local
repository, its diff, and its files (offload/runtime/apply.py brings its changes into the working tree).

Only the result commands write locally, and only this: `pull` adds objects and the job's ref (`pulled_ref`); `apply`
changes the working-tree files the job changed and keeps what they were under `refs/offload/backup/JOB`; `get`
writes under its destination.

Trust: everything on the worker can be rewritten by any job there. What this machine trusts is what it made
itself when it started the job (the job's record: the snapshot it sent and a random key that only the job's
runner learns), so a result is taken only when the runner's proof (`result_mac`) checks out with that key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from offload.errors import OffloadError, SyncError, UsageError
from offload.runtime.localgit import repo_root, run_git
from offload.worker.layout import pulled_ref, validate_id

RECORD_DAYS = 60  # how long this machine remembers a job it started (its snapshot and its result key)


class ResultUnverified(OffloadError):
    """A job's result is not the one its runner recorded, or this machine cannot tell; nothing was taken."""

    exit_code = 1


# --- what this machine knows of the jobs it started --------------------------------------------------------------


@dataclass
class JobRecord:
    """What this machine made when it started a job: the snapshot it sent, and the key the job's runner signs
    the result with. VERIFIED is the result that was checked against them when it was pulled."""

    job: str
    worker: str
    snapshot: str
    key: str
    verified: str | None = None


def new_result_key() -> str:
    return secrets.token_hex(32)


def result_mac(key: str, job: str, commit: str) -> str:
    """The runner's proof that COMMIT is JOB's result: git's blob hash of the key, the job and the commit (what
    `record_result` in the worker's lib.sh computes with `git hash-object`)."""
    body = f"offload-result\n{key}\n{job}\n{commit}\n".encode()
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


def unverified_hint(verb: str, job: str) -> str:
    return f"if you trust it, `offload {verb} --unverified {job}` takes it anyway"


def _records_dir(state_dir: Path) -> Path:
    return state_dir / "jobs"


def _written(state_dir: Path, record: JobRecord) -> tuple[Path, Path]:
    """RECORD written (mode 0600: it holds the key) to a temporary file beside its place: (its place, that file)."""
    directory = _records_dir(state_dir)
    path = directory / f"{validate_id(record.job)}.json"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = directory / f".{record.job}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(record), f)
    return path, tmp


def save_record(state_dir: Path, record: JobRecord) -> None:
    """Keep RECORD (mode 0600: it holds the key) in the repository's state directory on this machine; forget
    records older than RECORD_DAYS on the way."""
    path, tmp = _written(state_dir, record)
    os.replace(tmp, path)
    cutoff = time.time() - RECORD_DAYS * 86400
    for old in path.parent.glob("*.json"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass


def claim_record(state_dir: Path, record: JobRecord) -> bool:
    """Keep RECORD as save_record does, unless this machine keeps a record of its job already: whether it did. A job
    id the user chose can then have its record kept before the sync claims the id on the worker (and the launch go
    with the sync): if the worker has a job of that id, forget_record with RECORD's key takes it back."""
    path, tmp = _written(state_dir, record)
    try:
        os.link(tmp, path)  # never over a record that is there
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def load_record(state_dir: Path, job: str) -> JobRecord | None:
    try:
        data = json.loads((_records_dir(state_dir) / f"{validate_id(job)}.json").read_text())
        record = JobRecord(**{k: data.get(k) for k in ("job", "worker", "snapshot", "key", "verified")})
    except (OSError, ValueError, TypeError):
        return None
    if not (isinstance(record.key, str) and isinstance(record.snapshot, str) and record.job == job):
        return None
    return record


def forget_record(state_dir: Path, job: str, key: str | None = None) -> None:
    """Forget JOB's record; with KEY, only a record with that key (one this command claimed, not one another
    command has kept since)."""
    if key is not None:
        kept = load_record(state_dir, job)
        if kept is None or kept.key != key:
            return
    try:
        (_records_dir(state_dir) / f"{validate_id(job)}.json").unlink()
    except OSError:
        pass


def check_result(record: JobRecord | None, job: str, worker: str, result: str, mac: str, *,
                 verb: str = "pull") -> None:
    """ResultUnverified unless RESULT is the record its runner signed for the job this machine started. VERB is the
    command that asked, for the hint."""
    hint = unverified_hint(verb, job)
    if record is None or record.worker != worker:
        raise ResultUnverified(f"job {job} was not started from this repository on this machine, so its result "
                               "cannot be checked", hint=hint)
    if not re.fullmatch(r"[0-9a-f]{40}", mac or ""):
        raise ResultUnverified(f"the result of job {job} on worker {worker} was not recorded by its runner (it "
                               "ended without recording it, or something on the worker replaced the record)",
                               hint=hint)
    if not hmac.compare_digest(mac, result_mac(record.key, job, result)):
        raise ResultUnverified(f"the result of job {job} on worker {worker} is not the one its runner recorded: "
                               "something on the worker changed it", hint=hint)


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
    run_git(["update-ref", pulled_ref(job), result], cwd=root)
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


def descends(root: Path, commit: str, ancestor: str) -> bool:
    """COMMIT is ANCESTOR or builds on it."""
    return run_git(["merge-base", "--is-ancestor", ancestor, commit], cwd=root, check=False).returncode == 0


def diffstat(root: Path, snapshot: str, result: str) -> str:
    return run_git(["diff", "--stat", "--no-color", snapshot, result], cwd=root).stdout.decode("utf-8", "replace")


def diff(root: Path, snapshot: str, result: str) -> bytes:
    """The job's changes against its snapshot, as a git diff."""
    return run_git(["diff", "--binary", "--no-color", "--no-ext-diff", snapshot, result], cwd=root).stdout


# --- get ---------------------------------------------------------------------------------------------------------


SCRATCH = ".offload"  # the repository's own directory for what `get` copies: the only place it replaces files


class WouldReplace(UsageError):
    """Unpacking would replace files that are already there, outside the repository's .offload/; nothing was
    written."""

    def __init__(self, dest: Path, paths: list[str], *, hint: str | None = None) -> None:
        shown = ", ".join(_said(p) for p in paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
        super().__init__(f"get would replace {len(paths)} existing {'file' if len(paths) == 1 else 'files'} in "
                         f"{_said(str(dest))}: {shown}; nothing was written", hint=hint)
        self.dest = dest
        self.paths = paths


@dataclass(frozen=True)
class Destination:
    """Where `get` unpacks: PATH, absolute and free of symlinks from the repository's top ROOT down (when it is
    inside the repository). SCRATCH: it is in the repository's .offload/, where files may be replaced."""

    path: Path
    root: Path | None
    scratch: bool


def get_destination(cwd: Path, job: str, to: Path | None, *, within_repository: bool = False) -> Destination:
    """Where `get` of JOB from CWD unpacks: .offload/JOB/ of the repository, or TO.

    The user's TO (relative to CWD) may be anywhere. With WITHIN_REPOSITORY (an agent's request), TO is relative to
    the repository's top and must stay inside it, outside .git. Inside the repository, no directory from its top
    down may be a symlink (a job can leave one there, `.offload` itself included), or `get` would write wherever it
    leads; the path used is the one checked, with `..` taken away, so no symlink is followed on the way."""
    if to is not None and "\0" in str(to):
        raise UsageError("a destination cannot contain a NUL character")
    if to is None or within_repository:
        root: Path | None = repo_root(cwd)
    else:
        root = _repo_root_or_none(cwd)
    if to is None:
        assert root is not None
        target = root / SCRATCH / job
    elif within_repository:
        assert root is not None
        target = Path(os.path.normpath(root / to))
        if not _within(target, root):
            raise UsageError(f"to: {_said(str(to))} is outside the repository {_said(str(root))}",
                             hint=f"give a directory inside it, or leave `to` out for {SCRATCH}/{job}/")
        if any(part.lower() == ".git" for part in target.relative_to(root).parts):
            raise UsageError(f"to: {_said(str(to))} is inside .git, which get never writes",
                             hint=f"give another directory, or leave `to` out for {SCRATCH}/{job}/")
    else:
        target = Path(os.path.normpath(cwd / to))
        if root is None or not _within(target, root):
            target = target.resolve()  # the user's own path, wherever it leads: shown as it really is
    if root is not None and _within(target, root):
        _no_symlink_below(root, target)
        scratch = _within(target, root / SCRATCH)
    else:
        root, scratch = None, False
    return Destination(target, root, scratch)


def _repo_root_or_none(cwd: Path) -> Path | None:
    try:
        return repo_root(cwd)
    except UsageError:
        return None


def _within(path: Path, top: Path) -> bool:
    return path == top or top in path.parents


def _no_symlink_below(root: Path, target: Path) -> None:
    """A UsageError when a directory between ROOT (excluded) and TARGET (included) is a symlink or not a directory."""
    here = root
    for part in target.relative_to(root).parts:
        here = here / part
        try:
            st = here.lstat()
        except FileNotFoundError:
            return  # made by `get`, as a directory
        rel = _said(str(here.relative_to(root)))
        if stat.S_ISLNK(st.st_mode):
            raise UsageError(f"{rel} is a symlink in the repository, and get writes nowhere through a symlink",
                             hint=f"remove {_said(str(here))} and get again")
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"cannot get into {_said(str(target))}: {rel} is not a directory")


def _said(text: str) -> str:
    """TEXT (a path a job chose) on one line: quoted when it holds a control character."""
    return repr(text) if any(ord(c) < 32 or ord(c) == 127 for c in text) else text


@dataclass(frozen=True)
class Unpacked:
    """The entries unpacked (directories and files, relative to the destination), and those of them that
    replaced what was there before."""

    names: list[str]
    replaced: list[str]


@dataclass(frozen=True)
class _Step:
    member: tarfile.TarInfo
    clear: bool  # remove what is there first (a file or a symlink), so nothing is written through it
    keep: bool  # a directory that is there already: left as it is


def extract(stream: BinaryIO, dest: Path, *, replace: bool = True) -> Unpacked:
    """Unpack a seekable tar stream into DEST, following no symlink: every member is checked against DEST as it
    is and as the members before it leave it, and one that passes through a symlink, leaves DEST, has a `.git`
    component, or would put a file where a directory is, is refused before anything is written. Without REPLACE,
    so is a member that would replace a file or symlink already there (WouldReplace). On top, tarfile's data
    filter drops special files, high mode bits and ownership."""
    try:
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            steps, replaced = _plan_unpack(tar.getmembers(), dest)
            if replaced and not replace:
                raise WouldReplace(dest, replaced)
            dest.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = dest / step.member.name
                if step.clear:
                    target.unlink()
                if not step.keep:
                    tar.extract(step.member, dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise UsageError(f"cannot unpack the job's files into {_said(str(dest))}: {e}") from None
    return Unpacked([s.member.name for s in steps], replaced)


def _plan_unpack(members: list[tarfile.TarInfo], dest: Path) -> tuple[list[_Step], list[str]]:
    """What unpacking MEMBERS into DEST does, step by step, and the entries already there that it replaces; a
    UsageError for a member that must not be unpacked."""
    made: dict[str, str] = {}  # what the members before leave at a path: "dir", "file" or "link"
    new_dirs: set[str] = set()  # directories they make where there was none: nothing is below them yet

    def kind(rel: str) -> str | None:
        if rel in made:
            return made[rel]
        parts = rel.split("/")
        if any("/".join(parts[:i]) in new_dirs for i in range(1, len(parts))):
            return None
        try:
            mode = os.lstat(dest / rel).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        return "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "file"

    def refuse(name: str, why: str) -> UsageError:
        return UsageError(f"cannot unpack the job's files into {_said(str(dest))}: {_said(name)} {why}",
                          hint="nothing was written")

    steps: list[_Step] = []
    replaced: list[str] = []
    for member in members:
        rel = _member_path(member.name)
        if rel is None:
            raise refuse(member.name, "leaves the destination")
        if not rel:  # the destination itself ("." of `get JOB .`)
            if not member.isdir():
                raise refuse(member.name, "is not a directory")
            continue
        parts = rel.split("/")
        if any(p.lower() == ".git" for p in parts):
            raise refuse(rel, "is inside a .git directory, which get never writes")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            k = kind(above)
            if k == "link":
                raise refuse(rel, f"passes through the symlink {_said(above)}")
            if k == "file":
                raise refuse(rel, f"passes through {_said(above)}, which is not a directory")
            if k is None:  # tarfile makes it
                new_dirs.add(above)
                made[above] = "dir"
        if member.isdir():
            new = "dir"
        elif member.issym():
            new = "link"
        elif member.isreg():
            new = "file"
        elif member.islnk():
            new = "file"
            # A hard link only to a file unpacked just before: never a second name for a file that was here.
            linked = _member_path(member.linkname)
            if not linked or made.get(linked) != "file":
                raise refuse(rel, "is a hard link to a file this copy does not bring")
            member = member.replace(linkname=linked, deep=False)
        else:
            raise refuse(rel, "is a special file")
        if member.issym():  # refused here what the data filter would refuse at its turn, after other members
            if os.path.isabs(member.linkname):
                raise refuse(rel, "is a symlink to an absolute path")
            top = os.path.realpath(dest)
            lands = os.path.realpath(os.path.join(top, os.path.dirname(rel), member.linkname))
            if os.path.commonpath([lands, top]) != top:
                raise refuse(rel, "is a symlink that leads out of the destination")
        before = kind(rel)
        ours = rel in made
        if before == "dir" and new != "dir":
            raise refuse(rel, "would replace a directory")
        clear = before in ("file", "link")
        if clear and not ours:
            replaced.append(rel)
        if new == "dir" and before != "dir":
            new_dirs.add(rel)
        steps.append(_Step(member.replace(name=rel, deep=False), clear, before == "dir" and not ours))
        made[rel] = new
    return steps, replaced


def _member_path(name: str) -> str | None:
    """A member's name as a path relative to the destination ("" for the destination itself), or None when it
    is absolute or has a `..` component."""
    if name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/".join(parts)


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


__all__ = ["JobRecord", "ResultUnverified", "check_result", "descends", "diff", "diffstat", "exclude_locally",
           "extract", "forget_record", "load_record", "local_commit", "new_result_key", "result_mac",
           "save_record", "snapshot_of_result", "store_result", "unverified_hint"]
