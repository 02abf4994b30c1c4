"""Applying a job's result to a real working tree with real git: every change arrives, nothing git would refuse or
that git does not track here is touched, nothing goes through a symlink, a full or read-only disk writes nothing,
and `undo` puts back exactly what was there. A result is built the way a worker builds it: a commit on top of the
snapshot (the working tree as it was on disk, untracked files included)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from offload.errors import OffloadError
from offload.runtime import apply as engine
from tests.workers import git, make_repo, tree_digest

IDENTITY = {"GIT_AUTHOR_NAME": "job", "GIT_AUTHOR_EMAIL": "job@example.com",
            "GIT_COMMITTER_NAME": "job", "GIT_COMMITTER_EMAIL": "job@example.com"}


def snapshot(repo: Path) -> str:
    """The working tree as on disk (untracked files included), as a commit on HEAD: what offload sends."""
    env = {**os.environ, "GIT_INDEX_FILE": str(repo / ".git" / "snapshot-index")}
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, env=env, check=True, capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    run("read-tree", "HEAD")
    run("add", "-A")
    tree = run("write-tree")
    os.unlink(repo / ".git" / "snapshot-index")
    return subprocess.run(["git", "commit-tree", tree, "-p", "HEAD", "-m", "snapshot"], cwd=repo, check=True,
                          capture_output=True, text=True, env={**os.environ, **IDENTITY}).stdout.strip()


def job_result(repo: Path, base: str, edit: Callable[[Path], None], tmp_path: Path) -> str:
    """What a job that runs EDIT in a checkout of BASE leaves: its worktree, committed on top of BASE."""
    wt = tmp_path / "job-worktree"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), base)
    edit(wt)
    subprocess.run(["git", "add", "-A"], cwd=wt, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "result"], cwd=wt, check=True,
                   env={**os.environ, **IDENTITY})
    result = git(wt, "rev-parse", "HEAD").strip()
    git(repo, "worktree", "remove", "--force", str(wt))
    return result


def crafted(repo: Path, base: str, path: str, data: bytes = b"#!/bin/sh\necho pwned\n") -> str:
    """A commit on BASE whose tree also holds PATH, made with plumbing that checks nothing (as a job can)."""
    def obj(*args: str, stdin: bytes) -> str:
        return subprocess.run(["git", *args], cwd=repo, input=stdin, check=True, capture_output=True
                              ).stdout.decode().strip()

    oid = obj("hash-object", "-w", "--stdin", stdin=data)
    entry = f"100755 blob {oid}"
    parts = path.split("/")
    for name in reversed(parts[1:]):
        oid = obj("mktree", stdin=f"{entry}\t{name}\n".encode())
        entry = f"040000 tree {oid}"
    top = subprocess.run(["git", "ls-tree", base], cwd=repo, check=True, capture_output=True).stdout
    tree = obj("mktree", stdin=top + f"{entry}\t{parts[0]}\n".encode())
    return obj("commit-tree", tree, "-p", base, "-m", "crafted", stdin=b"")


def apply_job(repo: Path, snap: str, result: str, **kw: bool) -> list[str]:
    plan = engine.plan_apply(repo, snap, result, **kw)
    return engine.apply(repo, "job1", plan, result=result)


def working_tree(repo: Path) -> dict[str, tuple[str, str]]:
    """Every entry outside .git: (type and mode, content or link target)."""
    out = {}
    for p in sorted(repo.rglob("*")):
        rel = p.relative_to(repo)
        if rel.parts[0] == ".git":
            continue
        st = p.lstat()
        if p.is_symlink():
            out[str(rel)] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(rel)] = (oct(st.st_mode & 0o777), p.read_text())
        else:
            out[str(rel)] = ("dir", "")
    return out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo")
    (r / "x").write_text("a file that becomes a directory\n")
    (r / "d").mkdir()
    (r / "d" / "e.txt").write_text("a directory that becomes a file\n")
    git(r, "add", "x", "d")
    git(r, "commit", "-q", "-m", "x")
    return r


def test_every_change_arrives_and_undo_puts_back_exactly_what_was_there(repo: Path, tmp_path: Path) -> None:
    snap = snapshot(repo)

    def edit(wt: Path) -> None:
        (wt / "file0.txt").write_text("job's first line\ncontent 0\n")
        (wt / "file1.txt").unlink()
        (wt / "run.sh").chmod(0o644)
        (wt / "deep" / "er").mkdir(parents=True)
        (wt / "deep" / "er" / "new.txt").write_text("new\n")
        (wt / "link").symlink_to("src/module.py")
        (wt / "x").unlink()
        (wt / "x").mkdir()
        (wt / "x" / "y").write_text("now a directory\n")
        (wt / "d" / "e.txt").unlink()
        (wt / "d").rmdir()
        (wt / "d").write_text("now a file\n")

    result = job_result(repo, snap, edit, tmp_path)
    (repo / "file0.txt").write_text("content 0\nmy own line\n")  # local work since, merged with the job's
    before = working_tree(repo)
    written = apply_job(repo, snap, result)
    assert sorted(written) == ["d", "d/e.txt", "deep/er/new.txt", "file0.txt", "file1.txt", "link", "run.sh", "x",
                               "x/y"]
    after = working_tree(repo)
    assert after["file0.txt"] == ("0o644", "job's first line\ncontent 0\nmy own line\n")
    assert "file1.txt" not in after and after["run.sh"][0] == "0o644"
    assert after["link"] == ("link", "src/module.py") and after["x/y"][1] == "now a directory\n"
    assert after["d"] == ("0o644", "now a file\n")
    assert git(repo, "rev-parse", "--verify", "-q", engine.backup_ref("job1")).strip()
    assert sorted(engine.undo(repo, "job1")) == sorted(written)
    assert working_tree(repo) == before
    with pytest.raises(OffloadError, match="nothing to undo"):
        engine.undo(repo, "job1")


def test_undo_leaves_alone_and_names_what_changed_since(repo: Path, tmp_path: Path) -> None:
    snap = snapshot(repo)
    result = job_result(repo, snap, lambda wt: (wt / "file2.txt").write_text("job\n"), tmp_path)
    apply_job(repo, snap, result)
    (repo / "file2.txt").write_text("edited after the apply\n")
    with pytest.raises(engine.ApplyConflict, match="file2.txt"):
        engine.undo(repo, "job1")
    assert (repo / "file2.txt").read_text() == "edited after the apply\n"


@pytest.mark.parametrize("path", [".git/hooks/pre-commit", ".GIT/hooks/pre-commit", "sub/.Git/config",
                                  ".gi\u200ct/hooks/pre-commit", "GIT~1/hooks/pre-commit", ".git./hooks/x"])
def test_a_path_git_refuses_to_check_out_is_refused_and_nothing_is_written(repo: Path, path: str) -> None:
    snap = snapshot(repo)
    result = crafted(repo, snap, path)
    before = tree_digest(repo)
    with pytest.raises(engine.ApplyRefused, match="path that git refuses to check out"):
        apply_job(repo, snap, result)
    assert tree_digest(repo) == before
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()


def test_nothing_is_written_through_a_symlink(repo: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    snap = snapshot(repo)
    result = job_result(repo, snap, lambda wt: ((wt / "build").mkdir(), (wt / "build" / "out").write_text("o\n")),
                        tmp_path)
    (repo / "build").symlink_to(victim)  # made here after the job started: not the job's to replace
    with pytest.raises(engine.ApplyConflict, match="build/out"):
        apply_job(repo, snap, result)
    assert list(victim.iterdir()) == []


def test_a_tracked_symlink_the_job_replaced_with_a_directory_is_replaced_not_followed(repo: Path,
                                                                                     tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (repo / "out").symlink_to(victim)
    git(repo, "add", "out")
    git(repo, "commit", "-q", "-m", "a symlink")
    snap = snapshot(repo)

    def edit(wt: Path) -> None:
        (wt / "out").unlink()
        (wt / "out").mkdir()
        (wt / "out" / "f").write_text("f\n")

    apply_job(repo, snap, job_result(repo, snap, edit, tmp_path))
    assert not (repo / "out").is_symlink() and (repo / "out" / "f").read_text() == "f\n"
    assert list(victim.iterdir()) == []


def test_work_git_does_not_track_here_is_never_overwritten_or_removed(repo: Path, tmp_path: Path) -> None:
    (repo / "notes.txt").write_text("my untracked notes\n")
    (repo / "draft.txt").write_text("an untracked draft\n")
    snap = snapshot(repo)

    def edit(wt: Path) -> None:
        (wt / "notes.txt").write_text("the job rewrote them\n")
        (wt / "draft.txt").unlink()

    result = job_result(repo, snap, edit, tmp_path)
    before = tree_digest(repo)
    with pytest.raises(engine.ApplyRefused, match="git does not track here: draft.txt, notes.txt"):
        apply_job(repo, snap, result)
    assert tree_digest(repo) == before
    git(repo, "add", "notes.txt", "draft.txt")  # tracked now: git keeps what they are in its index
    apply_job(repo, snap, result)
    assert (repo / "notes.txt").read_text() == "the job rewrote them\n" and not (repo / "draft.txt").exists()


@pytest.mark.parametrize("line, refused", [("*.txt filter=evil", True), ("*.c diff=evil", True),
                                           ("*.c merge=evil", True), ("[attr]evil filter=x", True),
                                           ("*.png binary", False), ("*.sh text eol=lf", False)])
def test_a_gitattributes_change_that_runs_a_driver_needs_the_users_word(repo: Path, tmp_path: Path, line: str,
                                                                       refused: bool) -> None:
    snap = snapshot(repo)
    result = job_result(repo, snap, lambda wt: (wt / ".gitattributes").write_text(line + "\n"), tmp_path)
    if refused:
        with pytest.raises(engine.ApplyRefused, match=r"\.gitattributes makes git run a filter") as e:
            apply_job(repo, snap, result)
        assert "--allow-filters" in e.value.line()
        assert not (repo / ".gitattributes").exists()
        apply_job(repo, snap, result, allow_filters=True)
    else:
        apply_job(repo, snap, result)
    assert (repo / ".gitattributes").read_text() == line + "\n"


def test_a_gitmodules_change_needs_the_users_word(repo: Path, tmp_path: Path) -> None:
    snap = snapshot(repo)
    text = '[submodule "x"]\n\tpath = x\n\turl = ../x\n\tupdate = !sh -c "echo pwned"\n'
    result = job_result(repo, snap, lambda wt: (wt / ".gitmodules").write_text(text), tmp_path)
    with pytest.raises(engine.ApplyRefused, match=r"\.gitmodules"):
        apply_job(repo, snap, result)
    assert not (repo / ".gitmodules").exists()


def test_dot_offload_is_left_out(repo: Path, tmp_path: Path) -> None:
    snap = snapshot(repo)
    result = job_result(repo, snap, lambda wt: ((wt / ".offload").symlink_to(tmp_path),
                                                (wt / "file2.txt").write_text("job\n")), tmp_path)
    plan = engine.plan_apply(repo, snap, result)
    assert plan.skipped == [".offload"]
    assert engine.apply(repo, "job1", plan, result=result) == ["file2.txt"]
    assert not os.path.lexists(repo / ".offload")


def test_what_git_does_not_store_the_job_cannot_smuggle_through_attributes(repo: Path, tmp_path: Path) -> None:
    """A .gitattributes already here that converts line endings or names a filter does not change what the
    apply writes: the job's bytes arrive as they are, and no filter runs."""
    (repo / ".gitattributes").write_text("*.txt text eol=crlf filter=noisy\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "attributes")
    marker = tmp_path / "filter-ran"
    git(repo, "config", "filter.noisy.smudge", f"sh -c 'touch {marker}; cat'")
    snap = snapshot(repo)
    result = job_result(repo, snap, lambda wt: (wt / "file2.txt").write_bytes(b"one\ntwo\n"), tmp_path)
    marker.unlink(missing_ok=True)
    apply_job(repo, snap, result)
    assert (repo / "file2.txt").read_bytes() == b"one\ntwo\n"
    assert not marker.exists()


# --- the disk says no ------------------------------------------------------------------------------------------------


def _leftovers(repo: Path) -> list[str]:
    return [str(p) for p in repo.rglob("*") if "offload-apply" in p.name or p.name.startswith("offload-index")]


def test_a_full_disk_writes_nothing_and_says_so(small_disk: Callable[[str], Path], tmp_path: Path) -> None:
    disk = small_disk("8m")
    repo = make_repo(disk / "repo")
    snap = snapshot(repo)
    big = os.urandom(2 << 20)
    result = job_result(repo, snap, lambda wt: ((wt / "big.bin").write_bytes(big),
                                                (wt / "file0.txt").write_text("job\n")), tmp_path)
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - (256 << 10)))
    before = tree_digest(repo)
    with pytest.raises(OffloadError) as e:
        apply_job(repo, snap, result)
    assert e.value.line().startswith("no space left on tmpfs (mounted at ") and "nothing was applied" in e.value.line()
    assert tree_digest(repo) == before
    assert _leftovers(repo) == []


def test_a_read_only_tree_writes_nothing_and_says_so(small_disk: Callable[[str], Path], tmp_path: Path) -> None:
    disk = small_disk("8m")
    repo = make_repo(disk / "repo")
    snap = snapshot(repo)
    result = job_result(repo, snap, lambda wt: (wt / "file0.txt").write_text("job\n"), tmp_path)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    try:
        with pytest.raises(OffloadError) as e:
            apply_job(repo, snap, result)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert e.value.line() == f"the working tree at {repo} is read-only; nothing was applied"
    assert (repo / "file0.txt").read_text() == "content 0\n"
