"""Snapshot and sync against a local bare repository: exact state arrives in a leased warm worktree, cold or warm,
and the local repository is never written."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from offload.errors import JobExists, UsageError
from offload.worker.layout import JobPaths
from offload.runtime.sync import build_pack, pack_object_count, push_snapshot, take_snapshot
from offload.runtime.transport import LocalTransport
from offload.worker.scripts import library
from tests.workers import git, make_repo, tree_digest

LIB = library()


def lib(body: str, *args: str) -> None:
    """Run BODY after the worker library, as the worker would."""
    subprocess.run(["sh", "-c", f"{LIB}\n{body}", "sh", *args], check=True, capture_output=True, timeout=60)


def sync(t: LocalTransport, snap, paths: JobPaths, *, fresh: bool = False):  # noqa: ANN001
    """What a job does with its worktree: the sync leases it, the runner moves it to the snapshot and, once the
    job ends, gives it back. Returns the sync's stats, and the paths with the leased worktree."""
    stats = push_snapshot(t, snap, paths, "w")
    lib('move_tree "$1" "$2" "$3" && release_tree "$1" "$4"', stats.worktree, snap.commit, "1" if fresh else "0",
        paths.job)
    return stats, JobPaths(paths.workspace, paths.job, stats.worktree)


def _dirty(repo: Path) -> None:
    (repo / "file0.txt").write_text("changed, unstaged\n")
    (repo / "file1.txt").write_text("changed, staged\n")
    git(repo, "add", "file1.txt")
    (repo / "file2.txt").unlink()                       # deleted, not staged
    (repo / "untracked.txt").write_text("brand new\n")
    (repo / "tool.sh").write_text("#!/bin/sh\n")
    (repo / "tool.sh").chmod(0o755)
    (repo / "run.sh").chmod(0o644)                      # mode change
    (repo / ".gitignore").write_text("build/\n*.log\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.bin").write_text("ignored\n")
    (repo / "debug.log").write_text("ignored\n")


def _files(root: Path) -> dict[str, tuple[bytes, bool]]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel == ".git" or rel.startswith(".git/") or not p.is_file():
            continue
        out[rel] = (p.read_bytes(), bool(p.stat().st_mode & stat.S_IXUSR))
    return out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", files=4)


def test_worktree_matches_the_working_tree_exactly(repo: Path, tmp_path: Path) -> None:
    _dirty(repo)
    before = tree_digest(repo)
    snap = take_snapshot(repo / "src")
    stats, paths = sync(LocalTransport(), snap, JobPaths(str(tmp_path / "ws"), "job1"))
    assert tree_digest(repo) == before, "the local repository (files, index, refs, objects) must not change"
    expected = {k: v for k, v in _files(repo).items() if not k.startswith("build/") and k != "debug.log"}
    got = _files(Path(paths.worktree))
    assert got == expected
    assert "file2.txt" not in got and got["tool.sh"][1] and not got["run.sh"][1]
    assert stats.round_trips == 2 and stats.pack_bytes > 0  # a first sync asks what the worker has
    # the local status is unchanged too: staged stays staged, unstaged stays unstaged
    assert git(repo, "status", "--porcelain") == (
        " M file0.txt\nM  file1.txt\n D file2.txt\n M run.sh\n?? .gitignore\n?? tool.sh\n?? untracked.txt\n")


def test_clean_tree_uses_head_itself(repo: Path) -> None:
    snap = take_snapshot(repo)
    assert snap.commit == git(repo, "rev-parse", "HEAD").strip() == snap.head
    assert snap.branch == "main"


def test_repository_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    before = tree_digest(repo)
    snap = take_snapshot(repo)
    assert snap.head is None
    _, paths = sync(LocalTransport(), snap, JobPaths(str(tmp_path / "ws"), "j"))
    assert (Path(paths.worktree) / "a.txt").read_text() == "a\n"
    assert tree_digest(repo) == before


def test_same_tree_gives_same_snapshot_and_sends_nothing(repo: Path, tmp_path: Path) -> None:
    _dirty(repo)
    first = take_snapshot(repo)
    second = take_snapshot(repo)
    assert first.commit == second.commit
    t = LocalTransport()
    sync(t, first, JobPaths(str(tmp_path / "ws"), "a"))
    stats, paths = sync(t, second, JobPaths(str(tmp_path / "ws"), "b"))
    assert stats.pack_bytes == 0 and stats.objects == 0
    assert (Path(paths.worktree) / "untracked.txt").exists()


def test_incremental_sync_sends_only_the_change(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "big", files=2000)
    t = LocalTransport()
    ws = str(tmp_path / "ws")
    full, a = sync(t, take_snapshot(repo), JobPaths(ws, "a"))
    (repo / "file7.txt").write_text("content 7, edited\n")
    small, b = sync(t, take_snapshot(repo), JobPaths(ws, "b"))
    assert full.pack_bytes > 20_000
    assert 0 < small.pack_bytes <= 4096 and small.round_trips == 1, small
    assert b.worktree == a.worktree, "the second job gets the warm worktree the first gave back"
    assert (Path(b.worktree) / "file7.txt").read_text() == "content 7, edited\n"


