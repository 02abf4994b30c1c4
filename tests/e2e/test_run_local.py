"""The built-in `local` worker and the `local-docker` provider, end to end through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import all_cmdlines, container_hostname, offload, spawn, stderr_line
from tests.workers import (DockerWorker, docker_record, git, make_repo, proc_cwd, proc_stat, tree_digest, wait_for,
                           write_outputs)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo")
    (r / "draft.txt").write_text("not committed\n")
    return r


def test_local_is_the_default_worker(repo: Path) -> None:
    before = tree_digest(repo)
    p = offload("run", "--wait", "--", "sh", "-c", "cat draft.txt; pwd", cwd=repo)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert lines[0] == "not committed"
    workspace = Path(os.environ["OFFLOAD_CACHE_DIR"]) / "local"
    assert lines[1].startswith(str(workspace / "trees"))
    assert tree_digest(repo) == before


def test_a_lingering_job_keeps_nothing_of_the_callers_directory(repo: Path) -> None:
    """After a job, its runner and tmux server stay for `offload attach`. They work from the job's directory, so
    the caller's repository (and the file system it is on) is free once `run` returns; the task still starts in
    its worktree, in the caller's subdirectory."""
    p = offload("run", "--job", "lingers", "--wait", "--", "pwd", cwd=repo / "src")
    assert p.returncode == 0, p.stderr
    workspace = Path(os.environ["OFFLOAD_CACHE_DIR"]) / "local"
    assert p.stdout.decode().startswith(str(workspace / "trees")) and p.stdout.decode().endswith("/src\n")
    job_dir = os.path.realpath(workspace / "jobs" / "lingers")
    runner = int((workspace / "jobs" / "lingers" / "runner.pid").read_text())
    stat = proc_stat(runner)
    assert stat is not None, "the runner lingers"
    server = stat[1]  # the runner is the first pane of the job's tmux server
    assert (proc_cwd(runner), proc_cwd(server)) == (job_dir, job_dir)


def test_local_exit_code_and_status_json(repo: Path) -> None:
    p = offload("run", "--job", "j-local", "--wait", "--", "exit 9", cwd=repo)
    assert p.returncode == 9
    p = offload("status", "--json", cwd=repo)
    data = json.loads(p.stdout)
    (w,) = data["workers"]
    assert w["name"] == "local" and w["state"] == "running"
    (job,) = w["jobs"]
    assert job["id"] == "j-local" and job["state"] == "failed"
    assert job["tasks"] == [{"name": "main", "state": "failed", "exit_code": 9}]
    assert offload("check", "j-local", cwd=repo).returncode == 1


def test_status_lists_jobs_oldest_first_with_start_duration_and_command(repo: Path) -> None:
    (repo / "offload.yaml").write_text("playbooks:\n  two:\n    tasks:\n      a: {run: 'true'}\n"
                                       "      b: {run: 'exit 4', needs: [a]}\n")
    # Ids that sort the other way round from their start times.
    assert offload("run", "--job", "zz-first", "--wait", "--", "sleep 2.1; echo one", cwd=repo).returncode == 0
    assert offload("run", "--job", "mm-second", "--playbook", "two", "--wait", cwd=repo).returncode == 4
    started = offload("run", "--job", "aa-third", "--", "sleep 30", cwd=repo)
    assert started.returncode == 0, started.stderr
    p = offload("status", "--json", cwd=repo)
    assert p.returncode == 0, p.stderr
    (w,) = json.loads(p.stdout)["workers"]
    jobs = w["jobs"]
    assert [j["id"] for j in jobs] == ["zz-first", "mm-second", "aa-third"]
    assert [j["command"] for j in jobs] == ["sleep 2.1; echo one", None, "sleep 30"]
    assert [j["playbook"] for j in jobs] == [None, "two", None]
    assert [j["state"] for j in jobs] == ["success", "failed", "running"]
    assert all(j["started"].endswith("Z") for j in jobs)
    assert jobs[0]["finished"] and jobs[1]["finished"] and jobs[2]["finished"] is None
    assert jobs[0]["started"] < jobs[1]["started"] <= jobs[2]["started"]

    table = offload("status", cwd=repo)  # piped: the table's rows as tab-separated lines
    rows = [line.split("\t") for line in table.stdout.decode().splitlines() if line.split("\t")[0] in
            ("zz-first", "mm-second", "aa-third")]
    assert [(r[0], r[2], r[5]) for r in rows] == [("zz-first", "success", "sleep 2.1; echo one"),
                                                  ("mm-second", "failed", "playbook two"),
                                                  ("aa-third", "running", "sleep 30")]
    assert rows[0][4] in ("1s", "2s", "3s") and rows[0][3].count(":") == 2  # finished is kept in whole seconds
    assert rows[1][6] == "a:success b:failed(4)"
    assert offload("clean", "--all", "--yes", cwd=repo).returncode == 0


