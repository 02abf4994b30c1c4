"""Reading jobs back: status records and their parser, following logs by byte offset, and cleaning one job."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from offload.jobs.layout import JobPaths, State
from offload.jobs.playbook import Playbook, Task, When
from offload.jobs.state import (
    JobStatus,
    TaskStatus,
    clean_script,
    follow_args,
    follow_script,
    log_script,
    parse_clean,
    parse_status,
    status_script,
)
from tests.jobs.conftest import SH, WAIT, LocalWorker, pid_running, read, sh, tmux_alive, wait_for
from tests.workers import git, make_repo


def status(worker: LocalWorker, *jobs: str) -> dict[str, JobStatus]:
    result = sh(status_script(worker.workspace), *jobs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("offload-status\t1\n")
    return {job.id: job for job in parse_status(result.stdout)}


def test_status_of_running_and_finished_jobs(worker: LocalWorker) -> None:
    book = Playbook("p", (Task("quick", "exit 5"), Task("slow", "sleep 30"),
                          Task("later", "true", ("slow",), When.ALWAYS)))
    meta = {"repo": "/srv/repos/r.git", "commit": "0123abc", "playbook": "p", "note": "a=b c\\d 'e'"}
    running = worker.launch(book, meta=meta, linger=60)
    done = worker.launch("echo hi", linger=0)
    worker.wait_task(running, "quick", "failed")
    worker.wait_task(running, "slow", "running")
    wait_for(lambda: worker.file(running, "slow", "pid"), what="the slow task's pid")
    assert worker.wait_job(done) == "success"
    wait_for(lambda: not tmux_alive(done.tmux_socket), what="the finished job's server to exit")
    wait_for(lambda: not status(worker, done.job)[done.job].runner_alive, what="the finished job's runner to exit")

    jobs = status(worker)
    assert set(jobs) == {running.job, done.job}
    r = jobs[running.job]
    assert r.state is State.RUNNING and r.alive and r.runner_alive
    assert r.meta == meta
    assert r.tasks == [TaskStatus("quick", State.FAILED, 5), TaskStatus("slow", State.RUNNING, None),
                       TaskStatus("later", State.PENDING, None)]
    assert r.exit_code is None
    d = jobs[done.job]
    assert d.state is State.SUCCESS and not d.alive and not d.runner_alive
    assert d.tasks == [TaskStatus("main", State.SUCCESS, 0)]
    assert d.exit_code == 0

    # Only the jobs asked for; unknown and invalid ids are left out.
    assert list(status(worker, done.job, "nope", "a;b", "../x")) == [done.job]

    # The runner dies: the running task goes on, and once it ends nobody will start `later`.
    runner = int(read(f"{running.job_dir}/runner.pid"))
    os.kill(runner, signal.SIGKILL)
    assert status(worker, running.job)[running.job].state is State.RUNNING
    slow_pid = int(worker.file(running, "slow", "pid"))
    os.kill(slow_pid, signal.SIGHUP)
    wait_for(lambda: status(worker, running.job)[running.job].state is State.FAILED, what="the job to be failed")
    r = status(worker, running.job)[running.job]
    assert r.tasks == [TaskStatus("quick", State.FAILED, 5), TaskStatus("slow", State.FAILED, None),
                       TaskStatus("later", State.PENDING, None)]
    assert r.exit_code == 5 and r.alive and not r.runner_alive


def test_status_of_an_empty_workspace(tmp_path: Path) -> None:
    result = sh(status_script(str(tmp_path / "nothing here")))
    assert result.returncode == 0
    assert result.stdout == "offload-status\t1\n"
    assert parse_status(result.stdout) == []


def test_status_sanitizes_odd_files(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "odd"
    (job / "tasks" / "t").mkdir(parents=True)
    (job / "tasks.list").write_text("t\nbad name\n$(x)\n")
    (job / "state").write_text("weird\tstate\n")
    (job / "meta").write_text("repo=/a\tb\nno equals sign\n=empty key\n")
    (job / "tasks" / "t" / "state").write_text("exploded\n")
    (job / "tasks" / "t" / "exit").write_text("1\t2\n")
    (job / "tasks" / "t" / "pid").write_text("not a pid\n")
    result = sh(status_script(str(tmp_path)))
    assert result.stdout.splitlines() == [
        "offload-status\t1",
        "job\todd\t-\t-\t0",
        "meta\todd\trepo\t/a\tb",
        "task\todd\tt\tpending\t-\t-",
    ]
    [odd] = parse_status(result.stdout)
    assert odd.meta == {"repo": "/a\tb"}
    assert odd.state is State.PENDING  # no runner recorded yet: a launch in progress


@pytest.mark.parametrize("records, job_state, task_states", [
    (["job\tj\t-\t1\t1", "task\tj\ta\tsuccess\t0\t0", "task\tj\tb\tpending\t-\t-"], State.RUNNING,
     [State.SUCCESS, State.PENDING]),
    (["job\tj\t-\t0\t0", "task\tj\ta\tsuccess\t0\t0", "task\tj\tb\tpending\t-\t-"], State.FAILED,
     [State.SUCCESS, State.PENDING]),
    (["job\tj\t-\t0\t0", "task\tj\ta\tsuccess\t0\t0", "task\tj\tb\tskipped\t-\t-"], State.SUCCESS,
     [State.SUCCESS, State.SKIPPED]),
    (["job\tj\t-\t1\t1", "task\tj\ta\trunning\t-\t0"], State.RUNNING, [State.FAILED]),  # the runner will see
    (["job\tj\t-\t0\t1", "task\tj\ta\trunning\t-\t0"], State.FAILED, [State.FAILED]),
    (["job\tj\t-\t1\t1", "task\tj\ta\trunning\t0\t0"], State.RUNNING, [State.SUCCESS]),
    (["job\tj\t-\t0\t1", "task\tj\ta\trunning\t0\t0"], State.SUCCESS, [State.SUCCESS]),
    (["job\tj\t-\t1\t1", "task\tj\ta\trunning\t3\t1"], State.RUNNING, [State.RUNNING]),
    (["job\tj\t-\t1\t1", "task\tj\ta\trunning\t-\t-"], State.RUNNING, [State.RUNNING]),
    (["job\tj\t-\t0\t1", "task\tj\ta\trunning\t-\t-"], State.FAILED, [State.FAILED]),
    (["job\tj\tfailed\t0\t0", "task\tj\ta\tfailed\t2\t0"], State.FAILED, [State.FAILED]),
    (["job\tj\t-\t-\t0", "task\tj\ta\tpending\t-\t-"], State.PENDING, [State.PENDING]),
])
def test_parse_status_derives_states(records: list[str], job_state: State, task_states: list[State]) -> None:
    text = "offload-status\t1\n" + "\n".join(records) + "\nfuture\tj\tx\n"
    [job] = parse_status(text)
    assert job.state is job_state
    assert [t.state for t in job.tasks] == task_states


def test_parse_status_groups_by_job() -> None:
    text = ("offload-status\t1\nmeta\tb\tk\tv\njob\ta\tsuccess\t0\t0\ntask\ta\tmain\tsuccess\t0\t0\n"
            "job\tb\tfailed\t0\t1\ntask\tb\tmain\tfailed\t9\t0\ntask\tc\tmain\tsuccess\t0\t0\n")
    jobs = parse_status(text)
    assert [j.id for j in jobs] == ["b", "a"] or [j.id for j in jobs] == ["a", "b"]
    by_id = {j.id: j for j in jobs}
    assert by_id["b"].meta == {"k": "v"} and by_id["b"].alive and by_id["b"].exit_code == 9
    assert by_id["a"].tasks == [TaskStatus("main", State.SUCCESS, 0)]


# ---------------------------------------------------------------------------------------------------------------
# Logs


def _follow(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([SH, "-s", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _start(proc: subprocess.Popen[bytes], script: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(script.encode())
    proc.stdin.close()


def _fake_task(tmp_path: Path) -> tuple[JobPaths, Path]:
    paths = JobPaths(str(tmp_path / "ws"), "j1")
    task = Path(paths.task_dir("t"))
    task.mkdir(parents=True)
    return paths, task


def test_follow_from_an_offset_until_exit(tmp_path: Path) -> None:
    paths, task = _fake_task(tmp_path)
    first = b"hello world\n" + bytes(range(256)) + b"\xff\x00no newline"
    (task / "log").write_bytes(first)
    (task / "state").write_text("running\n")
    runner = subprocess.Popen(["sleep", "30"])  # stands in for a live runner
    (Path(paths.job_dir) / "runner.pid").write_text(f"{runner.pid}\n")
    follow = _follow(follow_args(paths, "t", 6))
    try:
        _start(follow, follow_script())
        time.sleep(0.5)
        assert follow.poll() is None
        with open(task / "log", "ab") as f:
            f.write(b"more\n")
        time.sleep(0.5)
        assert follow.poll() is None
        with open(task / "log", "ab") as f:
            f.write(b"last bytes")
        (task / "exit.tmp").write_text("0\n")
        os.replace(task / "exit.tmp", task / "exit")
        follow.wait(timeout=WAIT)
        assert follow.stdout is not None and follow.stderr is not None
        out, err = follow.stdout.read(), follow.stderr.read()
    finally:
        for proc in (follow, runner):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)
    assert follow.returncode == 0, err
    assert out == first[6:] + b"more\nlast bytes"


def test_follow_stops_when_nobody_can_finish_the_task(tmp_path: Path) -> None:
    paths, task = _fake_task(tmp_path)
    (task / "log").write_bytes(b"partial")
    (task / "state").write_text("running\n")
    (task / "pid").write_text("999999999\n")
    (Path(paths.job_dir) / "runner.pid").write_text("999999998\n")
    result = subprocess.run([SH, "-s", *follow_args(paths, "t", 0)], input=follow_script().encode(),
                            capture_output=True, timeout=WAIT)
    assert result.returncode == 0 and result.stdout == b"partial"


def test_log_once_and_errors(tmp_path: Path) -> None:
    paths, task = _fake_task(tmp_path)
    (task / "log").write_bytes(b"0123456789")
    (task / "state").write_text("running\n")
    result = subprocess.run([SH, "-s", *follow_args(paths, "t", 3, follow=False)], input=log_script().encode(),
                            capture_output=True, timeout=WAIT)
    assert result.returncode == 0 and result.stdout == b"3456789"
    beyond = subprocess.run([SH, "-s", *follow_args(paths, "t", 99, follow=False)], input=log_script().encode(),
                            capture_output=True, timeout=WAIT)
    assert beyond.returncode == 0 and beyond.stdout == b""
    bad = subprocess.run([SH, "-s", paths.task_dir("t"), "-1"], input=log_script().encode(), capture_output=True,
                         timeout=WAIT)
    assert bad.returncode == 2
    missing = subprocess.run([SH, "-s", paths.task_dir("nope"), "0"], input=log_script().encode(),
                             capture_output=True, timeout=WAIT)
    assert missing.returncode == 3
    with pytest.raises(ValueError):
        follow_args(paths, "t", -1)


def test_follow_a_real_task(worker: LocalWorker) -> None:
    paths = worker.launch("printf abc; sleep 1; printf 'def\\n'")
    wait_for(lambda: os.path.exists(paths.task_log("main")), what="the log to appear")
    result = subprocess.run([SH, "-s", *follow_args(paths, "main", 1)], input=follow_script(), capture_output=True,
                            text=True, timeout=WAIT)
    assert result.returncode == 0 and result.stdout == "bcdef\n"
    assert worker.file(paths, "main", "exit") == "0"


def test_follow_a_skipped_task_ends(worker: LocalWorker) -> None:
    paths = worker.launch(Playbook("p", (Task("a", "true"), Task("b", "true", ("a",), When.FAILURE))))
    result = subprocess.run([SH, "-s", *follow_args(paths, "b", 0)], input=follow_script(), capture_output=True,
                            text=True, timeout=WAIT)
    assert result.returncode == 0 and result.stdout == ""
    assert worker.file(paths, "b", "state") == "skipped"


# ---------------------------------------------------------------------------------------------------------------
# Clean


def _refs(repo: Path) -> set[str]:
    return set(git(repo, "for-each-ref", "--format=%(refname)").split())


def test_clean_removes_only_that_job(worker: LocalWorker, tmp_path: Path) -> None:
    source = make_repo(tmp_path / "src")
    repo = Path(worker.workspace) / "repos" / "r.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(repo))
    head = git(repo, "rev-parse", "HEAD").strip()
    victim = f"j{secrets.token_hex(3)}"
    neighbour = f"{victim}-x"
    sibling = f"{victim}0"  # a job whose id starts with the victim's
    for job in (victim, neighbour, sibling):
        git(repo, "worktree", "add", "-q", "--detach", f"{worker.workspace}/worktrees/{job}", head)
        git(repo, "update-ref", f"refs/offload/jobs/{job}", head)
    before = _refs(repo)

    meta = {"repo": str(repo)}
    v = worker.launch("sleep 30", job=victim, meta=meta, linger=60)
    n = worker.launch("echo n > out.txt", job=neighbour, meta=meta, linger=60)
    worker.wait_task(v, "main", "running")
    task_pid = int(wait_for(lambda: worker.file(v, "main", "pid"), what="the task's pid"))
    assert worker.wait_job(n) == "success"

    result = sh(clean_script(worker.workspace, victim), timeout=WAIT)
    assert result.returncode == 0, result.stderr
    assert parse_clean(result.stdout) == {victim: True}

    assert not tmux_alive(v.tmux_socket)
    assert not os.path.exists(f"{os.environ['TMUX_TMPDIR']}/tmux-{os.getuid()}/{v.tmux_socket}")
    wait_for(lambda: not pid_running(task_pid), what="the task's process to end")
    assert not os.path.exists(v.job_dir) and not os.path.exists(v.worktree)
    assert _refs(repo) == before - {f"refs/offload/jobs/{victim}"}
    worktrees = git(repo, "worktree", "list", "--porcelain").splitlines()
    assert f"worktree {v.worktree}" not in worktrees and f"worktree {n.worktree}" in worktrees

    # The neighbours are untouched.
    assert tmux_alive(n.tmux_socket, n.job)
    assert read(f"{n.worktree}/out.txt") == "n\n"
    assert os.path.isdir(n.job_dir) and os.path.isdir(f"{worker.workspace}/worktrees/{sibling}")
    assert (Path(source) / "file0.txt").exists() and git(source, "status", "--porcelain") == ""

    # Cleaning again finds nothing; several at once, with the repository given for a job that never launched.
    again = sh(clean_script(worker.workspace, [victim, neighbour, sibling], repo=str(repo)))
    assert parse_clean(again.stdout) == {victim: False, neighbour: True, sibling: True}
    assert _refs(repo) == {r for r in before if not r.startswith("refs/offload/")}
    assert not tmux_alive(n.tmux_socket)
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1  # the bare repository itself


def test_clean_without_git_or_meta(worker: LocalWorker) -> None:
    paths = worker.launch("true", linger=60)
    assert worker.wait_job(paths) == "success"
    Path(paths.worktree, "file").write_text("x")
    result = sh(clean_script(worker.workspace, paths.job))
    assert parse_clean(result.stdout) == {paths.job: True}
    assert not os.path.exists(paths.worktree) and not os.path.exists(paths.job_dir)
    assert not tmux_alive(paths.tmux_socket)
