"""Shallow sync: a worker that lacks the snapshot's history gets its tree and a few commits, cut at a boundary its
bare repository records in git's own `shallow` file; later syncs stay thin, a deeper request deepens it, and a
worker that holds whole histories keeps them whole. Run through dash and busybox sh, as worker images have them."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import pytest

from offload.outputs import FULL_HISTORY
from offload.runtime.snapshot import snapshot_of_ref
from offload.runtime.sync import SyncStats, push_snapshot, take_snapshot
from offload.runtime.transport import LocalTransport, Result
from offload.worker.layout import JobPaths
from offload.worker.scripts import library, worker_script
from tests.workers import archive_size, git, make_long_history, make_repo

COMMITS = 120


class ShellTransport(LocalTransport):
    """This machine, with the worker's scripts run by SHELL instead of /bin/sh."""

    def __init__(self, shell: Sequence[str]) -> None:
        super().__init__()
        self.shell = list(shell)

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None) -> Result:
        argv = [*self.shell, *argv[1:]] if argv and argv[0] == "sh" else list(argv)
        return super().run(argv, stdin=stdin, timeout=timeout)


@pytest.fixture(params=["dash", "busybox"])
def t(request: pytest.FixtureRequest) -> LocalTransport:
    shell = ["dash"] if request.param == "dash" else ["busybox", "sh"]
    if not shutil.which(shell[0]):
        pytest.skip(f"{shell[0]} is not installed")
    return ShellTransport(shell)


@pytest.fixture
def long_repo(tmp_path: Path) -> Path:
    return make_long_history(tmp_path / "long", commits=COMMITS)


def sync(t: LocalTransport, snap, ws: Path, job: str, depth: int = 1) -> tuple[SyncStats, Path]:  # noqa: ANN001
    """Sync SNAP as job JOB and move its leased worktree to the snapshot, as the job's runner does."""
    stats = push_snapshot(t, snap, JobPaths(str(ws), job), "w", depth)
    subprocess.run(["sh", "-c", f'{library()}\nmove_tree "$1" "$2" 0 && release_tree "$1" "$3"', "sh",
                    stats.worktree, snap.commit, job], check=True, capture_output=True, timeout=60)
    return stats, Path(stats.worktree)


def bare(ws: Path) -> Path:
    (repo,) = (ws / "repos").iterdir()
    return repo


def shallow_file(ws: Path) -> list[str]:
    path = bare(ws) / "shallow"
    return sorted(path.read_text().split()) if path.exists() else []


def log_count(tree: Path) -> int:
    return int(git(tree, "rev-list", "--count", "HEAD").strip())


