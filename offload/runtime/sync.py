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
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from offload.errors import SyncError, UsageError
from offload.jobs.layout import JobPaths
from offload.paths import cache_dir
from offload.runtime.transport import Result, Transport

SNAPSHOT_IDENTITY = {
    "GIT_AUTHOR_NAME": "offload", "GIT_AUTHOR_EMAIL": "offload@localhost",
    "GIT_COMMITTER_NAME": "offload", "GIT_COMMITTER_EMAIL": "offload@localhost",
}
REMEMBERED_HAVES = 16
# receive: exit codes the client acts on
RC_MISSING_OBJECTS = 3

# Runs on the worker as `sh -c RECEIVE sh REPO WORKTREE REF COMMIT MODE CHECKOUT` with the pack on stdin.
# MODE is none (nothing to read), unpack (a few objects) or index (a larger pack). CHECKOUT is `now`, or
# `defer`: the worktree is added without files and the job's runner checks them out before its first task.
RECEIVE = r"""
set -u
repo=$1 wt=$2 ref=$3 commit=$4 mode=$5 checkout=$6
if [ ! -f "$repo/HEAD" ]; then
  mkdir -p "${repo%/*}" && git init -q --bare "$repo" 2>/dev/null
  [ -f "$repo/HEAD" ] || { echo "offload: cannot create repository $repo" >&2; exit 1; }
  git -C "$repo" config gc.auto 0
  git -C "$repo" config core.logAllRefUpdates false
fi
case $mode in
  unpack) git -C "$repo" unpack-objects -q || exit 3 ;;
  index) git -C "$repo" index-pack --stdin --fix-thin >/dev/null || exit 3 ;;
esac
git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null || exit 3
git -C "$repo" update-ref "$ref" "$commit" || exit 1
mkdir -p "${wt%/*}" || exit 1
if [ "$checkout" = defer ]; then set -- --no-checkout; else set --; fi
if ! git -C "$repo" worktree add -q --detach "$@" "$wt" "$commit" >/dev/null; then
  git -C "$repo" update-ref -d "$ref"
  echo "offload: cannot create worktree $wt" >&2
  exit 1
fi
"""

# Runs on the worker as `sh -c HAVES sh REPO`: the commits it already has, one per line.
HAVES = r"""
[ -f "$1/HEAD" ] || exit 0
git -C "$1" for-each-ref --format='%(objectname)' refs/offload/
"""