def test_the_callers_git_environment_reaches_neither_the_job_nor_the_repository(repo: Path) -> None:
    before = tree_digest(repo)
    env = {"GIT_DIR": str(repo / ".git"), "GIT_INDEX_FILE": ".git/index.lock", "GIT_WORK_TREE": str(repo),
           "GIT_OBJECT_DIRECTORY": str(repo / ".git" / "objects"), "VIRTUAL_ENV": "/nowhere",
           "OFFLOAD_TEST_PRIVATE": "not for the job"}
    p = offload("run", "--wait", "--", "ls; git status --short; env | cut -d= -f1", cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    words = p.stdout.decode().split()
    assert {"draft.txt", "file0.txt", "run.sh", "src"} <= set(words)
    assert not [w for w in words if w.startswith("GIT_")] and "VIRTUAL_ENV" not in words
    assert "OFFLOAD_TEST_PRIVATE" not in words and "HOME" in words and "PATH" in words
    assert tree_digest(repo) == before


def test_a_pre_commit_hook_that_offloads_leaves_the_commit_whole(repo: Path) -> None:
    """Inside a hook git points GIT_INDEX_FILE at the commit's own index: a job that runs `git add -A` must
    change its worktree, never the commit being made."""
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\nexec {sys.executable} -m offload run --wait -- 'ls > listing; git add -A'\n")
    hook.chmod(0o755)
    (repo / "new.txt").write_text("staged\n")
    git(repo, "add", "new.txt")
    result = subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "with a hook"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null",
                                                         "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
                                                         "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})
    assert result.returncode == 0, result.stderr
    committed = set(git(repo, "ls-tree", "-r", "--name-only", "HEAD").split())
    assert committed == {"file0.txt", "file1.txt", "file2.txt", "src/module.py", "run.sh", "new.txt"}
    assert git(repo, "status", "--porcelain").split() == ["??", "draft.txt"]
    assert not (repo / "listing").exists()


@pytest.mark.parametrize("args", [["--bogus", "--wait", "--", "true"], ["--wiat", "--", "touch", "X"]])
def test_an_unknown_option_before_the_command_starts_nothing(repo: Path, args: list[str]) -> None:
    p = offload("run", *args, cwd=repo)
    assert p.returncode == (202 if "--wait" in args else 2), "under --wait, offload's own failures exit 200 + code"
    assert stderr_line(p).startswith(f"offload: No such option: {args[0]}")
    assert json.loads(offload("status", "--json", cwd=repo).stdout)["workers"][0]["jobs"] == []


def test_options_after_the_command_belong_to_it(repo: Path) -> None:
    p = offload("run", "--wait", "printf", "%s-%s", "--wait", "-n", cwd=repo)
    assert (p.returncode, p.stdout) == (0, b"--wait--n"), p.stderr


def test_outputs_from_environment_variable(repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "local", [{"name": "here", "host": "localhost",
                                                        "workspace": str(tmp_path / "ws")}])
    p = offload("run", "--wait", "--", "echo", "via env", cwd=repo, env={"OFFLOAD_OUTPUTS": str(out)})
    assert p.returncode == 0 and p.stdout == b"via env\n", p.stderr
    assert (tmp_path / "ws" / "trees").is_dir()


def test_bad_outputs_file_is_one_clear_line(repo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"provider": "gce-cos", "developer": "d", "workers": [{"name": "w", "host": "h"}]}')
    p = offload("run", "--outputs", str(bad), "--", "true", cwd=repo)
    assert p.returncode == 2
    assert "workspace" in stderr_line(p)
    bad.write_text('{"provider": "moon", "workers": []}')
    p = offload("run", "--outputs", str(bad), "--", "true", cwd=repo)
    assert "provider must be one of" in stderr_line(p)


def test_missing_env_variable_is_a_usage_error(repo: Path) -> None:
    p = offload("run", "--env", "NOPE_NOT_SET", "--", "true", cwd=repo)
    assert p.returncode == 2 and "NOPE_NOT_SET" in stderr_line(p)


def test_outside_a_repository(tmp_path: Path) -> None:
    p = offload("run", "--", "true", cwd=tmp_path)
    assert p.returncode == 2 and "git repository" in stderr_line(p)


def test_local_docker_runs_in_the_container_and_heals_it(docker_worker: DockerWorker, repo: Path,
                                                         tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "local-docker", [docker_record(docker_worker, image=docker_worker.image)])
    p = offload("run", "--outputs", str(out), "--wait", "--", "sh", "-c", "hostname; cat draft.txt", cwd=repo)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == f"{container_hostname(docker_worker.name)}\nnot committed\n"
    subprocess.run(["docker", "stop", "-t", "1", docker_worker.name], check=True, capture_output=True)
    p = offload("status", "--json", "--outputs", str(out), cwd=repo)
    assert json.loads(p.stdout)["workers"][0]["state"] == "stopped"
    p = offload("logs", "anything", "--outputs", str(out), cwd=repo)  # reading starts nothing
    assert p.returncode == 3 and "is not running" in stderr_line(p)
    assert not docker_worker.running()
    p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "back", cwd=repo)
    assert p.returncode == 0 and p.stdout == b"back\n", p.stderr


