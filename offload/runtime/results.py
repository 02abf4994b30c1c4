"""A job's result at home: the record that proves a result is its runner's own, its objects in the local
repository, its diff, and its files (offload/runtime/apply.py brings its changes into the working tree).

Only the result commands write locally, and only this: `pull` adds objects and the job's ref (`job_ref`); `apply`
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
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from offload.errors import OffloadError, SyncError, UsageError
from offload.runtime.localgit import run_git
from offload.worker.layout import job_ref, validate_id

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


def save_record(state_dir: Path, record: JobRecord) -> None:
    """Keep RECORD (mode 0600: it holds the key) in the repository's state directory on this machine; forget
    records older than RECORD_DAYS on the way."""
    directory = _records_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{validate_id(record.job)}.json"
    tmp = directory / f".{record.job}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(record), f)
    os.replace(tmp, path)
    cutoff = time.time() - RECORD_DAYS * 86400
    for old in directory.glob("*.json"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass


def load_record(state_dir: Path, job: str) -> JobRecord | None:
    try:
        data = json.loads((_records_dir(state_dir) / f"{validate_id(job)}.json").read_text())
        record = JobRecord(**{k: data.get(k) for k in ("job", "worker", "snapshot", "key", "verified")})
    except (OSError, ValueError, TypeError):
        return None
    if not (isinstance(record.key, str) and isinstance(record.snapshot, str) and record.job == job):
        return None
    return record


def forget_record(state_dir: Path, job: str) -> None:
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


def descends(root: Path, commit: str, ancestor: str) -> bool:
    """COMMIT is ANCESTOR or builds on it."""
    return run_git(["merge-base", "--is-ancestor", ancestor, commit], cwd=root, check=False).returncode == 0


def diffstat(root: Path, snapshot: str, result: str) -> str:
    return run_git(["diff", "--stat", "--no-color", snapshot, result], cwd=root).stdout.decode("utf-8", "replace")


def diff(root: Path, snapshot: str, result: str) -> bytes:
    """The job's changes against its snapshot, as a git diff."""
    return run_git(["diff", "--binary", "--no-color", "--no-ext-diff", snapshot, result], cwd=root).stdout


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


__all__ = ["JobRecord", "Pulled", "ResultUnverified", "check_result", "descends", "diff", "diffstat", "exclude_locally",
           "extract", "forget_record", "load_record", "local_commit", "new_result_key", "result_mac", "result_ref",
           "save_record", "snapshot_of_result", "store_result", "unverified_hint"]
