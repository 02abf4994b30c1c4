"""Large changed files go to the worker ahead of the sync, while the snapshot still hashes them here: the pack then
goes without them and the worktree has them all the same; a file the worker holds as it is stays here; whatever
goes wrong ahead leaves the content to the pack."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from offload.runtime.meter import Direction
from offload.runtime.snapshot import LARGE_FILE, large_changes, local_repository, take_snapshot
from offload.runtime.sync import push_snapshot, send_ahead
from offload.runtime.transport import LocalTransport
from offload.worker.exits import PutBlobExit
from offload.worker.layout import JobPaths
from offload.worker.scripts import library, worker_script
from tests.workers import RecordedMeters, git, make_repo


def _sync(t: LocalTransport, repo: Path, ws: str, job: str, ahead: list[str] | None = None):  # noqa: ANN202
    """Sync the working tree as job JOB and move its worktree to the snapshot, as the job's runner would."""
    snap = take_snapshot(repo)
    stats = push_snapshot(t, snap, JobPaths(ws, job), "w", ahead=ahead or [])
    subprocess.run(["sh", "-c", f'{library()}\nmove_tree "$1" "$2" 0 && release_tree "$1" "$3"', "sh",
                    stats.worktree, snap.commit, job], check=True, capture_output=True, timeout=60)
    return stats


