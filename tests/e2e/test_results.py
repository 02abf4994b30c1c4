"""Results come home: pull, diff and apply a job's changes, and get its files, over real sshd and container
workers (and the local one), writing locally only what each command may write."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import on_worker, ran, stderr_line, worker_setup
from tests.workers import git, make_repo, tree_digest

JOB_EDITS = ("printf 'content 0, edited by the job\\n' > file0.txt; rm file1.txt; echo made > made.txt; "
             "mkdir -p deep/er; echo deeper > deep/er/x.txt; chmod +x file2.txt; chmod -x run.sh; "
             "mkdir -p build; echo artifact > build/report.txt")


@pytest.fixture(params=["local", "sshd", "container", "gce"])
def worker(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Where the jobs run (see `worker_setup`)."""
    return worker_setup(request, request.param, tmp_path)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo")
    (r / ".gitignore").write_text("build/\n")
    git(r, "add", ".gitignore")
    git(r, "commit", "-q", "-m", "ignore build outputs")
    return r


def cmd(worker: dict[str, Any], repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return on_worker(worker, repo, *args)


def _local_state(repo: Path) -> dict[str, str]:
    """Everything pull must leave alone: the working tree, the index, HEAD and every ref but the job's."""
    refs = [line for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
            if not line.startswith("refs/offload/jobs/")]
    files = {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}
    return {"refs": "\n".join(refs), "head": git(repo, "rev-parse", "HEAD"),
            "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(), "files": json.dumps(files)}


def _files_digest(repo: Path) -> str:
    """The working tree, byte for byte (what apply must leave alone when it refuses)."""
    h = hashlib.sha256()
    for p in sorted(repo.rglob("*")):
        if ".git" in p.relative_to(repo).parts:
            continue
        st = p.lstat()
        h.update(f"{p.relative_to(repo)}\0{st.st_mode:o}\0".encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def _modes(root: Path) -> dict[str, tuple[bytes, bool]]:
    return {str(p.relative_to(root)): (p.read_bytes(), bool(p.stat().st_mode & stat.S_IXUSR))
            for p in sorted(root.rglob("*")) if p.is_file() and ".git" not in p.parts and "build" not in p.parts
            and ".offload" not in p.parts}


def test_pull_then_apply_brings_every_change_back_exactly(worker: dict[str, Any], repo: Path,
                                                          tmp_path: Path) -> None:
    ran(worker, repo, "edits", JOB_EDITS)
    before = _local_state(repo)
    p = cmd(worker, repo, "pull", "edits")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert out.startswith("refs/offload/jobs/edits -> ") and "6 files changed" in out
    assert _local_state(repo) == before, "pull writes nothing but objects and refs/offload/jobs/JOB"
    assert git(repo, "fsck", "--connectivity-only", "--no-dangling").strip() == ""
    diff = cmd(worker, repo, "diff", "edits").stdout.decode()
    assert "+content 0, edited by the job" in diff and "deleted file mode 100644" in diff
    assert "old mode 100755\nnew mode 100644" in diff and "build/report.txt" not in diff
    # What the worktree held, applied onto a clean checkout, is the job's tree exactly.
    expected = tmp_path / "expected"
    git(repo, "worktree", "add", "-q", "--detach", str(expected), "refs/offload/jobs/edits")
    applied = cmd(worker, repo, "apply", "edits")
    assert applied.returncode == 0, applied.stderr
    assert sorted(applied.stdout.decode().split()) == ["deep/er/x.txt", "file0.txt", "file1.txt", "file2.txt",
                                                       "made.txt", "run.sh"]
    assert _modes(repo) == _modes(expected)
    assert git(repo, "rev-parse", "HEAD") == before["head"], "apply never moves HEAD"


def test_apply_keeps_local_work_and_refuses_a_conflict_untouched(worker: dict[str, Any], repo: Path) -> None:
    ran(worker, repo, "fix", "printf 'content 0\\nfixed by the job\\n' > file0.txt; echo job > file2.txt")
    (repo / "file1.txt").write_text("my own work in progress\n")
    (repo / "notes.txt").write_text("untracked notes\n")
    p = cmd(worker, repo, "apply", "fix")
    assert p.returncode == 0, p.stderr
    assert (repo / "file0.txt").read_text() == "content 0\nfixed by the job\n"
    assert (repo / "file1.txt").read_text() == "my own work in progress\n"
    assert (repo / "notes.txt").read_text() == "untracked notes\n"
    # A second job changes a line that is also changed locally: refused, every local file as it was.
    ran(worker, repo, "clash", "echo 'the job says this' > file1.txt")
    (repo / "file1.txt").write_text("and I say that\n")
    (repo / "build").mkdir()
    (repo / "build" / "local.o").write_text("an ignored local file\n")
    before = _files_digest(repo)
    p = cmd(worker, repo, "apply", "clash")
    assert p.returncode == 1
    assert stderr_line(p).startswith("offload: the job's changes conflict with local changes in file1.txt;")
    assert _files_digest(repo) == before


def test_a_job_that_commits_keeps_its_commits(worker: dict[str, Any], repo: Path) -> None:
    ran(worker, repo, "commits", "echo one > one.txt && git add one.txt && git -c user.name=job "
                                 "-c user.email=job@example.com commit -q -m 'the job commits' && echo two > two.txt")
    assert cmd(worker, repo, "pull", "commits").returncode == 0
    log = git(repo, "log", "--format=%s", "refs/offload/jobs/commits").splitlines()
    assert log[:2] == ["offload: the result of job commits", "the job commits"]
    assert cmd(worker, repo, "apply", "commits").returncode == 0
    assert (repo / "one.txt").read_text() == "one\n" and (repo / "two.txt").read_text() == "two\n"


def test_the_result_outlives_the_worktree_being_used_again(worker: dict[str, Any], repo: Path) -> None:
    ran(worker, repo, "first", "echo first > first.txt")
    ran(worker, repo, "second", "rm -f first.txt; echo second > second.txt")  # the same warm worktree
    assert cmd(worker, repo, "pull", "first").returncode == 0
    names = git(repo, "ls-tree", "-r", "--name-only", "refs/offload/jobs/first").split()
    assert "first.txt" in names and "second.txt" not in names
    gone = cmd(worker, repo, "get", "first", "first.txt")
    assert gone.returncode == 1 and "another job has used its worktree since" in stderr_line(gone)


def test_get_copies_ignored_artifacts_and_refuses_what_leaves_the_worktree(worker: dict[str, Any], repo: Path,
                                                                            tmp_path: Path) -> None:
    ran(worker, repo, "art", "mkdir -p build/sub; echo report > build/report.txt; echo deep > build/sub/d.txt; "
                             "ln -s /etc/passwd build/escape; ln -s /etc escapedir")
    p = cmd(worker, repo, "get", "art", "build/report.txt", "build/sub")
    assert p.returncode == 0, p.stderr
    dest = repo / ".offload" / "art"
    assert (dest / "build" / "report.txt").read_text() == "report\n"
    assert (dest / "build" / "sub" / "d.txt").read_text() == "deep\n"
    assert "/.offload/" in (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert git(repo, "status", "--porcelain", "--untracked-files=all").strip() == ""
    before = tree_digest(repo)
    for bad in ("../file0.txt", "/etc/passwd", "build/escape", "escapedir/hostname", "nothing-here"):
        refused = cmd(worker, repo, "get", "art", bad, "--to", str(tmp_path / "elsewhere"))
        assert refused.returncode == 2, (bad, refused.stderr)
        assert bad.split("/")[0] in stderr_line(refused)
        assert not (tmp_path / "elsewhere").exists()
    assert tree_digest(repo) == before


def test_clean_removes_the_result(worker: dict[str, Any], repo: Path) -> None:
    ran(worker, repo, "done", "echo x > x.txt")
    assert cmd(worker, repo, "clean", "done").returncode == 0
    p = cmd(worker, repo, "pull", "done")
    assert p.returncode == 5, p.stderr
    if worker["workspace"]:
        refs = subprocess.run(["sh", "-c", f"git -c safe.directory='*' -C {worker['workspace']}/repos/*.git "
                                           "for-each-ref refs/offload/"], capture_output=True, text=True).stdout
        assert "done" not in refs


def test_a_playbook_brings_its_artifacts_home(worker: dict[str, Any], repo: Path) -> None:
    (repo / "offload.yaml").write_text("playbooks:\n  report:\n    artifacts: ['build/*.txt', 'missing/*']\n"
                                       "    tasks:\n      make: {run: 'mkdir -p build; echo a > build/a.txt; "
                                       "echo b > build/b.txt; echo c > build/c.log'}\n")
    p = cmd(worker, repo, "run", "--job", "pb", "--playbook", "report", "--wait")
    assert p.returncode == 0, p.stderr
    got = sorted(str(f.relative_to(repo / ".offload" / "pb")) for f in (repo / ".offload" / "pb").rglob("*.*"))
    assert got == ["build/a.txt", "build/b.txt"]
    assert "artifact entries of job pb" in p.stderr.decode()


def test_apply_leaves_out_what_only_this_machine_ignores(worker: dict[str, Any], repo: Path) -> None:
    """.git/info/exclude never reaches the worker: a job may make such a file, and apply must not touch it."""
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("scratch.txt\nlocal-only/\n")
    (repo / "scratch.txt").write_text("my scratch notes\n")
    ran(worker, repo, "noisy", "echo job > scratch.txt; mkdir -p local-only; echo job > local-only/x; "
                               "echo fixed >> file0.txt")
    before = (repo / "scratch.txt").read_bytes()
    p = cmd(worker, repo, "apply", "--json", "noisy")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"id": "noisy", "files": ["file0.txt"],
                                    "skipped": ["local-only/x", "scratch.txt"]}
    assert (repo / "scratch.txt").read_bytes() == before
    assert not (repo / "local-only").exists()
    assert (repo / "file0.txt").read_text().endswith("fixed\n")
    p = cmd(worker, repo, "apply", "noisy")
    assert p.returncode == 0 and "left out what this repository ignores here: local-only/x, scratch.txt" in \
        p.stderr.decode(), p.stderr


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if "offload-apply" in p.name or "offload-index" in p.name]


def test_apply_on_a_full_disk_writes_nothing_and_says_which_disk(small_disk: Callable[[str], Path]) -> None:
    disk = small_disk("8m")
    repo = make_repo(disk / "repo")
    local: dict[str, Any] = {"args": [], "env": {}, "workspace": None}
    ran(local, repo, "big", "head -c 2097152 /dev/urandom > big.bin; echo job > file0.txt")
    assert cmd(local, repo, "pull", "big").returncode == 0
    st = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - (256 << 10)))
    before = _files_digest(repo)
    p = cmd(local, repo, "apply", "big")
    assert p.returncode == 1
    assert re.fullmatch(r"offload: no space left on tmpfs \(mounted at .*\); nothing was applied", stderr_line(p))
    assert _files_digest(repo) == before and _leftovers(repo) == []


def test_apply_on_a_read_only_tree_writes_nothing_and_says_so(small_disk: Callable[[str], Path]) -> None:
    disk = small_disk("8m")
    repo = make_repo(disk / "repo")
    local: dict[str, Any] = {"args": [], "env": {}, "workspace": None}
    ran(local, repo, "edit", "echo job > file0.txt")
    assert cmd(local, repo, "pull", "edit").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    try:
        p = cmd(local, repo, "apply", "edit")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert p.returncode == 1
    assert stderr_line(p) == f"offload: the working tree at {repo} is read-only; nothing was applied"
    assert (repo / "file0.txt").read_text() == "content 0\n" and _leftovers(repo) == []