def test_worker_that_lost_its_objects_is_resent_everything(repo: Path, tmp_path: Path) -> None:
    t = LocalTransport()
    ws = tmp_path / "ws"
    sync(t, take_snapshot(repo), JobPaths(str(ws), "a"))
    # the worker was rebuilt: its repositories are gone, but our cache still remembers what it had
    subprocess.run(["rm", "-rf", str(ws)], check=True)
    (repo / "new.txt").write_text("x\n")
    stats, b = sync(t, take_snapshot(repo), JobPaths(str(ws), "b"))
    assert stats.retried and stats.round_trips == 3
    assert (Path(b.worktree) / "new.txt").exists() and (Path(b.worktree) / "run.sh").exists()


def test_an_existing_job_is_an_error_not_an_overwrite(repo: Path, tmp_path: Path) -> None:
    t = LocalTransport()
    paths = JobPaths(str(tmp_path / "ws"), "same")
    stats = push_snapshot(t, take_snapshot(repo), paths, "w")  # leased, and still held
    (Path(stats.worktree) / "keep.txt").write_text("mine\n")
    bare = Path(paths.repo(take_snapshot(repo).repo_id))
    ref = git(bare, "rev-parse", paths.ref)
    (repo / "file0.txt").write_text("a different snapshot\n")
    with pytest.raises(JobExists, match="job same already exists"):
        push_snapshot(t, take_snapshot(repo), paths, "w")
    assert (Path(stats.worktree) / "keep.txt").read_text() == "mine\n"
    assert git(bare, "rev-parse", paths.ref) == ref  # the job's ref still names its own snapshot


