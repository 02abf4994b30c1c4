"""The task-graph runner: parallel tasks, `when` rules, exit codes, restarts, lost windows and the linger."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from offload.jobs.playbook import Playbook, Task, When
from offload.worker.exits import GraphExit
from offload.worker.scripts import worker_script
from tests.jobs import conftest
from tests.jobs.conftest import SH, WAIT, LocalWorker, pid_running, read, tmux, tmux_alive, wait_for
from tests.workers import children_map, proc_cmdline


def test_independent_tasks_run_in_parallel(worker: LocalWorker) -> None:
    # Each task waits for the other to have started: run one after the other, neither would ever end.
    book = Playbook("p", (Task("one", ": > one.started; until [ -e two.started ]; do sleep 0.05; done"),
                          Task("two", ": > two.started; until [ -e one.started ]; do sleep 0.05; done")))
    paths = worker.launch(book)
    assert worker.wait_job(paths) == "success"


def test_exit_codes_and_when_rules(worker: LocalWorker) -> None:
    s, f, a = When.SUCCESS, When.FAILURE, When.ALWAYS
    book = Playbook("p", (
        Task("ok", "echo fine"),
        Task("bad", "echo oops >&2; exit 7"),
        Task("after_ok", "true", ("ok",), s),
        Task("after_bad", "true", ("bad",), s),
        Task("on_failure", "exit 3", ("bad",), f),
        Task("on_failure_of_ok", "true", ("ok",), f),
        Task("always_after_bad", "true", ("bad",), a),
        Task("failure_without_needs", "true", (), f),
        Task("after_skipped", "true", ("after_bad",), s),
        Task("always_after_skipped", "true", ("after_bad",), a),
        Task("mixed_failure", "true", ("ok", "bad"), f),
        Task("mixed_success", "true", ("ok", "bad"), s),
    ))
    happy = Playbook("q", (Task("a", "true"), Task("b", "true", ("a",)), Task("c", "true", ("b",), f)))
    paths = worker.launch(book)
    happy_paths = worker.launch(happy)
    assert worker.wait_job(paths) == "failed"
    assert worker.wait_job(happy_paths) == "success"
    expected = {
        "ok": ("success", "0"),
        "bad": ("failed", "7"),
        "after_ok": ("success", "0"),
        "after_bad": ("skipped", None),
        "on_failure": ("failed", "3"),
        "on_failure_of_ok": ("skipped", None),
        "always_after_bad": ("success", "0"),
        "failure_without_needs": ("skipped", None),
        "after_skipped": ("skipped", None),
        "always_after_skipped": ("success", "0"),
        "mixed_failure": ("success", "0"),
        "mixed_success": ("skipped", None),
    }
    got = {t: (worker.file(paths, t, "state"), worker.file(paths, t, "exit")) for t in expected}
    assert got == expected
    assert read(f"{paths.task_dir('bad')}/log") == "oops\n"
    assert [worker.file(happy_paths, t, "state") for t in "abc"] == ["success", "success", "skipped"]


def test_exit_code_is_the_commands_not_tees(worker: LocalWorker) -> None:
    paths = worker.launch("echo out; echo err >&2; (exit 42)")
    assert worker.wait_job(paths) == "failed"
    assert worker.file(paths, "main", "exit") == "42"
    assert read(f"{paths.task_dir('main')}/log") in ("out\nerr\n", "err\nout\n")


def test_tasks_run_in_the_worktree_with_bash(worker: LocalWorker) -> None:
    paths = worker.launch('pwd; [[ -n "$BASH_VERSION" ]] && echo bash; echo "$OFFLOAD_TASK"')
    assert worker.wait_job(paths) == "success"
    assert read(f"{paths.task_dir('main')}/log") == f"{paths.worktree}\nbash\nmain\n"


def test_killed_window_is_detected_as_failed(worker: LocalWorker) -> None:
    book = Playbook("p", (
        Task("long", "sleep 30"),
        Task("next", "true", ("long",)),
        Task("rescue", "echo rescued", ("long",), When.FAILURE),
    ))
    paths = worker.launch(book)
    window = wait_for(lambda: worker.file(paths, "long", "window"), what="the task's window")
    worker.wait_task(paths, "long", "running")
    started = time.monotonic()
    assert tmux(paths.tmux_socket, "kill-window", "-t", window).returncode == 0
    assert worker.wait_job(paths) == "failed"
    assert time.monotonic() - started < 3
    assert worker.file(paths, "long", "state") == "failed"
    assert worker.file(paths, "long", "exit") is None
    assert "ended without an exit code" in read(f"{paths.task_dir('long')}/log")
    assert worker.file(paths, "next", "state") == "skipped"
    assert worker.file(paths, "rescue", "state") == "success"


def _counts(worktree: str) -> dict[str, int]:
    return {name: len((read(f"{worktree}/{name}.count") or "").splitlines()) for name in "abc"}


def test_restarted_runner_does_not_rerun_tasks(worker: LocalWorker) -> None:
    book = Playbook("p", (
        Task("a", "echo a >> a.count"),
        Task("b", "echo b >> b.count; until [ -e b.go ]; do sleep 0.05; done", ("a",)),
        Task("c", "echo c >> c.count", ("b",)),
    ))
    paths = worker.launch(book, linger=60)
    runner_pid = int(wait_for(lambda: read(f"{paths.job_dir}/runner.pid"), what="runner.pid"))
    worker.wait_task(paths, "b", "running")
    task_pid = int(wait_for(lambda: worker.file(paths, "b", "pid"), what="task b's window"))

    # A second runner refuses while the first one lives.
    second = subprocess.run([SH, paths.graph_script, paths.job_dir, paths.worktree], capture_output=True,
                            text=True, timeout=WAIT, stdin=subprocess.DEVNULL)
    assert second.returncode == GraphExit.RUNNER_ALIVE
    assert f"already has a runner (pid {runner_pid})" in second.stderr

    os.kill(runner_pid, signal.SIGKILL)
    Path(paths.worktree, "b.go").touch()
    worker.wait_task(paths, "b", "success")  # the task goes on without its runner
    # Once the runner and b's window are gone, nothing is left that could start c.
    wait_for(lambda: not pid_running(runner_pid) and not pid_running(task_pid), what="the runner and b to be gone")
    assert worker.file(paths, "c", "state") is None
    assert worker.job_state(paths) is None

    # Restarted outside tmux (as a recovery step would), it finishes the job without repeating a or b.
    env = {**os.environ, "OFFLOAD_LINGER_SECONDS": "0"}
    restarted = subprocess.Popen([SH, paths.graph_script, paths.job_dir, paths.worktree], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = restarted.communicate(timeout=WAIT)
    finally:
        if restarted.poll() is None:
            restarted.kill()
            restarted.wait(timeout=WAIT)
    assert restarted.returncode == 0, err
    assert worker.job_state(paths) == "success"
    assert _counts(paths.worktree) == {"a": 1, "b": 1, "c": 1}
    # The runner ended the tmux server after the (zero) linger.
    wait_for(lambda: not tmux_alive(paths.tmux_socket), what="the tmux server to exit")


def test_task_marked_running_but_never_started_is_failed(tmp_path: Path) -> None:
    job_dir = tmp_path / "jobs" / "lost"
    task = job_dir / "tasks" / "x"
    task.mkdir(parents=True)
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (job_dir / "graph.sh").write_text(worker_script("graph.sh"))
    (job_dir / "tasks.list").write_text("x\ny\n")
    (task / "cmd").write_text("true\n")
    (task / "state").write_text("running\n")
    y = job_dir / "tasks" / "y"
    y.mkdir()
    (y / "needs").write_text("x\n")
    (y / "when").write_text("success\n")
    env = {**os.environ, "OFFLOAD_LINGER_SECONDS": "0"}
    result = subprocess.run([SH, str(job_dir / "graph.sh"), str(job_dir), str(worktree)], capture_output=True,
                            text=True, timeout=WAIT, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert read(task / "state") == "failed\n"
    assert read(y / "state") == "skipped\n"
    assert read(job_dir / "state") == "failed\n"
    assert "never started" in read(task / "log")


def test_a_snapshot_job_whose_worktree_is_not_a_worktree_of_its_repository_runs_nothing(worker: LocalWorker,
                                                                                       tmp_path: Path) -> None:
    """The runner moves the worktree to the job's snapshot before any task. A worktree it cannot move (here a plain
    directory, no git worktree of the job's repository at all) fails every task with the reason, and runs none."""
    bare = tmp_path / "r.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True, timeout=WAIT)
    book = Playbook("p", (Task("a", ": > ran"), Task("b", ": > ran", ("a",), When.ALWAYS)))
    paths = worker.launch(book, meta={"repo": str(bare), "commit": "1" * 40})
    assert worker.wait_job(paths) == "failed"
    for task in "ab":
        assert (worker.file(paths, task, "state"), worker.file(paths, task, "exit")) == ("failed", None)
        assert (f"the worktree could not be moved to the snapshot: {paths.worktree} is not a worktree of {bare}"
                in read(f"{paths.task_dir(task)}/log")), task
    assert not os.path.exists(f"{paths.worktree}/ran")


