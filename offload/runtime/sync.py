"""Reproducing the local working tree on a worker as a git commit, sending only the objects it lacks.

The snapshot is built with a private index and a private object directory (the repository's own objects
are read through alternates), so the local repository's files, index, stash, refs and object store are
never written. On the worker the snapshot lands in a bare repository and is checked out in a fresh
worktree per job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from offload.errors import JobExists, SyncError, UsageError
from offload.paths import cache_dir
from offload.runtime.localgit import run_git
from offload.runtime.transport import Result, Transport
from offload.worker.layout import JobPaths
from offload.worker.scripts import worker_script

SNAPSHOT_IDENTITY = {
    "GIT_AUTHOR_NAME": "offload", "GIT_AUTHOR_EMAIL": "offload@localhost",
    "GIT_COMMITTER_NAME": "offload", "GIT_COMMITTER_EMAIL": "offload@localhost",
}
REMEMBERED_HAVES = 16
# receive.sh exits with these when the worker lacks objects the pack builds on, and when the job exists.
RC_MISSING_OBJECTS = 3
RC_JOB_EXISTS = 4


@dataclass
class Snapshot:
    """The local working tree, frozen as a commit that lives outside the repository."""

    root: Path
    repo_id: str
    commit: str
    head: str | None
    branch: str | None
    object_env: dict[str, str] = field(repr=False, default_factory=dict)
    state_dir: Path = field(repr=False, default=Path("."))

    def remembered_haves(self, worker_key: str) -> list[str]:
        try:
            data = json.loads((self.state_dir / "workers.json").read_text())
        except (OSError, ValueError):
            return []
        haves = data.get(worker_key, [])
        return [h for h in haves if isinstance(h, str) and re.fullmatch(r"[0-9a-f]{40,64}", h)]

    def remember(self, worker_key: str, commit: str) -> None:
        path = self.state_dir / "workers.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        haves = [commit] + [h for h in data.get(worker_key, []) if h != commit]
        data[worker_key] = haves[:REMEMBERED_HAVES]
        tmp = path.with_name(f"workers.json.{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def _repo_id(root: Path, common_dir: Path) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "_", root.name)[:40] or "repo"
    digest = hashlib.sha256(str(common_dir.resolve()).encode()).hexdigest()[:12]
    return f"{base}-{digest}"


def take_snapshot(cwd: Path) -> Snapshot:
    """Freeze the working tree at CWD (committed, staged, unstaged and untracked, minus ignored files)."""
    p = run_git(["rev-parse", "--show-toplevel", "--absolute-git-dir", "--git-common-dir"], cwd=cwd, check=False)
    if p.returncode != 0:
        raise UsageError(f"{cwd} is not inside a git repository; offload runs the working tree of a git repository")
    top, git_dir, common = p.stdout.decode().splitlines()[:3]
    root, git_dir_p = Path(top), Path(git_dir)
    common_p = Path(common) if os.path.isabs(common) else (cwd / common)
    repo_id = _repo_id(root, common_p)
    state = cache_dir() / "snapshots" / repo_id
    objects = state / "objects"
    if not (objects / "pack").is_dir():
        (objects / "pack").mkdir(parents=True, exist_ok=True)
        (objects / "info").mkdir(parents=True, exist_ok=True)
    env = {"GIT_OBJECT_DIRECTORY": str(objects),
           "GIT_ALTERNATE_OBJECT_DIRECTORIES": str((common_p / "objects").resolve())}
    head_p = run_git(["rev-parse", "-q", "--verify", "HEAD^{commit}"], cwd=root, check=False)
    head = head_p.stdout.decode().strip() or None
    branch_p = run_git(["symbolic-ref", "-q", "--short", "HEAD"], cwd=root, check=False)
    branch = branch_p.stdout.decode().strip() or None
    with tempfile.TemporaryDirectory(prefix="offload-index-") as tmp:
        index = Path(tmp) / "index"
        real_index = git_dir_p / "index"
        if real_index.exists():
            shutil.copyfile(real_index, index)
        idx_env = dict(env, GIT_INDEX_FILE=str(index))
        run_git(["add", "-A", "--", ":/"], cwd=root, env=idx_env)
        tree = run_git(["write-tree"], cwd=root, env=idx_env).stdout.decode().strip()
    if head:
        head_tree = run_git(["rev-parse", f"{head}^{{tree}}"], cwd=root, env=env).stdout.decode().strip()
        if head_tree == tree:
            return Snapshot(root, repo_id, head, head, branch, env, state)
        date = run_git(["log", "-1", "--format=@%ct +0000", head], cwd=root, env=env).stdout.decode().strip()
        parents = ["-p", head]
    else:
        date, parents = "@0 +0000", []
    commit_env = dict(env, **SNAPSHOT_IDENTITY, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    msg = f"offload snapshot of {branch or head or 'an empty repository'}\n".encode()
    commit = run_git(["commit-tree", tree, *parents], cwd=root, env=commit_env, stdin=msg).stdout.decode().strip()
    return Snapshot(root, repo_id, commit, head, branch, env, state)


def build_pack(snap: Snapshot, haves: Sequence[str]) -> bytes:
    """A thin pack of everything SNAP needs beyond HAVES (only haves that exist locally are used)."""
    usable: list[str] = []
    if haves:
        query = "".join(f"{h}\n" for h in haves).encode()
        p = run_git(["cat-file", "--batch-check=%(objectname) %(objecttype)"], cwd=snap.root, env=snap.object_env,
                 stdin=query, check=False)
        usable = [ln.split()[0] for ln in p.stdout.decode().splitlines() if ln.endswith(" commit")]
    revs = f"{snap.commit}\n" + "".join(f"^{h}\n" for h in usable)
    p = run_git(["pack-objects", "--stdout", "--revs", "--thin", "--delta-base-offset", "-q"], cwd=snap.root,
             env=snap.object_env, stdin=revs.encode())
    return p.stdout


def pack_object_count(pack: bytes) -> int:
    if len(pack) < 12 or pack[:4] != b"PACK":
        return 0
    return struct.unpack(">I", pack[8:12])[0]


@dataclass
class SyncStats:
    """What a sync cost: bytes of pack data sent and round trips made."""

    pack_bytes: int = 0
    objects: int = 0
    round_trips: int = 0
    retried: bool = False


def _receive(transport: Transport, paths: JobPaths, snap: Snapshot, pack: bytes, checkout: bool) -> Result:
    count = pack_object_count(pack)
    mode = "none" if count == 0 else ("unpack" if count < 100 else "index")
    argv = ["sh", "-c", worker_script("receive.sh"), "sh", paths.workspace, snap.repo_id, paths.job, snap.commit,
            mode, "now" if checkout else "defer"]
    return transport.run(argv, stdin=pack if count else None, timeout=600)


def push_snapshot(transport: Transport, snap: Snapshot, paths: JobPaths, worker_key: str, *,
                  checkout: bool = True) -> SyncStats:
    """Make SNAP the content of the job's fresh worktree on the worker.

    Optimistic path: one round trip, assuming the worker still has what we sent it before. If it lacks a
    base object, ask it what it has and send again. With CHECKOUT false the worktree is added without its
    files, which the job's runner checks out before the first task (so a large tree costs the job, not the
    command that starts it).
    """
    stats = SyncStats()
    pack = build_pack(snap, snap.remembered_haves(worker_key))
    result = _receive(transport, paths, snap, pack, checkout)
    stats.round_trips += 1
    stats.pack_bytes += len(pack) if pack_object_count(pack) else 0
    if result.exit_code == RC_MISSING_OBJECTS:
        listed = transport.run(["sh", "-c", worker_script("haves.sh"), "sh", paths.workspace, snap.repo_id],
                               timeout=60)
        have_list = listed.text().split() if listed.ok else []
        pack = build_pack(snap, have_list)
        result = _receive(transport, paths, snap, pack, checkout)
        stats.round_trips += 2
        stats.pack_bytes += len(pack) if pack_object_count(pack) else 0
        stats.retried = True
    if result.exit_code == RC_JOB_EXISTS:
        raise JobExists(transport.worker, f"job {paths.job} already exists on worker {transport.worker}",
                        hint=f"pick another --job, or remove it with `offload clean {paths.job}`")
    if not result.ok:
        raise SyncError(transport.worker, f"cannot place the working tree on worker {transport.worker}: "
                        f"{result.error_line()}")
    stats.objects = pack_object_count(pack)
    snap.remember(worker_key, snap.commit)
    return stats
