"""Reading jobs back: the status records and their parser, the one liveness rule on real processes, following
logs by byte offset, and cleaning one job."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.jobs.playbook import Playbook, Task, When
from offload.jobs.state import (
    JobStatus,
    State,
    TaskStatus,
    clean_argv,
    log_argv,
    parse_clean,
    parse_status,
    status_argv,
)
from offload.worker.exits import LogExit
from offload.worker.layout import META_READ_BYTES, JobPaths
from tests.jobs import conftest
from offload.worker.scripts import library, worker_script
from tests.jobs.conftest import SH, WAIT, LocalWorker, pid_running, read, tmux_alive, wait_for
from tests.workers import PipeReader, git, make_repo

DEAD_PID = "999999999"  # above any pid_max: never a live process


def script(argv: list[str], *, timeout: float = WAIT, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run a worker script's argv (`sh -c SCRIPT sh ARGS...`) with the suite's sh."""
    assert argv[:2] == ["sh", "-c"]
    return subprocess.run([conftest.SH, *argv[1:]], input=stdin, capture_output=True, timeout=timeout)


def status(worker: LocalWorker, *jobs: str) -> dict[str, JobStatus]:
    # The ids go to the script unchecked: it must leave out what is not a job id by itself.
    result = script(status_argv(worker.workspace) + list(jobs))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"offload-status\t2\n")
    return {job.id: job for job in parse_status(result.stdout.decode())}


def test_status_of_running_and_finished_jobs(worker: LocalWorker) -> None:
    book = Playbook("p", (Task("quick", "exit 5"), Task("slow", "sleep 30"),
                          Task("later", "true", ("slow",), When.ALWAYS)))
    meta = {"repo": "/srv/repos/r.git", "head": "0123abc", "playbook": "p", "note": "a=b c\\d 'e'"}
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
    assert r.state is State.RUNNING and r.alive and r.runner_alive and r.finished_at is None
    assert r.meta == meta
    assert r.tasks == [TaskStatus("quick", State.FAILED, 5), TaskStatus("slow", State.RUNNING, None),
                       TaskStatus("later", State.PENDING, None)]
    assert r.exit_code is None
    d = jobs[done.job]
    assert d.state is State.SUCCESS and not d.alive and not d.runner_alive
    assert d.finished_at is not None and abs(d.finished_at - time.time()) < 60
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
    result = script(status_argv(str(tmp_path / "nothing here")))
    assert result.returncode == 0
    assert result.stdout == b"offload-status\t2\nspace\t-\t-\n"  # df cannot tell about a path that is not there
    assert parse_status(result.stdout.decode()) == []