def test_runner_rejects_bad_arguments(tmp_path: Path) -> None:
    script = tmp_path / "graph.sh"
    script.write_text(worker_script("graph.sh"))
    for args in ([], [str(tmp_path)], [str(tmp_path), str(tmp_path)], ["--task", str(tmp_path), "w", "a;b"]):
        result = subprocess.run([SH, str(script), *args], capture_output=True, text=True, timeout=WAIT,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 2, args


def test_server_lingers_after_the_job_then_exits(worker: LocalWorker, tmux_tmpdir: str) -> None:
    paths = worker.launch("echo done", linger=1)
    assert worker.wait_job(paths) == "success"
    assert tmux_alive(paths.tmux_socket, paths.job)  # windows stay for `offload attach`
    wait_for(lambda: not tmux_alive(paths.tmux_socket), timeout=5, what="the tmux server to exit after 1 s")
    assert not os.path.exists(f"{tmux_tmpdir}/tmux-{os.getuid()}/{paths.tmux_socket}")


def test_attached_client_keeps_the_server(worker: LocalWorker) -> None:
    paths = worker.launch("sleep 1", linger=1)
    master, slave = os.openpty()
    client = subprocess.Popen(["tmux", "-f", "/dev/null", "-L", paths.tmux_socket, "attach", "-t", f"={paths.job}"],
                              stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "TERM": "xterm"},
                              start_new_session=True)
    os.close(slave)
    try:
        wait_for(lambda: tmux(paths.tmux_socket, "list-clients").stdout.strip(), what="the client to attach")
        assert worker.wait_job(paths) == "success"
        # The lingering runner looks for clients, naps a second (`sleep 1`), and looks again. Without a client it
        # ends the server at its second look, so a second nap means that look found the client.
        runner = int(read(f"{paths.job_dir}/runner.pid") or 0)
        naps: set[int] = set()

        def napping() -> bool:
            kids = children_map()
            naps.update(p for p in kids.get(runner, ()) if proc_cmdline(p) == ["sleep", "1"])
            return len(naps) >= 2

        wait_for(napping, timeout=WAIT, what="the runner to look for clients twice past its linger")
        assert tmux_alive(paths.tmux_socket, paths.job)
    finally:
        client.kill()
        client.wait(timeout=WAIT)
        os.close(master)
    wait_for(lambda: not tmux_alive(paths.tmux_socket), timeout=6, what="the tmux server to exit once detached")


