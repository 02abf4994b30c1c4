"""Reproducing the local working tree on a worker: its snapshot (offload/runtime/snapshot.py) travels as a thin
pack of only the objects the worker lacks, into a bare repository there, and is checked out in the job's worktree.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from offload.errors import JobExists, SyncError
from offload.runtime.localgit import run_git
from offload.runtime.snapshot import Snapshot, take_snapshot
from offload.runtime.transport import Result, Step, Transport, run_steps
from offload.worker.exits import ReceiveExit
from offload.worker.layout import JobPaths
from offload.worker.scripts import worker_script

__all__ = ["Snapshot", "SyncStats", "build_pack", "push_snapshot", "take_snapshot"]

# A pack is kept as it comes (index-pack) from this many objects (git's own transfer.unpackLimit) or this many
# bytes; a smaller one is unpacked into loose objects. unpack-objects holds each object in memory and compresses
# it again; index-pack only reads it through.
INDEX_FROM_OBJECTS = 100
INDEX_FROM_BYTES = 1 << 20


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
    """What a sync cost (bytes of pack data sent, round trips made), and the warm worktree it leased."""

    pack_bytes: int = 0
    objects: int = 0
    round_trips: int = 0
    retried: bool = False
    worktree: str = ""
    then: Result | None = None  # the answer of the step sent with the sync (push_snapshot's THEN), when it went


def _receive(transport: Transport, paths: JobPaths, snap: Snapshot, pack: bytes,
             then: Step | None = None) -> tuple[Result, Result | None]:
    """The receive step's answer, and THEN's when it was sent along (it runs after the receive, on the worker)."""
    count = pack_object_count(pack)
    mode = "none" if count == 0 else ("unpack" if count < INDEX_FROM_OBJECTS and len(pack) < INDEX_FROM_BYTES
                                      else "index")
    argv = ["sh", "-c", worker_script("receive.sh"), "sh", paths.workspace, snap.repo_id, paths.job, snap.commit,
            mode]
    receive = Step(argv, pack if count else None, 600)
    if then is None:
        return transport.run(receive.argv, stdin=receive.stdin, timeout=receive.timeout), None
    first, after = run_steps(transport, [receive, then])
    return first, after


def push_snapshot(transport: Transport, snap: Snapshot, paths: JobPaths, worker_key: str,
                  then: Step | None = None) -> SyncStats:
    """Put SNAP in the worker's repository under the job's ref, and lease the job a warm worktree of it
    (`SyncStats.worktree`); the job's runner moves that worktree to the snapshot before the first task. THEN, a
    step that needs the lease (the launch), goes with the first send, in the same round trip; its answer is
    `SyncStats.then` (it must find out on the worker whether the sync leased the job a worktree).

    Optimistic path: one round trip, assuming the worker still has what we sent it before. If it lacks a
    base object, ask it what it has and send again.
    """
    stats = SyncStats()

    def worker_haves() -> list[str]:
        listed = transport.run(["sh", "-c", worker_script("haves.sh"), "sh", paths.workspace, snap.repo_id],
                               timeout=60)
        stats.round_trips += 1
        return listed.text().split() if listed.ok else []

    # Nothing remembered (a first sync, or a pruned cache): ask first rather than send the whole history.
    haves = snap.remembered_haves(worker_key) or worker_haves()
    pack = build_pack(snap, haves)
    result, stats.then = _receive(transport, paths, snap, pack, then)
    stats.round_trips += 1
    stats.pack_bytes += len(pack) if pack_object_count(pack) else 0
    if result.exit_code == ReceiveExit.MISSING_OBJECTS:
        pack = build_pack(snap, worker_haves())
        result, _ = _receive(transport, paths, snap, pack)
        stats.then = None  # it found no lease: it goes again after this sync
        stats.round_trips += 1
        stats.pack_bytes += len(pack) if pack_object_count(pack) else 0
        stats.retried = True
    if result.exit_code == ReceiveExit.JOB_EXISTS:
        raise JobExists(transport.worker, f"job {paths.job} already exists on worker {transport.worker}",
                        hint=f"pick another --job, or remove it with `offload clean {paths.job}`")
    if not result.ok:
        raise SyncError(transport.worker, f"cannot place the working tree on worker {transport.worker}: "
                        f"{result.error_line()}")
    stats.objects = pack_object_count(pack)
    stats.worktree = next((line.split("\t", 1)[1] for line in result.text().splitlines()
                           if line.startswith("tree\t")), "")
    if not stats.worktree:
        raise SyncError(transport.worker, f"worker {transport.worker} leased no worktree for job {paths.job}")
    snap.remember(worker_key, snap.commit)
    return stats
