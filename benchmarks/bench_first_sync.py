#!/usr/bin/env python3
"""What the first sync to a worker sends, against the tree it carries, over a real sshd worker.

Builds (or reuses, under /var/cache/offload/bench-first-sync/) a repository whose history is many times its tree:
commits that rewrite files with fresh random text, so neither deltas nor compression shrink the history. Then
prints, in the same run:
  - `git archive HEAD | gzip` of its tree: the baseline, what the tree alone weighs;
  - the bytes of pack the first sync sends at depth 1 (the default) and at `full` (what every first sync sent
    before: the whole history), each into an empty worker repository, with the time each took;
  - their ratios to the baseline. Target: depth 1 <= 1.2x.

`first_sync_figures(...)` returns the same numbers for another benchmark to use (benchmarks/bench_link.py runs it
over a simulated wide-area link by passing a proxy command).

Run as root on a machine with openssh-server and git: `python3 benchmarks/bench_first_sync.py`. BENCH_COMMITS,
BENCH_FILES and BENCH_FILE_BYTES change the repository (defaults 8000, 400 and 8192: a tree of about 2.5 MB,
some 20x as much history).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench_common import Bench  # noqa: E402  (also puts the project on sys.path)
from tests.workers import (SshdWorker, archive_size, git, make_long_history, sshd_record,  # noqa: E402
                           start_sshd)

CACHE = Path("/var/cache/offload/bench-first-sync")
COMMITS = int(os.environ.get("BENCH_COMMITS", "8000"))
FILES = int(os.environ.get("BENCH_FILES", "400"))
FILE_BYTES = int(os.environ.get("BENCH_FILE_BYTES", "8192"))
TARGET = 1.2


@dataclass(frozen=True)
class FirstSyncFigures:
    """Bytes and seconds of a first sync at depth 1 and at full, next to the tree's `git archive | gzip`."""

    commits: int
    files: int
    archive_bytes: int
    history_bytes: int        # the repository's own packed objects: what the history weighs at rest
    depth1_bytes: int
    depth1_seconds: float
    full_bytes: int
    full_seconds: float

    @property
    def depth1_ratio(self) -> float:
        return self.depth1_bytes / self.archive_bytes

    @property
    def full_ratio(self) -> float:
        return self.full_bytes / self.archive_bytes


def long_history_repo(commits: int = COMMITS, files: int = FILES, file_bytes: int = FILE_BYTES,
                      cache: Path = CACHE) -> Path:
    """The benchmark's repository, built once per shape and kept under CACHE."""
    path = cache / f"repo-{commits}c-{files}f-{file_bytes}b"
    if (path / ".git" / "refs" / "heads" / "main").exists() or (path / ".git" / "packed-refs").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    building = path.with_name(path.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    make_long_history(building, commits=commits, files=files, file_bytes=file_bytes)
    os.replace(building, path)
    return path


def _packed_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / ".git" / "objects" / "pack").glob("*.pack"))


def first_sync_figures(repo: Path | None = None, *, bench: Bench | None = None, worker: SshdWorker | None = None,
                       proxy_command: str | None = None) -> FirstSyncFigures:
    """Sync REPO (default: `long_history_repo()`) for the first time to a real sshd worker (WORKER, else one
    started here and stopped after), at depth 1 and at full, each into an empty repository of the worker, over
    one connection (through PROXY_COMMAND when given: a simulated link)."""
    from offload.outputs import FULL_HISTORY, WorkerRecord
    from offload.runtime.connection import ConnectOptions, open_connection
    from offload.runtime.sync import push_snapshot, take_snapshot
    from offload.runtime.transport import SshTransport
    from offload.worker.layout import JobPaths

    repo = repo or long_history_repo()
    own_bench = bench is None
    bench = bench or Bench.create("offload-bench-first-sync-")
    own_worker = worker is None
    worker = worker or start_sshd(base=bench.base / "sshd", user=bench.user, client_key=bench.key)
    saved = {k: os.environ.get(k) for k in ("HOME", "OFFLOAD_CONFIG_DIR", "OFFLOAD_CACHE_DIR")}
    os.environ.update({k: bench.env[k] for k in saved})
    try:
        record = WorkerRecord.from_dict(sshd_record(worker, proxy_command=proxy_command))
        conn = open_connection(record, ConnectOptions(identity=bench.key.private))
        transport = SshTransport(record.name, conn)
        snap = take_snapshot(repo)
        figures: dict[str, tuple[int, float]] = {}
        try:
            for name, depth in (("depth1", 1), ("full", FULL_HISTORY)):
                # An empty repository on the worker each time, and nothing remembered of it here.
                workspace = f"{record.workspace}/first-sync-{name}-{os.getpid()}"
                start = time.perf_counter()
                stats = push_snapshot(transport, snap, JobPaths(workspace, f"bench-{name}"), f"bench:{workspace}",
                                      depth)
                figures[name] = (stats.pack_bytes, time.perf_counter() - start)
        finally:
            conn.close()
        commits = int(git(repo, "rev-list", "--count", "HEAD").strip())
        files = len(git(repo, "ls-files").splitlines())
        return FirstSyncFigures(commits, files, archive_size(repo), _packed_bytes(repo), *figures["depth1"],
                                *figures["full"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if own_worker:
            worker.stop()
        if own_bench:
            shutil.rmtree(bench.base, ignore_errors=True)


def main() -> None:
    started = time.perf_counter()
    repo = long_history_repo()
    built = time.perf_counter() - started
    f = first_sync_figures(repo)
    mb = 1e6
    print(f"repository: {f.files} files, {f.commits} commits, history packed {f.history_bytes / mb:.1f} MB "
          f"({f.history_bytes / f.archive_bytes:.0f}x the tree); ready in {built:.1f} s ({repo})")
    print(f"  baseline: git archive HEAD | gzip        {f.archive_bytes / mb:8.2f} MB")
    print(f"  first sync, depth 1 (default)            {f.depth1_bytes / mb:8.2f} MB  ratio {f.depth1_ratio:5.2f}  "
          f"{f.depth1_seconds:6.2f} s   (target <= {TARGET})")
    print(f"  first sync, full (what it sent before)   {f.full_bytes / mb:8.2f} MB  ratio {f.full_ratio:5.2f}  "
          f"{f.full_seconds:6.2f} s")
    print(f"  full / depth 1: {f.full_bytes / f.depth1_bytes:.1f}x the bytes, "
          f"{f.full_seconds / f.depth1_seconds:.1f}x the time; "
          f"{'meets' if f.depth1_ratio <= TARGET else 'MISSES'} the target")


if __name__ == "__main__":
    main()