def test_many_tasks(worker: LocalWorker) -> None:
    tasks = [Task(f"t{i}", f"echo {i}", (f"t{i - 1}",) if i % 3 else ()) for i in range(12)]
    paths = worker.launch(Playbook("p", tuple(tasks)))
    assert worker.wait_job(paths) == "success"
    assert [read(f"{paths.task_dir(t.name)}/log") for t in tasks] == [f"{i}\n" for i in range(12)]


def test_interrupting_a_task_records_its_exit(worker: LocalWorker) -> None:
    paths = worker.launch(": > started; sleep 30")
    window = wait_for(lambda: worker.file(paths, "main", "window"), what="the task's window")
    # The command has started, so the task's INT trap is in place and the interrupt reaches the command.
    wait_for(lambda: os.path.exists(f"{paths.worktree}/started"), what="the command to start")
    assert worker.file(paths, "main", "state") == "running"
    assert tmux(paths.tmux_socket, "send-keys", "-t", window, "C-c").returncode == 0
    assert worker.wait_job(paths) == "failed"
    assert worker.file(paths, "main", "exit") == "130"


@pytest.mark.parametrize("shell", ["dash", "bash", "busybox"])
def test_runs_under_other_shells(worker: LocalWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 shell: str) -> None:
    """Worker images differ in what `sh` is; the scripts keep to POSIX so each of these runs them."""
    binary = shutil.which(shell)
    if not binary:
        pytest.skip(f"{shell} is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if shell == "busybox":
        (bin_dir / "sh").write_text(f"#!/bin/dash\nexec {binary} sh \"$@\"\n")
        (bin_dir / "sh").chmod(0o755)
    else:
        (bin_dir / "sh").symlink_to(binary)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(conftest, "SH", str(bin_dir / "sh"))  # the launch script too
    book = Playbook("p", (
        Task("a", "echo a; exit 4"),
        Task("b", "echo b", ("a",), When.FAILURE),
        Task("c", "echo c", ("a",)),
        Task("d", "sleep 0.3; echo d"),
    ))
    paths = worker.launch(book, linger=5)
    runner = int(wait_for(lambda: read(f"{paths.job_dir}/runner.pid"), what="runner.pid"))
    # The pane's process is `sh -c "exec sh graph.sh ..."`: wait for the exec.
    wait_for(lambda: os.path.basename(os.readlink(f"/proc/{runner}/exe")) == shell, what=f"the runner to be {shell}")
    assert worker.wait_job(paths) == "failed"
    states = {t: (worker.file(paths, t, "state"), worker.file(paths, t, "exit")) for t in "abcd"}
    assert states == {"a": ("failed", "4"), "b": ("success", "0"), "c": ("skipped", None), "d": ("success", "0")}
    assert read(f"{paths.task_dir('d')}/log") == "d\n"
