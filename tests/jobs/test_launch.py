"""The launch script: what it writes, its refusals, hostile text kept as data, secrets kept out of files and argv."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from offload.errors import UsageError
from offload.jobs import launch
from offload.jobs.launch import heredoc, launch_script
from offload.jobs.playbook import Playbook, Task, When
from offload.jobs.state import clean_argv, status_argv
from offload.worker.exits import LaunchExit
from offload.worker.layout import META_VALUE_BYTES, JobPaths
from offload.worker.scripts import worker_script
from tests.jobs.conftest import HOSTILE_DIR, LocalWorker, read, sh, wait_for

from .test_playbook import HOSTILE_NAMES

HOSTILE_COMMAND = """printf '%s\\n' '$(touch pwned)' "it's \\"quoted\\"" '`touch pwned2`; echo semi'
echo "second line"; echo 'tab\there' ; x='$HOME'; echo "$x"
printf '%s\\n' "$(echo computed)"
"""
HOSTILE_OUTPUT = """$(touch pwned)
it's "quoted"
`touch pwned2`; echo semi
second line
tab\there
$HOME
computed
"""


def _launch(tmp: str) -> str:
    paths = JobPaths(f"{tmp}/{HOSTILE_DIR}", "job-1", f"{tmp}/{HOSTILE_DIR}/trees/r/1")
    book = Playbook("p", (Task("a", HOSTILE_COMMAND), Task("b", "true", ("a",), When.ALWAYS)))
    return launch_script(paths, book, env={"SECRET": "it's $(x)"}, meta={"repo": "/r"})


@pytest.mark.parametrize("shell", ["dash", "bash --posix"])
def test_the_launch_script_parses(shell: str, tmp_path: Path) -> None:
    if not shutil.which(shell.split()[0]):
        pytest.skip(f"{shell} is not installed")
    result = subprocess.run([*shell.split(), "-n"], input=_launch(str(tmp_path)), capture_output=True, text=True,
                            timeout=10)
    assert result.returncode == 0, result.stderr


def test_the_launch_script_passes_shellcheck(tmp_path: Path) -> None:
    checker = shutil.which("shellcheck")
    if not checker:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([checker, "-s", "sh", "-S", "warning", "-"], input=_launch(str(tmp_path)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout


def test_heredoc_delimiter_avoids_content(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["deadbeef", "deadbeef", "cafe"])
    monkeypatch.setattr(launch.secrets, "token_hex", lambda n: next(tokens))
    text = "line\nOFFLOAD_EOF_deadbeef\n"
    script = heredoc("out", text)
    assert script == "cat > out <<'OFFLOAD_EOF_cafe'\nline\nOFFLOAD_EOF_deadbeef\nOFFLOAD_EOF_cafe\n"
    assert heredoc("out", "", "fail") == ": > out || fail\n"


def test_launch_writes_the_job(worker: LocalWorker) -> None:
    book = Playbook("review", (
        Task("build", "echo built"),
        Task("test", "echo tested", ("build",)),
        Task("triage", "echo triaged", ("test", "build"), When.FAILURE),
    ))
    paths = worker.launch(book, meta={"repo": "/srv/r it's.git", "playbook": "review", "head": "abc"}, linger=30)
    assert worker.wait_job(paths) == "success"
    job = Path(paths.job_dir)
    assert oct(job.stat().st_mode & 0o777) == "0o700"
    assert read(job / "tasks.list") == "build\ntest\ntriage\n"
    assert read(job / "meta") == "repo=/srv/r it's.git\nplaybook=review\nhead=abc\n"
    assert read(job / "graph.sh") == worker_script("graph.sh")
    assert read(job / "tasks/test/needs") == "build\n"
    assert read(job / "tasks/triage/needs") == "test\nbuild\n"
    assert read(job / "tasks/build/needs") == ""
    assert read(job / "tasks/triage/when") == "failure\n"
    assert read(job / "tasks/build/cmd") == "echo built\n"
    assert worker.file(paths, "build", "log") == "built"
    assert worker.file(paths, "triage", "state") == "skipped"
    # Every file is private to the worker user.
    for f in job.rglob("*"):
        assert f.stat().st_mode & 0o077 == 0, f
    # The windows are named after the tasks, and each task recorded its window.
    windows = wait_for(lambda: _windows(paths), what="the task windows")
    assert windows == {"offload", "build", "test"}
    assert worker.file(paths, "build", "window").startswith("@")


def _windows(paths: JobPaths) -> set[str]:
    from tests.jobs.conftest import tmux
    result = tmux(paths.tmux_socket, "list-windows", "-t", f"={paths.job}", "-F", "#{window_name}")
    names = set(result.stdout.split())
    return names if len(names) == 3 else set()


def test_refusals(worker: LocalWorker, tmp_path: Path) -> None:
    paths = worker.launch("true")
    worker.wait_job(paths)
    again = sh(launch_script(paths, Playbook.single("true"), env={}, meta={}))
    assert again.returncode == LaunchExit.JOB_EXISTS
    assert again.stderr == f"offload: job {paths.job} already exists on this worker\n"

    missing = worker.paths()
    result = sh(launch_script(missing, Playbook.single("true"), env={}, meta={}))
    assert result.returncode == LaunchExit.NO_WORKTREE
    assert "worktree" in result.stderr and not os.path.exists(missing.job_dir)

    os.makedirs(missing.worktree)
    result = sh(launch_script(missing, Playbook.single("true"), env={}, meta={}),
                env={**os.environ, "PATH": "/nonexistent"})
    assert result.returncode == LaunchExit.NO_TMUX
    assert result.stderr == "offload: tmux is not installed on the worker\n"

    # A tmux that cannot start the session: the half-written job is removed.
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "tmux").write_text("#!/bin/sh\nexit 1\n")
    (fake / "tmux").chmod(0o755)
    result = sh(launch_script(missing, Playbook.single("true"), env={}, meta={}),
                env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert result.returncode == LaunchExit.TMUX_FAILED
    assert result.stderr == f"offload: tmux could not start the session of job {missing.job}\n"
    assert not os.path.exists(missing.job_dir)


@pytest.mark.parametrize("job", HOSTILE_NAMES)
def test_hostile_job_ids_rejected(job: str) -> None:
    with pytest.raises(UsageError):
        launch_script(JobPaths("/w", job), Playbook.single("true"), env={}, meta={})
    with pytest.raises(UsageError):
        clean_argv("/w", job)
    with pytest.raises(UsageError):
        status_argv("/w", [job])


@pytest.mark.parametrize("env", [{"A-B": "x"}, {"1A": "x"}, {"A B": "x"}, {"$(x)": "x"}, {"": "x"},
                                 {"TMUX": "x"}, {"TMUX_TMPDIR": "/x"}, {"IFS": "x"}, {"A": "x\0y"},
                                 {"_got": "x"}, {"OFFLOAD_TASK": "x"}, {"A\n": "x"}, {"TMUX\n": "x"}])
def test_bad_env_rejected(env: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        launch_script(JobPaths("/w", "j"), Playbook.single("true"), env=env, meta={})


@pytest.mark.parametrize("meta", [{"Repo": "x"}, {"a-b": "x"}, {"a=b": "x"}, {"repo": "a\nb"}, {"repo": "a\tb"},
                                  {"repo": "a\rb"}, {"repo": "x" * (META_VALUE_BYTES + 1)}, {"repo\n": "x"}])
def test_bad_meta_rejected(meta: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        launch_script(JobPaths("/w", "j"), Playbook.single("true"), env={}, meta=meta)


def test_hostile_command_is_data(worker: LocalWorker) -> None:
    book = Playbook("p", (Task("a", HOSTILE_COMMAND), Task("b", "printf '%s' \"$OFFLOAD_JOB $OFFLOAD_TASK\"")))
    paths = worker.launch(book, env={"ODD": "it's $(touch pwned) `touch pwned2`; \"x\"\n\tnext"})
    assert worker.wait_job(paths) == "success"
    assert read(f"{paths.task_dir('a')}/cmd") == HOSTILE_COMMAND
    assert read(f"{paths.task_dir('a')}/log") == HOSTILE_OUTPUT
    assert read(f"{paths.task_dir('b')}/log") == f"{paths.job} b"
    # The worker fixture's teardown checks that no `pwned` file appeared anywhere.


def test_env_value_reaches_the_task_exactly(worker: LocalWorker) -> None:
    value = "it's $(touch pwned) `touch pwned2`; \"x\"\n\tnext \\ end"
    paths = worker.launch("printf '%s' \"$ODD\"", env={"ODD": value})
    assert worker.wait_job(paths) == "success"
    assert read(f"{paths.task_dir('main')}/log") == value


def test_env_cannot_redirect_the_launch(worker: LocalWorker, tmp_path: Path) -> None:
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    env = {name: str(decoy) for name in ("job_dir", "worktree", "runner", "code", "paths", "SHELL")}
    paths = worker.launch('printf "%s %s" "$job_dir" "$(pwd)"', env=env)
    assert worker.wait_job(paths) == "success"
    assert read(f"{paths.task_dir('main')}/log") == f"{decoy} {paths.worktree}"
    assert list(decoy.iterdir()) == []
    with pytest.raises(UsageError):
        launch_script(paths, Playbook.single("true"), env={"OFFLOAD_JOB_DIR": "/"}, meta={})


def test_secrets_stay_out_of_files_and_argv(worker: LocalWorker, tmp_path: Path, tmux_tmpdir: str) -> None:
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    command = ('printf "%s\\n" "${#OFFLOAD_TEST_SECRET}"\n'
               'printf "%s" "$OFFLOAD_TEST_SECRET" | sha256sum | cut -d" " -f1\n'
               'sleep 1\n')
    paths = worker.launch(command, env={"OFFLOAD_TEST_SECRET": secret})
    worker.wait_task(paths, "main", "running")
    seen_running = False
    deadline = time.monotonic() + 10
    while not worker.job_state(paths) and time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=10).stdout
        assert secret not in ps
        assert not [a for a in _argv_all() if secret in a]
        seen_running = seen_running or "sleep 1" in ps or paths.job_dir in ps
        time.sleep(0.1)
    assert seen_running
    assert worker.wait_job(paths) == "success"
    log = read(f"{paths.task_dir('main')}/log")
    assert log == f"{len(secret)}\n{hashlib.sha256(secret.encode()).hexdigest()}\n"
    for root in (paths.job_dir, paths.worktree, tmux_tmpdir, str(Path.home()), str(tmp_path)):
        found = subprocess.run(["grep", "-r", "-l", "-F", secret, root], capture_output=True, text=True, timeout=10)
        assert found.returncode == 1, f"secret written under {root}: {found.stdout}"


def _argv_all() -> list[str]:
    from tests.jobs.conftest import all_argv
    return all_argv()


@pytest.mark.parametrize("shell", ["dash", "bash --posix", "busybox sh"])
def test_a_leased_launch_script_parses_and_names_no_worktree(shell: str, tmp_path: Path) -> None:
    """Built to go with the sync, before the worktree is known: launch.sh gives it as $1."""
    if not shutil.which(shell.split()[0]):
        pytest.skip(f"{shell} is not installed")
    paths = JobPaths(f"{tmp_path}/{HOSTILE_DIR}", "job-1")
    script = launch_script(paths, Playbook.single("true"), env={"SECRET": "x"}, meta={"repo": "/r", "worktree": ""},
                           leased=True)
    assert script.startswith("_offload_tree=${1:?}\n") and 'OFFLOAD_WORKTREE="$_offload_tree"' in script
    assert "\nworktree=" not in script, "the meta gets the worktree from the worker, not from the client"
    result = subprocess.run([*shell.split(), "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


def test_a_leased_launch_runs_in_the_worktree_it_is_given(worker: LocalWorker, tmp_path: Path) -> None:
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    env = {name: str(decoy) for name in ("worktree", "job_dir", "SHELL")}
    paths = worker.launch('printf "%s|%s" "$(pwd)" "$OFFLOAD_WORKTREE"', env=env, leased=True,
                          meta={"repo": "/r it's", "worktree": ""})
    assert worker.wait_job(paths) == "success"
    assert read(f"{paths.task_dir('main')}/log") == f"{paths.worktree}|{paths.worktree}"
    assert read(f"{paths.job_dir}/meta") == f"repo=/r it's\nworktree={paths.worktree}\n"
    assert list(decoy.iterdir()) == []
    # Given no worktree that exists, it refuses before it writes anything.
    script = launch_script(JobPaths(paths.workspace, "job-2"), Playbook.single("true"), env={}, meta={},
                           leased=True)
    missing = sh(script, f"{tmp_path}/nowhere")
    assert missing.returncode == LaunchExit.NO_WORKTREE and "nowhere does not exist" in missing.stderr
    assert not Path(JobPaths(paths.workspace, "job-2").job_dir).exists()
