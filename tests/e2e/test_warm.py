"""Warm worktrees end to end: a job after a change finds the build outputs of the one before, and exactly the
snapshot otherwise; leases, --fresh, --ref, caches outside the tree and pruning, on real sshd and container
workers."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import offload
from tests.workers import (SshDockerWorker, SshdWorker, git, make_repo, sshd_record, tree_digest, wait_for,
                           write_outputs)

BUILD = ("mkdir -p build; for f in file*.txt; do if [ ! -e build/$f.o ] || [ $f -nt build/$f.o ]; then "
         "cp $f build/$f.o; echo compiled $f; fi; done")


@pytest.fixture(params=["sshd", "container"])
def worker(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    """An outputs file, the environment to reach the worker, and its workspace: an sshd host, or an sshd host
    whose jobs run in its worker container."""
    if request.param == "sshd":
        w: Any = request.getfixturevalue("sshd_worker")
        ssh = w
    else:
        w = request.getfixturevalue("ssh_docker_worker")
        ssh = w.ssh
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(w)])
    return out, {"OFFLOAD_SSH_KEY": str(ssh.key_path)}, str(w.workspace)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo", files=4)
    (r / ".gitignore").write_text("build/\n")
    git(r, "add", ".gitignore")
    git(r, "commit", "-q", "-m", "ignore build outputs")
    return r


def _run(worker: tuple[Path, dict[str, str], str], repo: Path, *args: str) -> bytes:
    out, env, _ = worker
    p = offload("run", "--outputs", str(out), "--wait", *args, cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_the_second_job_builds_only_what_changed_and_sees_exactly_the_tree(worker: Any, repo: Path) -> None:
    first = _run(worker, repo, "--", f"{BUILD}; echo made-by-the-first-job > leftover.txt")
    assert first.decode().count("compiled") == 4
    before = tree_digest(repo)
    time.sleep(1.1)  # mtimes have whole seconds on some file systems: make the edit newer than the outputs
    (repo / "file1.txt").write_text("a one-line change\n")
    (repo / "file3.txt").unlink()
    (repo / "added.txt").write_text("new\n")
    second = _run(worker, repo, "--", f"{BUILD}; ls; cat file1.txt")
    lines = second.decode().splitlines()
    assert [ln for ln in lines if ln.startswith("compiled")] == ["compiled file1.txt"]
    listing = lines[1:-1]
    assert "leftover.txt" not in listing, "an untracked, not ignored leftover of the first job is removed"
    assert "file3.txt" not in listing and "added.txt" in listing and "build" in listing
    assert lines[-1] == "a one-line change"
    third = _run(worker, repo, "--fresh", "--", BUILD)
    assert third.decode().count("compiled") == 3, "--fresh: no build outputs of earlier jobs"
    assert tree_digest(repo) != before  # the developer's edits, and nothing else, changed the repository


def test_run_wait_returns_once_the_result_is_kept_and_the_worktree_is_back(sshd_worker: SshdWorker, repo: Path,
                                                                          tmp_path: Path) -> None:
    """The job's tasks end before its runner has recorded the result (here a slow one: a large new file) and given
    the worktree back. `run --wait` waits for that too, so a pull right after finds the result and the next run
    gets the same worktree, warm."""
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    env = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    first = offload("run", "--outputs", str(out), "--job", "big", "--wait", "--",
                    "head -c 40000000 /dev/urandom > big.bin; pwd", cwd=repo, env=env)
    assert first.returncode == 0, first.stderr
    second = offload("run", "--outputs", str(out), "--wait", "--", "pwd; test -f big.bin || echo gone", cwd=repo,
                     env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.decode().splitlines() == [first.stdout.decode().strip(), "gone"], \
        "the worktree the first job gave back, moved to the snapshot"
    pulled = offload("pull", "--outputs", str(out), "big", cwd=repo, env=env)
    assert pulled.returncode == 0 and b"big.bin" in pulled.stdout, pulled.stderr


def test_a_lease_left_by_a_killed_runner_is_recovered(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    env = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    assert offload("run", "--outputs", str(out), "--job", "doomed", "--", "sleep 60", cwd=repo,
                   env=env).returncode == 0
    job_dir = Path(sshd_worker.workspace) / "jobs" / "doomed"
    wait_for(lambda: (job_dir / "tasks" / "main" / "pid").exists(), timeout=30, what="the job's task to start")
    for pid_file in (job_dir / "runner.pid", job_dir / "tasks" / "main" / "pid"):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    p = offload("run", "--outputs", str(out), "--job", "next", "--wait", "--", "pwd", cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    meta = (job_dir / "meta").read_text()
    assert f"worktree={p.stdout.decode().strip()}\n" in meta, "the next job took over the dead job's worktree"
    check = offload("check", "doomed", "--outputs", str(out), cwd=repo, env=env)
    assert check.returncode == 1


def test_ref_runs_a_commit_and_leaves_the_checkout_alone(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    env = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    git(repo, "checkout", "-q", "-b", "review")
    (repo / "file0.txt").write_text("on the pull request\n")
    git(repo, "commit", "-q", "-am", "a change under review")
    git(repo, "checkout", "-q", "main")
    (repo / "file0.txt").write_text("uncommitted work on main\n")
    before = tree_digest(repo)
    p = offload("run", "--outputs", str(out), "--ref", "review", "--wait", "--", "cat file0.txt", cwd=repo, env=env)
    assert (p.returncode, p.stdout) == (0, b"on the pull request\n"), p.stderr
    assert tree_digest(repo) == before
    bad = offload("run", "--outputs", str(out), "--ref", "no-such-branch", "--", "true", cwd=repo, env=env)
    assert bad.returncode == 2 and b"--ref no-such-branch: no such commit" in bad.stderr


def test_jobs_in_a_worker_container_keep_their_caches_on_the_workspace(docker_worker: Any, repo: Path,
                                                                       tmp_path: Path) -> None:
    """HOME and XDG_CACHE_HOME of a job in a worker container live on the workspace: they outlive the container."""
    from tests.workers import docker_record

    name = f"{docker_worker.name}-made"
    ws = tmp_path / "ws"
    out = write_outputs(tmp_path / "o.json", "local-docker", [
        docker_record(docker_worker, name=name, container=name, image=docker_worker.image, workspace=str(ws))])
    try:
        p = offload("run", "--outputs", str(out), "--wait", "--",
                    'echo "$HOME $XDG_CACHE_HOME"; echo kept > "$XDG_CACHE_HOME/pip-like"', cwd=repo)
        assert (p.returncode, p.stdout.decode()) == (0, f"{ws}/home {ws}/cache\n"), p.stderr
        os.system(f"docker rm -f {name} > /dev/null 2>&1")  # the container goes; the workspace stays
        p = offload("run", "--outputs", str(out), "--wait", "--", 'cat "$XDG_CACHE_HOME/pip-like"', cwd=repo)
        assert (p.returncode, p.stdout) == (0, b"kept\n"), p.stderr
    finally:
        os.system(f"docker rm -f {name} > /dev/null 2>&1")


def test_finished_jobs_and_idle_worktrees_are_pruned(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    env = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    ws = Path(sshd_worker.workspace)
    hold = f"until [ -e {ws}/go ]; do sleep 0.05; done"
    started = [offload("run", "--outputs", str(out), "--job", f"c{i}", "--keep-jobs", "2", "--warm-worktrees", "1",
                       "--", hold, cwd=repo, env=env) for i in range(3)]
    assert all(p.returncode == 0 for p in started)  # three at once: three worktrees
    (pool,) = list((ws / "trees").iterdir())
    assert len([t for t in pool.iterdir() if t.name.isdigit()]) == 3
    (ws / "go").touch()
    for i in range(3, 5):
        assert offload("run", "--outputs", str(out), "--job", f"s{i}", "--keep-jobs", "2", "--warm-worktrees", "1",
                       "--wait", "--", "true", cwd=repo, env=env).returncode == 0

    def pruned() -> tuple[dict[str, Any], list[str], list[Path]] | None:
        """The status, the jobs and the idle worktrees, once the held jobs have ended (each end prunes)."""
        jobs = json.loads(offload("status", "--json", "--outputs", str(out), cwd=repo, env=env).stdout)
        ids = [j["id"] for j in jobs["workers"][0]["jobs"]]
        trees = [t for t in pool.iterdir() if t.name.isdigit()]
        return (jobs, ids, trees) if len(ids) == 3 and len(trees) == 1 else None

    jobs, ids, trees = wait_for(pruned, timeout=30, what="the worker to keep three jobs and one idle worktree",
                                interval=0.5)
    assert ids[-1] == "s4" and len(ids) == 3, "the last job and the two finished before it are kept"
    assert len(trees) == 1, "one idle warm worktree is kept"
    kept = trees[0].name
    assert {p.name for p in pool.iterdir()} <= {kept, f"{kept}.used", f"{kept}.last", ".lock"}, \
        "a pruned worktree leaves nothing behind"
    for job in ids[:-1]:
        p = offload("get", "--outputs", str(out), job, "file0.txt", cwd=repo, env=env)
        assert p.returncode == 1 and "are gone" in p.stderr.decode(), p.stderr
    disk = jobs["workers"][0]["workspace"]
    assert disk["free_bytes"] > 0 and disk["size_bytes"] >= disk["free_bytes"]


def test_the_end_of_a_job_prunes_old_idle_worktrees_of_every_repository(sshd_worker: SshdWorker, repo: Path,
                                                                         tmp_path: Path) -> None:
    """A developer with many repositories: a job's end also removes the worktrees other repositories' pools have
    kept idle for more than 7 days. How many of them stay warm is their own jobs' limit, not this one's."""
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    env = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    ws = Path(sshd_worker.workspace)
    other = make_repo(tmp_path / "other", files=2)
    hold = f"until [ -e {ws}/go ]; do sleep 0.05; done"
    for job in ("o1", "o2"):  # both at once: two worktrees in the other repository's pool
        assert offload("run", "--outputs", str(out), "--job", job, "--", hold, cwd=other, env=env).returncode == 0
    (ws / "go").touch()
    for job in ("o1", "o2"):
        wait_for(lambda: (ws / "jobs" / job / "finished").exists(), timeout=30,
                 what=f"job {job} to end and give its worktree back")
    (pool,) = list((ws / "trees").iterdir())
    old, young = sorted(t for t in pool.iterdir() if t.name.isdigit())
    Path(f"{old}.used").write_text(f"{int(time.time()) - 8 * 86400}\n")  # given back 8 days ago
    p = offload("run", "--outputs", str(out), "--warm-worktrees", "1", "--wait", "--", "true", cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    assert not old.exists() and not Path(f"{old}.used").exists(), "idle for more than 7 days: pruned"
    assert young.is_dir(), "another repository's pool is pruned by age only"
    assert len([t for t in (ws / "trees").iterdir() if t != pool]) == 1, "this job's own pool"