def test_command_runs_in_the_same_subdirectory(repo: Path) -> None:
    p = offload("run", "--wait", "--", "sh", "-c", "pwd; cat module.py", cwd=repo / "src")
    assert p.returncode == 0, p.stderr
    where, content = p.stdout.decode().splitlines()
    assert where.endswith("/src") and "/trees/" in where
    assert content == "VALUE = 1"


def test_interrupting_wait_leaves_the_job_running(repo: Path) -> None:
    import signal

    from tests.e2e.helpers import spawn

    proc = spawn("run", "--job", "keepgoing", "--wait", "--", "echo started; sleep 3; echo finished", cwd=repo)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert b"keepgoing goes on" in stderr
    wait_for(lambda: offload("check", "keepgoing", cwd=repo).returncode == 0, timeout=30,
             what="the job to succeed on its own", interval=0.3)
    assert offload("logs", "keepgoing", cwd=repo).stdout == b"started\nfinished\n"


def test_reusing_a_running_jobs_id_on_the_local_worker_changes_nothing(repo: Path) -> None:
    assert offload("run", "--job", "dup", "--", "sleep 30", cwd=repo).returncode == 0
    (repo / "file0.txt").write_text("changed\n")
    p = offload("run", "--job", "dup", "--", "true", cwd=repo)
    assert p.returncode == 2 and stderr_line(p).startswith("offload: job dup already exists on worker local")
    assert offload("check", "dup", cwd=repo).returncode == 7
    assert offload("clean", "dup", cwd=repo).returncode == 0


def test_tasks_and_their_checkout_get_the_workers_umask(repo: Path) -> None:
    p = offload("run", "--wait", "--", "umask; stat -c %a file0.txt run.sh src; touch made; stat -c %a made",
                cwd=repo)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == ["0022", "644", "755", "755", "644"]


