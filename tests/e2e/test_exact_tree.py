"""The job sees the working tree as it is on disk, whatever git was told: submodules and nested repositories with
their content, files git was told not to look at, files under Git LFS, and repositories at odd paths. The local
repository is never written."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import offload, stderr_line
from tests.workers import SshdWorker, git, make_repo, sshd_record, tree_digest, write_outputs


def _run(repo: Path, command: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    p = offload("run", "--wait", "--", command, cwd=repo, **kwargs)  # type: ignore[arg-type]
    assert p.returncode == 0, p.stderr
    return p


def test_submodules_and_nested_repositories_arrive_with_their_content(tmp_path: Path) -> None:
    upstream = make_repo(tmp_path / "upstream")
    repo = make_repo(tmp_path / "repo")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(upstream), "lib")
    git(repo, "commit", "-q", "-m", "a submodule")
    (repo / "lib" / "file0.txt").write_text("edited inside the submodule\n")
    (repo / "lib" / "extra.txt").write_text("untracked inside the submodule\n")
    nested = make_repo(repo / "vendor" / "tool")  # a repository of its own, never added
    (nested / "notes.txt").write_text("untracked in the nested repository\n")
    (nested / ".gitignore").write_text("*.o\n")
    (nested / "build.o").write_text("ignored there\n")
    before = tree_digest(repo)
    p = _run(repo, "cat lib/file0.txt lib/extra.txt lib/src/module.py vendor/tool/notes.txt vendor/tool/file1.txt; "
                   "ls vendor/tool; test -d lib/.git || test -f lib/.git || echo no-git-dirs")
    assert p.stdout.decode().splitlines() == [
        "edited inside the submodule", "untracked inside the submodule", "VALUE = 1",
        "untracked in the nested repository", "content 1",
        "file0.txt", "file1.txt", "file2.txt", "notes.txt", "run.sh", "src", "no-git-dirs"]
    assert tree_digest(repo) == before


def test_an_uninitialised_submodule_is_the_empty_directory_on_disk(tmp_path: Path) -> None:
    upstream = make_repo(tmp_path / "upstream")
    source = make_repo(tmp_path / "source")
    git(source, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(upstream), "lib")
    git(source, "commit", "-q", "-m", "a submodule")
    repo = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(source), str(repo))  # without --recurse-submodules: lib/ is empty
    p = _run(repo, "ls -A lib | wc -l; cat file0.txt")
    assert p.stdout == b"0\ncontent 0\n"


def test_files_git_was_told_to_ignore_changes_of_travel_as_on_disk(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "update-index", "--assume-unchanged", "file0.txt")
    git(repo, "update-index", "--skip-worktree", "file1.txt")
    (repo / "file0.txt").write_text("changed under assume-unchanged\n")
    (repo / "file1.txt").write_text("changed under skip-worktree\n")
    before = tree_digest(repo)
    p = _run(repo, "cat file0.txt file1.txt")
    assert p.stdout == b"changed under assume-unchanged\nchanged under skip-worktree\n"
    assert tree_digest(repo) == before


def _lfs_repo(tmp_path: Path) -> Path:
    if not shutil.which("git-lfs"):
        pytest.skip("git-lfs is not installed")
    repo = make_repo(tmp_path / "repo")
    git(repo, "lfs", "install", "--local")
    git(repo, "lfs", "track", "*.bin")
    (repo / "model.bin").write_bytes(b"the real weights\x00\x01\n")
    git(repo, "add", ".gitattributes", "model.bin")
    git(repo, "commit", "-q", "-m", "lfs")
    assert b"git-lfs.github.com/spec" in subprocess.run(["git", "-C", str(repo), "cat-file", "-p", "HEAD:model.bin"],
                                                        capture_output=True).stdout
    (repo / "fresh.bin").write_bytes(b"new weights, never added\n")
    return repo


def test_files_under_git_lfs_travel_as_their_content_and_nothing_is_written_locally(tmp_path: Path) -> None:
    repo = _lfs_repo(tmp_path)
    # A developer's global `git lfs install` would smudge on the worker too.
    subprocess.run(["git", "lfs", "install"], check=True, capture_output=True, cwd=tmp_path)
    before = tree_digest(repo)
    p = _run(repo, "cat model.bin fresh.bin")
    assert p.stdout == b"the real weights\x00\x01\nnew weights, never added\n"
    assert tree_digest(repo) == before, "the snapshot wrote into the repository (.git/lfs?)"


def test_files_under_git_lfs_reach_an_ssh_worker(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    repo = _lfs_repo(tmp_path)
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    p = offload("run", "--outputs", str(out), "--wait", "--", "cat model.bin", cwd=repo,
                env={"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)})
    assert (p.returncode, p.stdout) == (0, b"the real weights\x00\x01\n"), p.stderr


@pytest.mark.parametrize("name", ["line\nbreak", os.fsdecode(b"caf\xe9 \xff")])
def test_a_repository_at_an_odd_path_is_the_one_that_runs(tmp_path: Path, name: str) -> None:
    decoy = make_repo(tmp_path / "line")  # what a path cut at its newline would find
    (decoy / "file0.txt").write_text("the wrong repository\n")
    repo = make_repo(tmp_path / name)
    (repo / "file0.txt").write_text("the right repository\n")
    p = _run(repo, "cat file0.txt")
    assert p.stdout == b"the right repository\n"


def test_a_removed_current_directory_is_one_clear_line(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    gone = repo / "gone"
    gone.mkdir()
    script = f"cd {gone} && rmdir {gone} && exec {os.sys.executable} -m offload run -- true"
    p = subprocess.run(["sh", "-c", script], capture_output=True, timeout=60)
    assert p.returncode == 2
    assert stderr_line(p) == ("offload: the current directory no longer exists (cd into your repository and run "
                              "the command again)")