def test_outside_a_repository(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not inside a git repository"):
        take_snapshot(tmp_path)


def test_pack_header_parsing(repo: Path) -> None:
    snap = take_snapshot(repo)
    pack = build_pack(snap, [])
    assert pack[:4] == b"PACK" and pack_object_count(pack) >= 5
    assert pack_object_count(build_pack(snap, [snap.commit])) == 0
    assert pack_object_count(b"") == 0


def test_the_snapshot_cache_stays_bounded_and_a_pruned_cache_still_sends_little(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_SNAPSHOT_CACHE_MB", "1")
    repo = make_repo(tmp_path / "repo", files=200)
    git(repo, "add", "-A")
    t = LocalTransport()
    ws = str(tmp_path / "ws")
    sync(t, take_snapshot(repo), JobPaths(ws, "a"))
    sizes = []
    for i in range(3):
        (repo / "blob.bin").write_bytes(os.urandom(600_000) + bytes([i]))  # untracked, new each time
        snap = take_snapshot(repo)
        sizes.append(sum(f.stat().st_size for f in snap.state_dir.rglob("*") if f.is_file()))
        stats, paths = sync(t, snap, JobPaths(ws, f"b{i}"))
        assert stats.pack_bytes < 700_000, "only the new file travels, even from a pruned cache"
    assert max(sizes) < 2 * (1 << 20), sizes
    assert (Path(paths.worktree) / "blob.bin").read_bytes()[-1] == 2


def _expected(repo: Path) -> dict[str, tuple[bytes, bool]]:
    """What a job must see of REPO: every file on disk but what git ignores (build/, *.log)."""
    return {k: v for k, v in _files(repo).items() if not k.startswith("build/") and not k.endswith(".log")}


def test_a_warm_worktree_moves_exactly_to_each_snapshot(repo: Path, tmp_path: Path) -> None:
    t = LocalTransport()
    ws = str(tmp_path / "ws")
    _dirty(repo)
    _, a = sync(t, take_snapshot(repo), JobPaths(ws, "a"))
    tree = Path(a.worktree)
    assert _files(tree).items() >= _expected(repo).items()
    # What job a left: a build output git ignores, and a file it does not.
    (tree / "build").mkdir()
    (tree / "build" / "cache.o").write_text("compiled\n")
    (tree / "leftover.txt").write_text("made by job a\n")
    (tree / "file3.txt").write_text("edited by job a\n")
    old = 1_000_000_000
    os.utime(tree / "src" / "module.py", (old, old))
    # Between the jobs the developer edits, deletes, adds and changes a mode.
    (repo / "file0.txt").write_text("edited again\n")
    (repo / "untracked.txt").unlink()
    (repo / "file1.txt").unlink()
    (repo / "new" / "deep").mkdir(parents=True)
    (repo / "new" / "deep" / "added.txt").write_text("added\n")
    (repo / "tool.sh").chmod(0o644)
    _, b = sync(t, take_snapshot(repo), JobPaths(ws, "b"))
    assert b.worktree == a.worktree
    assert {k: v for k, v in _files(tree).items() if not k.startswith("build/")} == _expected(repo)
    assert (tree / "build" / "cache.o").read_text() == "compiled\n", "ignored files are the cache: they stay"
    assert int((tree / "src" / "module.py").stat().st_mtime) == old, "an unchanged file keeps its mtime"

    _, c = sync(t, take_snapshot(repo), JobPaths(ws, "c"), fresh=True)
    assert c.worktree == a.worktree and not (tree / "build").exists()
    assert _files(tree) == _expected(repo)


def _hold(ws: str, tree: str, job: str, *, runner: int | None, age: float = 0) -> None:
    """Mark TREE as leased by JOB, as a running (RUNNER alive) or crashed job left it."""
    lease = Path(f"{tree}.lease")
    lease.mkdir()
    (lease / "job").write_text(f"{job}\n")
    jobs = Path(ws) / "jobs" / job
    (jobs / "tasks" / "main").mkdir(parents=True)
    (jobs / "tasks.list").write_text("main\n")
    (jobs / "tasks" / "main" / "state").write_text("running\n")
    (jobs / "runner.pid").write_text(f"{runner or 999999999}\n")
    if age:
        when = time.time() - age
        for p in (lease, jobs):
            os.utime(p, (when, when))


def test_leases_are_never_shared_and_a_crashed_jobs_lease_is_recovered(repo: Path, tmp_path: Path) -> None:
    t = LocalTransport()
    ws = str(tmp_path / "ws")
    first = push_snapshot(t, take_snapshot(repo), JobPaths(ws, "first"), "w")
    second = push_snapshot(t, take_snapshot(repo), JobPaths(ws, "second"), "w")  # first still holds its tree
    assert first.worktree != second.worktree
    lib('release_tree "$1" first && release_tree "$2" second', first.worktree, second.worktree)
    runner = subprocess.Popen(["sleep", "60"])
    try:
        _hold(ws, first.worktree, "alive", runner=runner.pid)
        _hold(ws, second.worktree, "crashed", runner=None, age=600)
        third = push_snapshot(t, take_snapshot(repo), JobPaths(ws, "third"), "w")
        assert third.worktree == second.worktree, "the crashed job's lease is taken over"
        fourth = push_snapshot(t, take_snapshot(repo), JobPaths(ws, "fourth"), "w")
        assert fourth.worktree not in (first.worktree, second.worktree), "a running job keeps its worktree"
    finally:
        runner.kill()
        runner.wait()


def test_concurrent_leases_of_one_repository_get_different_worktrees(repo: Path, tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    snap = take_snapshot(repo)
    push_snapshot(LocalTransport(), snap, JobPaths(ws, "warmup"), "w")  # the repository exists on the worker
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        trees = list(pool.map(lambda i: push_snapshot(LocalTransport(), snap, JobPaths(ws, f"j{i}"), "w").worktree,
                              range(8)))
    assert len(set(trees)) == 8


def test_the_tree_is_written_without_hashing_fresh_files_again(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A file written in the same second as the snapshot's index is racily clean there: a git that writes that
    index would hash it again (write-tree, 85 ms for 30 MB). The index is thrown away, so once every file is added
    it is dated 0, which has no racily clean entries; the tree is the same."""
    repo = make_repo(tmp_path / "repo", files=3)
    (repo / "fresh.bin").write_bytes(os.urandom(5 << 20))
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True, check=True).stdout.strip()
    seen = tmp_path / "index-mtimes"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(
        "#!/bin/sh\n"
        f'for a; do [ "$a" = write-tree ] && stat -c %Y "$GIT_INDEX_FILE" >> "{seen}"; done\n'
        f'exec "{real}" "$@"\n')
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    snap = take_snapshot(repo)
    assert seen.read_text().split() == ["0"], "write-tree reads an index dated 0"
    monkeypatch.undo()
    blob = git(repo, "hash-object", "fresh.bin").strip()
    listed = subprocess.run(["git", "ls-tree", snap.commit, "fresh.bin"], cwd=repo,
                            env={**os.environ, **snap.object_env}, capture_output=True, text=True, check=True).stdout
    assert listed.split()[2] == blob


def test_a_large_thin_pack_arrives_in_a_workspace_whose_path_has_a_colon(tmp_path: Path) -> None:
    """A pack of INDEX_FROM_BYTES or more is indexed apart and reads its bases through the repository: a colon in
    the path must not split it."""
    repo = make_repo(tmp_path / "repo", files=50)
    t = LocalTransport()
    ws = str(tmp_path / "a:b" / "ws")
    sync(t, take_snapshot(repo), JobPaths(ws, "a"))
    (repo / "file7.txt").write_text("content 7, edited\n")  # the new tree is a delta against the worker's
    data = os.urandom(2 << 20)
    (repo / "big.bin").write_bytes(data)
    stats, b = sync(t, take_snapshot(repo), JobPaths(ws, "b"))
    assert stats.pack_bytes >= 2 << 20 and not stats.retried, stats
    assert (Path(b.worktree) / "big.bin").read_bytes() == data
    assert (Path(b.worktree) / "file7.txt").read_text() == "content 7, edited\n"