def test_first_sync_sends_the_tree_not_the_history(t: LocalTransport, long_repo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    head = git(long_repo, "rev-parse", "HEAD").strip()
    tree_size = archive_size(long_repo)
    stats, tree = sync(t, take_snapshot(long_repo), ws, "a")
    assert stats.pack_bytes <= 1.2 * tree_size, (stats.pack_bytes, tree_size)
    assert shallow_file(ws) == [head] == stats.shallow
    assert log_count(tree) == 1
    assert git(tree, "status", "--porcelain") == ""
    assert (tree / "file0.txt").read_bytes() == (long_repo / "file0.txt").read_bytes()
    # The whole history would have been some thirty times as much.
    whole = push_snapshot(t, take_snapshot(long_repo), JobPaths(str(tmp_path / "ws2"), "b"), "other", FULL_HISTORY)
    assert whole.pack_bytes > 20 * tree_size and whole.shallow == []


def test_a_one_line_change_sends_a_thin_pack(t: LocalTransport, long_repo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    first, _ = sync(t, take_snapshot(long_repo), ws, "a")
    with (long_repo / "file1.txt").open("a") as f:
        f.write("one more line\n")
    second, tree = sync(t, take_snapshot(long_repo), ws, "b")
    assert second.round_trips == 1 and 0 < second.pack_bytes < first.pack_bytes / 10, (first, second)
    # A changed working tree: its snapshot commit comes on top of the one commit of history asked for.
    assert log_count(tree) == 2 and git(tree, "log", "-1", "--format=%s", "HEAD~1").strip() == f"commit {COMMITS - 1}"
    assert (tree / "file1.txt").read_text().endswith("one more line\n")
    # A new commit on top of what the worker has: it joins the history there, cut where it was.
    git(long_repo, "commit", "-qam", "one more")
    third, tree = sync(t, take_snapshot(long_repo), ws, "c")
    assert 0 < third.pack_bytes < first.pack_bytes / 10
    assert shallow_file(ws) == [git(long_repo, "rev-parse", "HEAD~1").strip()] and log_count(tree) == 2
    # Two more commits: the worker lacks the one between, so the new one is cut at itself.
    for i in range(2):
        git(long_repo, "commit", "-q", "--allow-empty", "-m", f"later {i}")
    fourth, tree = sync(t, take_snapshot(long_repo), ws, "d")
    assert shallow_file(ws) == sorted([git(long_repo, "rev-parse", "HEAD").strip(),
                                       git(long_repo, "rev-parse", "HEAD~3").strip()])
    assert log_count(tree) == 1 and 0 < fourth.pack_bytes < first.pack_bytes / 10


def test_depth_three_then_full_deepens(t: LocalTransport, long_repo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    one, _ = sync(t, take_snapshot(long_repo), ws, "a", depth=1)
    three, tree = sync(t, take_snapshot(long_repo), ws, "b", depth=3)
    assert log_count(tree) == 3
    assert shallow_file(ws) == [git(long_repo, "rev-parse", "HEAD~2").strip()]
    assert 0 < three.pack_bytes < 3 * one.pack_bytes  # two commits' changes, not the tree again
    full, tree = sync(t, take_snapshot(long_repo), ws, "c", depth=FULL_HISTORY)
    assert full.round_trips == 1, "deepening goes with the sync itself"
    assert log_count(tree) == COMMITS and shallow_file(ws) == [] and full.shallow == []
    subprocess.run(["git", "-C", str(bare(ws)), "fsck", "--connectivity-only"], check=True, capture_output=True)


def test_a_worker_with_whole_history_stays_whole(t: LocalTransport, long_repo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sync(t, take_snapshot(long_repo), ws, "a", depth=FULL_HISTORY)
    for i in range(3):
        (long_repo / "file2.txt").write_text(f"edit {i}\n")
        git(long_repo, "commit", "-qam", f"local {i}")
    stats, tree = sync(t, take_snapshot(long_repo), ws, "b", depth=1)
    assert shallow_file(ws) == [] and stats.shallow == []
    assert log_count(tree) == COMMITS + 3
    assert stats.pack_bytes < archive_size(long_repo), "still only what the worker lacks"


def test_ref_older_and_newer_than_the_boundary(t: LocalTransport, long_repo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sync(t, take_snapshot(long_repo), ws, "a")
    old = git(long_repo, "rev-parse", "HEAD~10").strip()
    stats, tree = sync(t, snapshot_of_ref(long_repo, "HEAD~10"), ws, "b", depth=2)
    assert git(tree, "rev-parse", "HEAD").strip() == old and log_count(tree) == 2
    assert (tree / "file0.txt").read_bytes() == git(long_repo, "show", "HEAD~10:file0.txt").encode()
    git(long_repo, "checkout", "-qb", "topic")
    (long_repo / "topic.txt").write_text("topic\n")
    git(long_repo, "add", "topic.txt")
    git(long_repo, "commit", "-qm", "topic")
    git(long_repo, "checkout", "-q", "main")
    stats, tree = sync(t, snapshot_of_ref(long_repo, "topic"), ws, "c")
    assert (tree / "topic.txt").read_text() == "topic\n" and log_count(tree) == 2  # main, there already
    assert stats.pack_bytes < archive_size(long_repo) / 4


def test_two_first_syncs_at_once(t: LocalTransport, long_repo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    git(long_repo, "branch", "side", "HEAD~1")
    git(long_repo, "commit", "-q", "--allow-empty", "-m", "on main")
    snap = snapshot_of_ref(long_repo, "main")
    other = snapshot_of_ref(long_repo, "side")  # neither holds the other's commit
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(push_snapshot, t, s, JobPaths(str(ws), f"j{i}"), f"key{i}", 1)
                for i, s in enumerate((snap, other))]
        stats = [j.result(timeout=120) for j in jobs]
    assert stats[0].worktree != stats[1].worktree
    assert shallow_file(ws) == sorted([snap.commit, other.commit])
    for s in (snap, other):
        assert git(bare(ws), "rev-list", "--count", s.commit).strip() == "1"
    subprocess.run(["git", "-C", str(bare(ws)), "fsck", "--connectivity-only"], check=True, capture_output=True)


def test_gc_on_the_worker_keeps_the_shallow_repository_working(t: LocalTransport, long_repo: Path,
                                                               tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sync(t, take_snapshot(long_repo), ws, "a", depth=2)
    subprocess.run(["git", "-C", str(bare(ws)), "gc", "-q", "--prune=now"], check=True, capture_output=True)
    assert len(shallow_file(ws)) == 1
    (long_repo / "file3.txt").write_text("after gc\n")
    stats, tree = sync(t, take_snapshot(long_repo), ws, "b", depth=2)
    assert stats.round_trips == 1 and (tree / "file3.txt").read_text() == "after gc\n" and log_count(tree) == 3


def test_a_shallow_local_clone_syncs_in_full(t: LocalTransport, long_repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "5", f"file://{long_repo}", str(clone)], check=True,
                   capture_output=True)
    stats, tree = sync(t, take_snapshot(clone), tmp_path / "ws", "a", depth=FULL_HISTORY)
    assert log_count(tree) == 5 and len(stats.shallow) == 1


def test_a_worker_that_lost_its_shallow_history_is_resent(t: LocalTransport, long_repo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sync(t, take_snapshot(long_repo), ws, "a")
    shutil.rmtree(ws)  # the worker was rebuilt; this machine still remembers what it had
    (long_repo / "new.txt").write_text("x\n")
    stats, tree = sync(t, take_snapshot(long_repo), ws, "b")
    assert stats.retried and (tree / "new.txt").exists() and log_count(tree) == 2


def test_a_plain_repository_keeps_working(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    stats, tree = sync(LocalTransport(), take_snapshot(repo), tmp_path / "ws", "a")
    assert log_count(tree) == 1 and stats.shallow == []  # its one commit has no parent to lack


def test_a_commit_whose_tree_is_missing_is_refused_as_missing_objects(t: LocalTransport, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    sync(t, take_snapshot(repo), ws, "a")
    # A commit the worker holds whose tree it lacks: the check after the pack must find the hole.
    body = "tree " + "1" * 40 + "\nauthor a <a@b> 0 +0000\ncommitter a <a@b> 0 +0000\n\nbroken\n"
    broken = subprocess.run(["git", "-C", str(bare(ws)), "hash-object", "-t", "commit", "-w", "--literally",
                             "--stdin"], input=body.encode(), capture_output=True, check=True).stdout.decode().strip()
    argv = ["sh", "-c", worker_script("receive.sh"), "sh", str(ws), bare(ws).name.removesuffix(".git"), "b", broken,
            "none"]
    result = t.run(argv, timeout=60)
    assert result.exit_code == 3 and "lacks objects the snapshot needs" in result.stderr.decode()


def test_the_check_for_missing_objects_ignores_worktrees_being_added(t: LocalTransport, tmp_path: Path) -> None:
    """Receives lease worktrees while others check their packs: a worktree another receive is adding, whose HEAD
    names no commit yet, is none of the check's business."""
    repo = make_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    sync(t, take_snapshot(repo), ws, "a")
    half = bare(ws) / "worktrees" / "half"
    half.mkdir(parents=True)
    (half / "HEAD").write_text("0" * 40 + "\n")  # as `git worktree add` writes it before the checkout
    (half / "commondir").write_text("../..\n")
    (half / "gitdir").write_text(str(tmp_path / "elsewhere" / ".git") + "\n")
    (repo / "new.txt").write_text("x\n")
    stats, tree = sync(t, take_snapshot(repo), ws, "b")
    assert (tree / "new.txt").read_text() == "x\n"