def _runner_gone(workspace: Path) -> bool:
    pids = [p.read_text().strip() for p in workspace.glob("jobs/*/runner.pid")]
    return bool(pids) and all(not Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_full_workspace_fails_the_job_and_says_so(repo: Path, small_disk: Any) -> None:
    workspace = small_disk("2m") / "ws"
    env = {"OFFLOAD_LOCAL_WORKSPACE": str(workspace)}
    p = offload("run", "--job", "filler", "--wait", "--", "head -c 5000000 /dev/zero > fill; echo after", cwd=repo,
                env=env, timeout=60)
    assert p.returncode == 1
    assert "no space left" in p.stderr.decode(), p.stderr
    wait_for(lambda: _runner_gone(workspace), timeout=30, what="the runner to end")
    check = offload("check", "filler", "--json", cwd=repo, env=env)
    assert check.returncode == 1
    report = json.loads(check.stdout)
    assert report["state"] == "failed" and "no space left" in report["note"]
    status = json.loads(offload("status", "--json", cwd=repo, env=env).stdout)["workers"][0]
    assert status["workspace"]["free_bytes"] < 64 * 1024 and status["jobs"][0]["state"] == "failed"
    assert offload("clean", "filler", cwd=repo, env=env).returncode == 0
    assert not list(workspace.glob("jobs/*")) and not list(workspace.glob("trees/*/*.lease"))


def test_text_that_is_not_utf8_reaches_the_job_as_its_bytes(repo: Path) -> None:
    p = offload("run", "--env", "ODD", "--wait", "--", "printf '%s|' \"$ODD\" 'caf\udce9'", cwd=repo,
                env={"ODD": "bad\udcff"})
    assert (p.returncode, p.stdout) == (0, b"bad\xff|caf\xe9|"), p.stderr


def test_a_failed_launch_leaves_nothing_behind(repo: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    env = {"OFFLOAD_LOCAL_WORKSPACE": str(workspace)}
    workspace.mkdir()
    (workspace / "jobs").write_text("not a directory\n")  # the launch cannot make the job's directory
    p = offload("run", "--job", "doomed", "--", "true", cwd=repo, env=env)
    assert p.returncode == 1 and "cannot create the jobs directory" in stderr_line(p)
    assert not list(workspace.glob("trees/*/*.lease")), "the worktree went back to the pool"
    (bare,) = list((workspace / "repos").iterdir())
    assert git(bare, "for-each-ref", "refs/offload/") == ""


def test_leftovers_of_an_interrupted_launch_are_listed_and_cleaned(repo: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    env = {"OFFLOAD_LOCAL_WORKSPACE": str(workspace)}
    for job in ("half", "ref-only"):
        assert offload("run", "--job", job, "--wait", "--", "true", cwd=repo, env=env).returncode == 0
    # As if the launches had stopped after the sync: no job directory; one still holds its worktree's lease.
    for job in ("half", "ref-only"):
        subprocess.run(["rm", "-rf", str(workspace / "jobs" / job)], check=True)
    (pool,) = list((workspace / "trees").iterdir())
    lease = pool / "1.lease"
    # The runners give the worktree back as they finish.
    wait_for(lambda: not lease.exists(), timeout=30, what="the worktree to be given back")
    lease.mkdir()
    (lease / "job").write_text("half\n")
    old = time.time() - 600
    os.utime(lease, (old, old))
    jobs = json.loads(offload("status", "--json", cwd=repo, env=env).stdout)["workers"][0]["jobs"]
    assert {(j["id"], j["state"], len(j["tasks"])) for j in jobs} == {("half", "failed", 0), ("ref-only", "failed", 0)}
    p = offload("clean", "--all", "--yes", cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.decode().splitlines()) == ["cleaned half on local", "cleaned ref-only on local"]
    (bare,) = list((workspace / "repos").iterdir())
    assert not lease.exists() and git(bare, "for-each-ref", "refs/offload/") == ""


def test_a_workspace_with_a_control_character_is_refused(repo: Path, tmp_path: Path) -> None:
    p = offload("run", "--", "true", cwd=repo, env={"OFFLOAD_LOCAL_WORKSPACE": str(tmp_path / "a\tb")})
    assert p.returncode == 2 and "workspace must be an absolute path without control characters" in stderr_line(p)
    assert not (tmp_path / "a\tb").exists()


def test_a_reader_that_stops_early_stops_the_watching_not_the_job(repo: Path) -> None:
    """`offload run --wait | head -1`: offload stops following at once, says so, and leaves the job running."""
    proc = spawn("run", "--job", "piped", "--wait", "--", "seq 1 100000; sleep 30", cwd=repo)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"1\n"
    proc.stdout.close()
    assert proc.wait(timeout=30) == 141
    assert "stopped watching: the output was closed; job piped goes on" in proc.stderr.read().decode()
    followers = [c for c in all_cmdlines() if b"piped" in c and b"follow" in c]
    assert followers == [], "a follow loop was left behind"
    assert offload("check", "piped", cwd=repo).returncode == 7
    assert offload("clean", "piped", cwd=repo).returncode == 0


def test_a_command_from_an_empty_or_ignored_directory_runs_there(repo: Path) -> None:
    (repo / ".gitignore").write_text("build/\n")
    (repo / "build").mkdir()
    (repo / "empty").mkdir()
    for where in ("build", "empty"):
        p = offload("run", "--wait", "--", "pwd", cwd=repo / where)
        assert p.returncode == 0 and p.stdout.decode().rstrip().endswith(f"/{where}"), p.stderr


def test_a_workspace_inside_the_repository_is_not_snapshotted_into_itself(repo: Path) -> None:
    env = {"OFFLOAD_LOCAL_WORKSPACE": str(repo / "ows")}
    for _ in range(3):
        p = offload("run", "--wait", "--", "ls -A", cwd=repo, env=env)
        assert p.returncode == 0, p.stderr
        assert "ows" not in p.stdout.decode().split()
    assert offload("clean", "--all", "--yes", cwd=repo, env=env).returncode == 0