def _blob(path: Path) -> str:
    return subprocess.run(["git", "hash-object", "--no-filters", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_large_changes_are_the_large_new_and_changed_files_git_stores_as_they_are(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "kept.bin").write_bytes(os.urandom(LARGE_FILE))
    (repo / "edited.bin").write_bytes(os.urandom(LARGE_FILE))
    git(repo, "add", "kept.bin", "edited.bin")
    git(repo, "commit", "-q", "-m", "large files")
    (repo / "edited.bin").write_bytes(os.urandom(LARGE_FILE + 1))
    (repo / "new.bin").write_bytes(os.urandom(LARGE_FILE))
    (repo / "small.bin").write_bytes(os.urandom(LARGE_FILE - 1))
    (repo / ".gitignore").write_text("ignored.bin\n")
    (repo / "ignored.bin").write_bytes(os.urandom(LARGE_FILE))
    (repo / ".gitattributes").write_text("*.txt text eol=crlf\n")
    (repo / "lines.txt").write_bytes(b"a line\n" * (LARGE_FILE // 7 + 1))  # stored with other line endings
    (repo / "link.bin").symlink_to("new.bin")
    found = {f.path.name: f.size for f in large_changes(repo / "src")}  # from a subdirectory: the whole tree
    assert found == {"edited.bin": LARGE_FILE + 1, "new.bin": LARGE_FILE}
    git(repo, "config", "core.autocrlf", "input")
    assert large_changes(repo) == [], "with line endings converted, git's ids are not the files' own"
    assert large_changes(tmp_path) == []


def test_a_file_sent_ahead_is_left_out_of_the_pack_and_still_arrives(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    t, ws = LocalTransport(), str(tmp_path / "ws")
    _sync(t, repo, ws, "a")
    data = os.urandom(LARGE_FILE + 12345)
    (repo / "data.bin").write_bytes(data)
    meters = RecordedMeters()
    stored = send_ahead(t, ws, local_repository(repo), "w", large_changes(repo), meters)
    assert stored == [_blob(repo / "data.bin")]
    assert meters.opened == [(Direction.SENT, len(data))] and meters.moved == len(data)
    stats = _sync(t, repo, ws, "b", stored)
    assert stats.pack_bytes < 64 * 1024, "the file went ahead, not in the pack"
    assert (Path(stats.worktree) / "data.bin").read_bytes() == data


def test_a_file_the_worker_holds_as_it_is_stays_here(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    t, ws = LocalTransport(), str(tmp_path / "ws")
    (repo / "data.bin").write_bytes(os.urandom(LARGE_FILE))
    assert send_ahead(t, ws, local_repository(repo), "w", large_changes(repo)) == [], \
        "a worker new to the repository gets it in its first pack"
    _sync(t, repo, ws, "a")
    os.utime(repo / "data.bin", (1, 1))  # touched, not changed: git lists it all the same
    meters = RecordedMeters()
    assert large_changes(repo) and send_ahead(t, ws, local_repository(repo), "w", large_changes(repo), meters) == []
    assert meters.moved == 0
    (repo / "data.bin").write_bytes(os.urandom(LARGE_FILE))  # the same size, other bytes
    assert send_ahead(t, ws, local_repository(repo), "w", large_changes(repo)) == [_blob(repo / "data.bin")]


def test_a_file_changed_after_it_went_ahead_arrives_as_it_is_at_the_snapshot(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    t, ws = LocalTransport(), str(tmp_path / "ws")
    _sync(t, repo, ws, "a")
    (repo / "data.bin").write_bytes(os.urandom(LARGE_FILE))
    stored = send_ahead(t, ws, local_repository(repo), "w", large_changes(repo))
    assert len(stored) == 1
    data = os.urandom(LARGE_FILE)
    (repo / "data.bin").write_bytes(data)
    stats = _sync(t, repo, ws, "b", stored)
    assert stats.pack_bytes > LARGE_FILE
    assert (Path(stats.worktree) / "data.bin").read_bytes() == data


def test_put_blob_stores_nothing_of_input_cut_short(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    t, ws = LocalTransport(), str(tmp_path / "ws")
    _sync(t, repo, ws, "a")
    repo_id = local_repository(repo).repo_id
    bare = Path(ws) / "repos" / f"{repo_id}.git"
    before = sorted(p.relative_to(bare) for p in (bare / "objects").rglob("*"))
    cut = t.run(["sh", "-c", worker_script("put-blob.sh"), "sh", ws, repo_id, "100"], stdin=b"x" * 50)
    assert cut.exit_code == 1 and b"got 50 of 100 bytes" in cut.stderr
    assert sorted(p.relative_to(bare) for p in (bare / "objects").rglob("*")) == before
    whole = t.run(["sh", "-c", worker_script("put-blob.sh"), "sh", ws, repo_id, "100"], stdin=b"x" * 100)
    (tmp_path / "x").write_bytes(b"x" * 100)
    assert whole.ok and whole.text().strip() == _blob(tmp_path / "x")
    none = t.run(["sh", "-c", worker_script("put-blob.sh"), "sh", ws, "no-such-repo", "1"], stdin=b"x")
    assert none.exit_code == PutBlobExit.NO_REPOSITORY


def test_a_command_given_up_stops_what_goes_ahead(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    t, ws = LocalTransport(), str(tmp_path / "ws")
    _sync(t, repo, ws, "a")
    (repo / "data.bin").write_bytes(os.urandom(LARGE_FILE))
    given_up, meters = threading.Event(), RecordedMeters()
    given_up.set()
    assert send_ahead(t, ws, local_repository(repo), "w", large_changes(repo), meters, given_up) == []
    assert meters.moved == 0


def test_a_file_swapped_for_a_symlink_sends_nothing_of_what_it_points_to(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    t, ws = LocalTransport(), str(tmp_path / "ws")
    _sync(t, repo, ws, "a")
    (repo / "data.bin").write_bytes(os.urandom(LARGE_FILE))
    listed = large_changes(repo)
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(LARGE_FILE))
    (repo / "data.bin").unlink()
    (repo / "data.bin").symlink_to(secret)  # after it was listed, before it goes
    meters = RecordedMeters()
    assert send_ahead(t, ws, local_repository(repo), "w", listed, meters) == []
    assert meters.moved == 0
    bare = Path(ws) / "repos" / f"{local_repository(repo).repo_id}.git"
    blob = _blob(secret)
    assert not (bare / "objects" / blob[:2] / blob[2:]).exists()