def test_status_sanitizes_odd_files(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "odd"
    (job / "tasks" / "t").mkdir(parents=True)
    (job / "tasks.list").write_text("t\nbad name\n$(x)\n")
    (job / "state").write_text("weird\tstate\n")
    (job / "finished").write_text("soon\n")
    (job / "meta").write_text("repo=/a\tb\nno equals sign\n=empty key\n")
    (job / "tasks" / "t" / "state").write_text("exploded\n")
    (job / "tasks" / "t" / "exit").write_text("1\t2\n")
    (job / "tasks" / "t" / "pid").write_text("not a pid\n")
    result = script(status_argv(str(tmp_path)))
    lines = result.stdout.decode().splitlines()
    assert lines[1].startswith("space\t") and all(f.isdigit() for f in lines[1].split("\t")[1:])
    assert lines[:1] + lines[2:] == [
        "offload-status\t2",
        "job\todd\tpending\t0\t-\t-",
        "meta\todd\trepo\t/a\tb",
        "task\todd\tt\tpending\t-",
    ]
    [odd] = parse_status(result.stdout.decode())
    assert odd.meta == {"repo": "/a\tb"}
    assert odd.state is State.PENDING  # no runner recorded yet: a launch in progress


def test_status_reads_only_the_head_of_a_meta_file(tmp_path: Path) -> None:
    """A meta line of megabytes (an older offload kept whole commands, and a job can write its own meta) makes
    status neither slow nor large: only the first META_READ_BYTES are read, and a line cut there is left out."""
    assert f'head -c {META_READ_BYTES} "$_p_dir/meta"' in worker_script("status.sh")
    job = tmp_path / "jobs" / "long"
    (job / "tasks" / "main").mkdir(parents=True)
    (job / "tasks.list").write_text("main\n")
    (job / "meta").write_text("repo=/r\nplaybook=main\ncommand=\"" + "x" * (8 * 1024 * 1024) + "\"\nbranch=b\n")
    result = script(status_argv(str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) < 1024
    [long] = parse_status(result.stdout.decode())
    assert long.meta == {"repo": "/r", "playbook": "main"} and [t.name for t in long.tasks] == ["main"]


def test_a_cut_command_says_how_long_it_was() -> None:
    job = JobStatus("j", State.SUCCESS, meta={"command": '"make \\u00e9"', "command_bytes": "10485760"})
    assert job.command == "make é… (10485760 bytes)" and job.to_dict()["command"] == job.command
    assert JobStatus("j", State.SUCCESS, meta={"command": '"make"'}).command == "make"


@pytest.fixture
def live_pid() -> Iterator[str]:
    """The pid of a process that stays alive for the test."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield str(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=WAIT)


def _job_on_disk(workspace: Path, runner: str | None, recorded: str | None,
                 tasks: list[tuple[str, str | None, str | None, str | None]], boot: str | None = None) -> None:
    """A job directory as a runner leaves it: TASKS are (name, state, exit code, pid)."""
    d = workspace / "jobs" / "j"
    d.mkdir(parents=True)
    (d / "tasks.list").write_text("".join(f"{t[0]}\n" for t in tasks))
    if runner is not None:
        (d / "runner.pid").write_text(f"{runner}\n")
    if recorded is not None:
        (d / "state").write_text(f"{recorded}\n")
    if boot is not None:
        (d / "boot").write_text(f"{boot}\n")
    for name, state, code, pid in tasks:
        td = d / "tasks" / name
        td.mkdir(parents=True)
        for file, value in (("state", state), ("exit", code), ("pid", pid)):
            if value is not None:
                (td / file).write_text(f"{value}\n")


LIVE, DEAD = "live", DEAD_PID
THIS_BOOT = Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@pytest.mark.parametrize("runner, recorded, tasks, job_state, task_states", [
    (LIVE, None, [("a", "success", "0", DEAD), ("b", None, None, None)], State.RUNNING,
     [State.SUCCESS, State.PENDING]),
    (DEAD, None, [("a", "success", "0", DEAD), ("b", None, None, None)], State.FAILED,
     [State.SUCCESS, State.PENDING]),
    (DEAD, None, [("a", "success", "0", DEAD), ("b", "skipped", None, None)], State.SUCCESS,
     [State.SUCCESS, State.SKIPPED]),
    (LIVE, None, [("a", "running", None, DEAD)], State.FAILED, [State.FAILED]),  # before the runner notices
    (DEAD, None, [("a", "running", None, DEAD)], State.FAILED, [State.FAILED]),
    (LIVE, None, [("a", "running", "0", DEAD)], State.SUCCESS, [State.SUCCESS]),
    (LIVE, None, [("a", "success", "0", DEAD), ("b", "failed", "1", DEAD)], State.FAILED,
     [State.SUCCESS, State.FAILED]),  # the runner lingers; the job has ended with its tasks
    (DEAD, "success", [("a", "failed", "1", DEAD)], State.FAILED, [State.FAILED]),  # the tasks decide
    (DEAD, None, [("a", "running", "0", DEAD)], State.SUCCESS, [State.SUCCESS]),
    (LIVE, None, [("a", "running", "3", LIVE)], State.RUNNING, [State.RUNNING]),
    (LIVE, None, [("a", "running", None, None)], State.RUNNING, [State.RUNNING]),
    (DEAD, None, [("a", "running", None, None)], State.FAILED, [State.FAILED]),
    (None, None, [("a", "running", None, None)], State.RUNNING, [State.RUNNING]),  # its window is opening
    (DEAD, "failed", [("a", "failed", "2", DEAD)], State.FAILED, [State.FAILED]),
    (None, None, [("a", None, None, None)], State.PENDING, [State.PENDING]),
])
def test_states_follow_the_liveness_rule(tmp_path: Path, live_pid: str, runner: str | None, recorded: str | None,
                                         tasks: list[tuple[str, str | None, str | None, str | None]],
                                         job_state: State, task_states: list[State]) -> None:
    def pid(value: str | None) -> str | None:
        return live_pid if value == LIVE else value

    _job_on_disk(tmp_path, pid(runner), recorded, [(n, s, c, pid(p)) for n, s, c, p in tasks], boot=THIS_BOOT)
    [job] = parse_status(script(status_argv(str(tmp_path))).stdout.decode())
    assert job.state is job_state
    assert [t.state for t in job.tasks] == task_states


@pytest.mark.parametrize("runner, job_state", [(LIVE, State.RUNNING), (None, State.PENDING), (DEAD, State.FAILED)])
def test_a_job_whose_tasks_cannot_be_read_is_never_a_success(tmp_path: Path, live_pid: str, runner: str | None,
                                                             job_state: State) -> None:
    d = tmp_path / "jobs" / "j"
    d.mkdir(parents=True)
    (d / "state").write_text("success\n")
    if runner is not None:
        (d / "runner.pid").write_text(f"{live_pid if runner == LIVE else runner}\n")
    [job] = parse_status(script(status_argv(str(tmp_path))).stdout.decode())
    assert job.state is job_state and job.tasks == []


def test_a_job_from_an_earlier_boot_is_not_running(tmp_path: Path, live_pid: str) -> None:
    """After a reboot, the pids a job recorded belong to other processes: none of them counts as alive."""
    _job_on_disk(tmp_path, live_pid, None, [("a", "running", None, live_pid), ("b", None, None, None)],
                 boot="00000000-0000-0000-0000-000000000000")
    [job] = parse_status(script(status_argv(str(tmp_path))).stdout.decode())
    assert job.state is State.FAILED and not job.runner_alive
    assert [t.state for t in job.tasks] == [State.FAILED, State.PENDING]


def test_parse_status_groups_by_job() -> None:
    text = ("offload-status\t2\nmeta\tb\tk\tv\njob\ta\tsuccess\t0\t0\t1700000000\ntask\ta\tmain\tsuccess\t0\n"
            "job\tb\tfailed\t1\t0\t-\ntask\tb\tmain\tfailed\t9\ntask\tc\tmain\tsuccess\t0\nfuture\tb\tx\n")
    jobs = parse_status(text)
    assert [j.id for j in jobs] == ["a", "b"]
    by_id = {j.id: j for j in jobs}
    assert by_id["b"].meta == {"k": "v"} and by_id["b"].alive and by_id["b"].exit_code == 9
    assert by_id["a"].tasks == [TaskStatus("main", State.SUCCESS, 0)] and by_id["a"].finished_at == 1700000000
    assert by_id["b"].finished_at is None


# ---------------------------------------------------------------------------------------------------------------
# Logs


def _follow(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([conftest.SH, *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


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
    follow = _follow(log_argv(paths, "t", 6, follow=True))
    printed = PipeReader(follow.stdout)
    try:
        # It prints what the log holds and, the task running, goes on waiting for more.
        printed.wait_for(first[6:], timeout=WAIT)
        assert follow.poll() is None
        with open(task / "log", "ab") as f:
            f.write(b"more\n")
        printed.wait_for(first[6:] + b"more\n", timeout=WAIT)
        assert follow.poll() is None
        with open(task / "log", "ab") as f:
            f.write(b"last bytes")
        (task / "exit.tmp").write_text("0\n")
        os.replace(task / "exit.tmp", task / "exit")
        rest, err = follow.communicate(timeout=WAIT)
    finally:
        for proc in (follow, runner):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)
    assert follow.returncode == 0, err
    assert printed.data + rest == first[6:] + b"more\nlast bytes"


def test_follow_stops_when_nobody_can_finish_the_task(tmp_path: Path) -> None:
    paths, task = _fake_task(tmp_path)
    (task / "log").write_bytes(b"partial")
    (task / "state").write_text("running\n")
    (task / "pid").write_text(f"{DEAD_PID}\n")
    (Path(paths.job_dir) / "runner.pid").write_text(f"{DEAD_PID}\n")
    result = script(log_argv(paths, "t", 0, follow=True))
    assert result.returncode == 0 and result.stdout == b"partial"


def test_log_once_and_errors(tmp_path: Path) -> None:
    paths, task = _fake_task(tmp_path)
    (task / "log").write_bytes(b"0123456789")
    (task / "state").write_text("running\n")
    result = script(log_argv(paths, "t", 3))
    assert result.returncode == 0 and result.stdout == b"3456789"
    beyond = script(log_argv(paths, "t", 99))
    assert beyond.returncode == 0 and beyond.stdout == b""
    limited = script(log_argv(paths, "t", 3, limit=4))
    assert limited.returncode == 0 and limited.stdout == b"3456"
    assert script(log_argv(paths, "t", 8, limit=4)).stdout == b"89"
    argv = log_argv(paths, "t", 0)
    assert argv[-2:] == ["0", "once"]
    bad = script(argv[:-2] + ["-1", "once"])
    assert bad.returncode == 2
    hostile = script(argv[:-3] + ["../../etc", "0", "once"])
    assert hostile.returncode == 2
    assert script(argv + ["x"]).returncode == 2, "a limit is a number"
    assert script(argv[:-1] + ["follow", "3"]).returncode == 2, "a followed log takes no limit"
    missing = script(log_argv(paths, "nope", 0))
    assert missing.returncode == LogExit.NO_TASK
    with pytest.raises(ValueError):
        log_argv(paths, "t", -1)
    with pytest.raises(ValueError):
        log_argv(paths, "t", 0, follow=True, limit=3)


def test_follow_a_real_task(worker: LocalWorker) -> None:
    paths = worker.launch("printf abc; sleep 1; printf 'def\\n'")
    wait_for(lambda: os.path.exists(paths.task_log("main")), what="the log to appear")
    result = script(log_argv(paths, "main", 1, follow=True))
    assert result.returncode == 0 and result.stdout == b"bcdef\n"
    assert worker.file(paths, "main", "exit") == "0"


def test_follow_a_skipped_task_ends(worker: LocalWorker) -> None:
    paths = worker.launch(Playbook("p", (Task("a", "true"), Task("b", "true", ("a",), When.FAILURE))))
    result = script(log_argv(paths, "b", 0, follow=True))
    assert result.returncode == 0 and result.stdout == b""
    assert worker.file(paths, "b", "state") == "skipped"


# ---------------------------------------------------------------------------------------------------------------
# Clean


def _refs(repo: Path) -> set[str]:
    return set(git(repo, "for-each-ref", "--format=%(refname)").split())


def _lease(workspace: str, repo_id: str, job: str, commit: str) -> str:
    """Lease a warm worktree as the sync does; returns its path."""
    body = 'lease_tree "$1" "$2" "$3" "$4" && printf %s "$_p_tree"'
    out = subprocess.run([SH, "-c", f"{library()}\n{body}", "sh", workspace, repo_id, job, commit],
                         capture_output=True, text=True, timeout=WAIT, check=True)
    return out.stdout


def test_clean_removes_only_that_job(worker: LocalWorker, tmp_path: Path) -> None:
    source = make_repo(tmp_path / "src")
    repo = Path(worker.workspace) / "repos" / "r.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(repo))
    head = git(repo, "rev-parse", "HEAD").strip()
    victim = f"j{secrets.token_hex(3)}"
    neighbour = f"{victim}-x"
    sibling = f"{victim}0"  # a job whose id starts with the victim's, whose launch never happened
    trees = {}
    for job in (victim, neighbour, sibling):
        git(repo, "update-ref", f"refs/offload/jobs/{job}", head)
        trees[job] = _lease(worker.workspace, "r", job, head)
    assert len(set(trees.values())) == 3
    before = _refs(repo)

    meta = {"repo": str(repo)}
    v = worker.launch("sleep 30", job=victim, meta=dict(meta, worktree=trees[victim]), linger=60,
                      worktree=trees[victim])
    n = worker.launch("echo n > out.txt", job=neighbour, meta=dict(meta, worktree=trees[neighbour]), linger=60,
                      worktree=trees[neighbour])
    worker.wait_task(v, "main", "running")
    task_pid = int(wait_for(lambda: worker.file(v, "main", "pid"), what="the task's pid"))
    assert worker.wait_job(n) == "success"

    result = script(clean_argv(worker.workspace, victim))
    assert result.returncode == 0, result.stderr
    assert parse_clean(result.stdout.decode()) == ({victim: True}, [])

    assert not tmux_alive(v.tmux_socket)
    assert not os.path.exists(f"{os.environ['TMUX_TMPDIR']}/tmux-{os.getuid()}/{v.tmux_socket}")
    wait_for(lambda: not pid_running(task_pid), what="the task's process to end")
    assert not os.path.exists(v.job_dir)
    # The finished neighbour recorded its result; of the victim nothing is left.
    assert _refs(repo) == (before - {f"refs/offload/jobs/{victim}"}) | {f"refs/offload/results/{neighbour}"}
    # The worktree stays in the pool, given back; the neighbours keep theirs.
    assert os.path.isdir(trees[victim]) and not os.path.exists(f"{trees[victim]}.lease")
    assert not os.path.exists(f"{trees[neighbour]}.lease"), "a job gives its worktree back when it ends"
    assert read(f"{trees[sibling]}.lease/job") == f"{sibling}\n"
    assert tmux_alive(n.tmux_socket, n.job)
    assert read(f"{trees[neighbour]}/out.txt") == "n\n"
    assert os.path.isdir(n.job_dir)
    assert (Path(source) / "file0.txt").exists() and git(source, "status", "--porcelain") == ""

    # Cleaning again finds nothing; several at once, the sibling found by its lease and its ref alone.
    again = script(clean_argv(worker.workspace, [victim, neighbour, sibling]))
    assert parse_clean(again.stdout.decode())[0] == {victim: False, neighbour: True, sibling: True}
    assert _refs(repo) == {r for r in before if not r.startswith("refs/offload/")}
    assert not tmux_alive(n.tmux_socket)
    assert not list(Path(worker.workspace).glob("trees/r/*.lease"))
    assert len(list(Path(worker.workspace).glob("trees/r/[0-9]"))) == 3  # the warm worktrees themselves stay


def test_clean_without_git_or_meta(worker: LocalWorker) -> None:
    paths = worker.launch("true", linger=60)
    assert worker.wait_job(paths) == "success"
    result = script(clean_argv(worker.workspace, paths.job))
    assert parse_clean(result.stdout.decode()) == ({paths.job: True}, [])
    assert not os.path.exists(paths.job_dir)
    assert not tmux_alive(paths.tmux_socket)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_running(int(entry)):
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_clean_stops_what_ignores_hangups_and_terms(worker: LocalWorker) -> None:
    """nohup'd servers, processes that trap TERM and daemons that left the task's process group all go."""
    marker = f"{secrets.randbelow(10**6) + 10**6}"
    command = (f"nohup sh -c 'trap \"\" HUP TERM; sleep {marker}1' > /dev/null 2>&1 &\n"
               f"setsid sh -c 'trap \"\" HUP TERM; exec sleep {marker}2' > /dev/null 2>&1 &\n"
               f"sh -c 'trap \"\" HUP TERM; sleep {marker}3 & wait' &\n"
               "echo started; sleep 60")
    paths = worker.launch(command, linger=60)
    wait_for(lambda: all(_processes_with(f"sleep {marker}{i}") for i in (1, 2, 3)), what="the job's three processes")
    result = script(clean_argv(worker.workspace, paths.job), timeout=30)
    assert result.returncode == 0, result.stderr
    assert parse_clean(result.stdout.decode()) == ({paths.job: True}, [])
    wait_for(lambda: not _processes_with(f"sleep {marker}"), timeout=5, what="every process of the job to end")


def test_clean_stops_what_a_finished_task_left_running(worker: LocalWorker) -> None:
    marker = f"{secrets.randbelow(10**6) + 10**6}"
    paths = worker.launch(f"nohup sh -c 'trap \"\" HUP TERM; exec sleep {marker}' > /dev/null 2>&1 & echo done",
                          linger=60)
    assert worker.wait_job(paths) == "success"
    wait_for(lambda: _processes_with(f"sleep {marker}"), what="the left-over server")
    result = script(clean_argv(worker.workspace, paths.job), timeout=30)
    assert parse_clean(result.stdout.decode()) == ({paths.job: True}, [])
    wait_for(lambda: not _processes_with(f"sleep {marker}"), timeout=5, what="the server to end")


def test_clean_never_signals_another_jobs_processes(worker: LocalWorker) -> None:
    """A recorded pid that now names a process of another job (pid reuse) is not this job's to stop."""
    other = worker.launch("sleep 60", linger=60)
    other_pid = int(wait_for(lambda: worker.file(other, "main", "pid"), what="the other job's task"))
    mine = worker.launch("true", linger=0)
    assert worker.wait_job(mine) == "success"
    Path(mine.task_dir("main"), "pid").write_text(f"{other_pid}\n")
    result = script(clean_argv(worker.workspace, mine.job), timeout=30)
    assert parse_clean(result.stdout.decode()) == ({mine.job: True}, [])
    assert pid_running(other_pid) and status(worker, other.job)[other.job].state is State.RUNNING


def test_a_launch_that_never_recorded_its_runner_is_failed_once_it_is_old(tmp_path: Path) -> None:
    d = tmp_path / "jobs" / "j"
    (d / "tasks" / "main").mkdir(parents=True)
    (d / "tasks.list").write_text("main\n")
    [job] = parse_status(script(status_argv(str(tmp_path))).stdout.decode())
    assert job.state is State.PENDING  # a launch under way
    old = time.time() - 600
    os.utime(d, (old, old))
    [job] = parse_status(script(status_argv(str(tmp_path))).stdout.decode())
    assert job.state is State.FAILED


def test_a_leftover_is_found_by_its_id(tmp_path: Path) -> None:
    lease = tmp_path / "trees" / "r" / "1.lease"
    lease.mkdir(parents=True)
    (lease / "job").write_text("half\n")
    old = time.time() - 600
    os.utime(lease, (old, old))
    assert [(j.id, j.state) for j in parse_status(script(status_argv(str(tmp_path), ["half"])).stdout.decode())] \
        == [("half", State.FAILED)]