def _git(args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, stdin: bytes | None = None,
         check: bool = True) -> subprocess.CompletedProcess[bytes]:
    full_env = dict(os.environ)
    full_env["GIT_OPTIONAL_LOCKS"] = "0"
    full_env.pop("GIT_DIR", None)
    full_env.pop("GIT_WORK_TREE", None)
    full_env.pop("GIT_INDEX_FILE", None)
    if env:
        full_env.update(env)
    try:
        p = subprocess.run(["git", *args], cwd=cwd, env=full_env, input=stdin or b"", capture_output=True)
    except FileNotFoundError:
        raise UsageError("git is not installed on this machine") from None
    if check and p.returncode != 0:
        msg = p.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SyncError("local", f"git {args[0]} failed: {msg[-1] if msg else p.returncode}")
    return p


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
    p = _git(["rev-parse", "--show-toplevel", "--absolute-git-dir", "--git-common-dir"], cwd=cwd, check=False)
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
    head_p = _git(["rev-parse", "-q", "--verify", "HEAD^{commit}"], cwd=root, check=False)
    head = head_p.stdout.decode().strip() or None
    branch_p = _git(["symbolic-ref", "-q", "--short", "HEAD"], cwd=root, check=False)
    branch = branch_p.stdout.decode().strip() or None
    with tempfile.TemporaryDirectory(prefix="offload-index-") as tmp:
        index = Path(tmp) / "index"
        real_index = git_dir_p / "index"
        if real_index.exists():
            shutil.copyfile(real_index, index)
        idx_env = dict(env, GIT_INDEX_FILE=str(index))
        _git(["add", "-A", "--", ":/"], cwd=root, env=idx_env)
        tree = _git(["write-tree"], cwd=root, env=idx_env).stdout.decode().strip()
    if head:
        head_tree = _git(["rev-parse", f"{head}^{{tree}}"], cwd=root, env=env).stdout.decode().strip()
        if head_tree == tree:
            return Snapshot(root, repo_id, head, head, branch, env, state)
        date = _git(["log", "-1", "--format=@%ct +0000", head], cwd=root, env=env).stdout.decode().strip()
        parents = ["-p", head]
    else:
        date, parents = "@0 +0000", []
    commit_env = dict(env, **SNAPSHOT_IDENTITY, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    msg = f"offload snapshot of {branch or head or 'an empty repository'}\n".encode()
    commit = _git(["commit-tree", tree, *parents], cwd=root, env=commit_env, stdin=msg).stdout.decode().strip()
    return Snapshot(root, repo_id, commit, head, branch, env, state)


def build_pack(snap: Snapshot, haves: Sequence[str]) -> bytes:
    """A thin pack of everything SNAP needs beyond HAVES (only haves that exist locally are used)."""
    usable: list[str] = []
    if haves:
        query = "".join(f"{h}\n" for h in haves).encode()
        p = _git(["cat-file", "--batch-check=%(objectname) %(objecttype)"], cwd=snap.root, env=snap.object_env,
                 stdin=query, check=False)
        usable = [ln.split()[0] for ln in p.stdout.decode().splitlines() if ln.endswith(" commit")]
    revs = f"{snap.commit}\n" + "".join(f"^{h}\n" for h in usable)
    p = _git(["pack-objects", "--stdout", "--revs", "--thin", "--delta-base-offset", "-q"], cwd=snap.root,
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


def _receive(transport: Transport, paths: JobPaths, repo: str, snap: Snapshot, pack: bytes, checkout: bool
             ) -> Result:
    count = pack_object_count(pack)
    mode = "none" if count == 0 else ("unpack" if count < 100 else "index")
    argv = ["sh", "-c", RECEIVE, "sh", repo, paths.worktree, f"refs/offload/jobs/{paths.job}", snap.commit, mode,
            "now" if checkout else "defer"]
    return transport.run(argv, stdin=pack if count else None, timeout=600)


def push_snapshot(transport: Transport, snap: Snapshot, paths: JobPaths, worker_key: str, *,
                  checkout: bool = True) -> SyncStats:
    """Make SNAP the content of the job's fresh worktree on the worker.

    Optimistic path: one round trip, assuming the worker still has what we sent it before. If it lacks a
    base object, ask it what it has and send again. With CHECKOUT false the worktree is added without its
    files, which the job's runner checks out before the first task (so a large tree costs the job, not the
    command that starts it).
    """
    repo = paths.repo(snap.repo_id)
    stats = SyncStats()
    pack = build_pack(snap, snap.remembered_haves(worker_key))
    result = _receive(transport, paths, repo, snap, pack, checkout)
    stats.round_trips += 1
    stats.pack_bytes += len(pack) if pack_object_count(pack) else 0
    if result.exit_code == RC_MISSING_OBJECTS:
        listed = transport.run(["sh", "-c", HAVES, "sh", repo], timeout=60)
        have_list = listed.text().split() if listed.ok else []
        pack = build_pack(snap, have_list)
        result = _receive(transport, paths, repo, snap, pack, checkout)
        stats.round_trips += 2
        stats.pack_bytes += len(pack) if pack_object_count(pack) else 0
        stats.retried = True
    if not result.ok:
        raise SyncError(transport.worker, f"cannot place the working tree on worker {transport.worker}: "
                        f"{result.error_line()}")
    stats.objects = pack_object_count(pack)
    snap.remember(worker_key, snap.commit)
    return stats
