"""Snapshot and sync against a local bare repository: exact state arrives, the local repo is never written."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from offload.errors import JobExists, UsageError
from offload.worker.layout import JobPaths
from offload.runtime.sync import build_pack, pack_object_count, push_snapshot, take_snapshot
from offload.runtime.transport import LocalTransport
from tests.workers import git, make_repo, tree_digest


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
    paths = JobPaths(str(tmp_path / "ws"), "job1")
    stats = push_snapshot(LocalTransport(), snap, paths, "w")
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
    paths = JobPaths(str(tmp_path / "ws"), "j")
    push_snapshot(LocalTransport(), snap, paths, "w")
    assert (Path(paths.worktree) / "a.txt").read_text() == "a\n"
    assert tree_digest(repo) == before


def test_same_tree_gives_same_snapshot_and_sends_nothing(repo: Path, tmp_path: Path) -> None:
    _dirty(repo)
    first = take_snapshot(repo)
    second = take_snapshot(repo)
    assert first.commit == second.commit
    t = LocalTransport()
    push_snapshot(t, first, JobPaths(str(tmp_path / "ws"), "a"), "w")
    stats = push_snapshot(t, second, JobPaths(str(tmp_path / "ws"), "b"), "w")
    assert stats.pack_bytes == 0 and stats.objects == 0
    assert (tmp_path / "ws" / "worktrees" / "b" / "untracked.txt").exists()


def test_incremental_sync_sends_only_the_change(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "big", files=2000)
    t = LocalTransport()
    ws = str(tmp_path / "ws")
    full = push_snapshot(t, take_snapshot(repo), JobPaths(ws, "a"), "w")
    (repo / "file7.txt").write_text("content 7, edited\n")
    small = push_snapshot(t, take_snapshot(repo), JobPaths(ws, "b"), "w")
    assert full.pack_bytes > 20_000
    assert 0 < small.pack_bytes <= 4096 and small.round_trips == 1, small
    assert (Path(ws) / "worktrees" / "b" / "file7.txt").read_text() == "content 7, edited\n"
    assert (Path(ws) / "worktrees" / "a" / "file7.txt").read_text() == "content 7\n"


def test_worker_that_lost_its_objects_is_resent_everything(repo: Path, tmp_path: Path) -> None:
    t = LocalTransport()
    ws = tmp_path / "ws"
    push_snapshot(t, take_snapshot(repo), JobPaths(str(ws), "a"), "w")
    # the worker was rebuilt: its repositories are gone, but our cache still remembers what it had
    subprocess.run(["rm", "-rf", str(ws)], check=True)
    (repo / "new.txt").write_text("x\n")
    stats = push_snapshot(t, take_snapshot(repo), JobPaths(str(ws), "b"), "w")
    assert stats.retried and stats.round_trips == 3
    assert (ws / "worktrees" / "b" / "new.txt").exists() and (ws / "worktrees" / "b" / "run.sh").exists()


def test_existing_worktree_is_an_error_not_an_overwrite(repo: Path, tmp_path: Path) -> None:
    t = LocalTransport()
    paths = JobPaths(str(tmp_path / "ws"), "same")
    push_snapshot(t, take_snapshot(repo), paths, "w")
    (Path(paths.worktree) / "keep.txt").write_text("mine\n")
    bare = Path(paths.repo(take_snapshot(repo).repo_id))
    ref = git(bare, "rev-parse", paths.ref)
    (repo / "file0.txt").write_text("a different snapshot\n")
    with pytest.raises(JobExists, match="job same already exists"):
        push_snapshot(t, take_snapshot(repo), paths, "w")
    assert (Path(paths.worktree) / "keep.txt").read_text() == "mine\n"
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
    push_snapshot(t, take_snapshot(repo), JobPaths(ws, "a"), "w")
    sizes = []
    for i in range(3):
        (repo / "blob.bin").write_bytes(os.urandom(600_000) + bytes([i]))  # untracked, new each time
        snap = take_snapshot(repo)
        sizes.append(sum(f.stat().st_size for f in snap.state_dir.rglob("*") if f.is_file()))
        stats = push_snapshot(t, snap, JobPaths(ws, f"b{i}"), "w")
        assert stats.pack_bytes < 700_000, "only the new file travels, even from a pruned cache"
    assert max(sizes) < 2 * (1 << 20), sizes
    assert (Path(ws) / "worktrees" / "b2" / "blob.bin").read_bytes()[-1] == 2
