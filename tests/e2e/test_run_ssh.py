"""`offload run` end to end against real sshd workers (host and containerized) that the tests start."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import all_cmdlines, container_hostname, offload, spawn, stderr_line
from tests.workers import (SshDockerWorker, SshdWorker, make_repo, sshd_record, tree_digest, wait_for,
                           write_outputs)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo", files=3)
    (r / "file0.txt").write_text("uncommitted edit\n")
    (r / "file1.txt").unlink()
    (r / "notes.txt").write_text("untracked\n")
    return r


def _outputs(tmp_path: Path, worker, provider: str = "ssh", **overrides) -> Path:
    return write_outputs(tmp_path / "outputs.json", provider, [sshd_record(worker, **overrides)])


def test_wait_streams_output_and_returns_the_exit_code(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = _outputs(tmp_path, sshd_worker)
    before = tree_digest(repo)
    p = offload("run", "--outputs", str(out), "--wait", "--", "sh", "-c",
                "cat file0.txt notes.txt; test ! -e file1.txt && echo deleted-gone; ./run.sh; exit 7",
                cwd=repo, key=sshd_worker.key_path)
    assert p.returncode == 7, p.stderr
    assert p.stdout == b"uncommitted edit\nuntracked\ndeleted-gone\nok\n"
    assert tree_digest(repo) == before


@pytest.mark.parametrize("persist", ["600", "0"])
def test_one_connection_per_run(sshd_worker: SshdWorker, repo: Path, tmp_path: Path, persist: str) -> None:
    """With the connection agent a warm run opens no connection at all; without it (OFFLOAD_PERSIST=0), one."""
    out = _outputs(tmp_path, sshd_worker)
    env = {"OFFLOAD_PERSIST": persist}
    before = sshd_worker.accepted_count()
    offload("run", "--outputs", str(out), "--", "true", cwd=repo, key=sshd_worker.key_path, env=env)   # cold
    assert sshd_worker.accepted_count() - before == 1
    for args in (["--", "echo", "hi"], ["--wait", "--", "echo", "hi"]):
        before = sshd_worker.accepted_count()
        p = offload("run", "--outputs", str(out), *args, cwd=repo, key=sshd_worker.key_path, env=env)
        assert p.returncode == 0, p.stderr
        assert sshd_worker.accepted_count() - before == (0 if persist != "0" else 1), args


def test_without_wait_prints_the_job_id_and_the_job_goes_on(sshd_worker: SshdWorker, repo: Path,
                                                            tmp_path: Path) -> None:
    out = _outputs(tmp_path, sshd_worker)
    start = time.monotonic()
    p = offload("run", "--outputs", str(out), "--job", "bg-1", "--", "sleep 1; echo finished",
                cwd=repo, key=sshd_worker.key_path)
    assert p.returncode == 0 and p.stdout == b"bg-1\n"
    assert time.monotonic() - start < 5
    p = offload("logs", "bg-1", "-f", "--outputs", str(out), cwd=repo, key=sshd_worker.key_path)
    assert p.stdout == b"finished\n"
    p = offload("run", "--outputs", str(out), "--job", "bg-1", "--", "true", cwd=repo, key=sshd_worker.key_path)
    assert p.returncode != 0 and "bg-1" in stderr_line(p)


def test_changed_host_key_is_refused(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = _outputs(tmp_path, sshd_worker)
    sshd_worker.rotate_host_key()
    p = offload("run", "--outputs", str(out), "--wait", "--", "true", cwd=repo, key=sshd_worker.key_path)
    assert p.returncode == 204, "4, moved out of the job's exit codes by --wait"
    assert "host key" in stderr_line(p)


def test_unreachable_worker(repo: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = write_outputs(tmp_path / "o.json", "ssh", [{"name": "far-away", "host": "127.0.0.1", "port": port,
                                                       "user": "nobody", "workspace": "/tmp/x"}])
    p = offload("run", "--outputs", str(out), "--", "true", cwd=repo)
    assert p.returncode == 3
    line = stderr_line(p)
    assert "far-away" in line and "Traceback" not in line


def test_secret_reaches_the_job_but_no_argv_and_no_worktree_file(sshd_worker: SshdWorker, repo: Path,
                                                                 tmp_path: Path) -> None:
    out = _outputs(tmp_path, sshd_worker)
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    proc = spawn("run", "--outputs", str(out), "--job", "sec", "--env", "API_TOKEN", "--wait", "--",
                 'sleep 1.5; printf "%s" "$API_TOKEN" | sha256sum | cut -c1-16',
                 cwd=repo, key=sshd_worker.key_path, env={"API_TOKEN": secret})
    seen_in_argv = False
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if any(secret.encode() in c for c in all_cmdlines()):
            seen_in_argv = True
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=30)
    import hashlib

    assert proc.returncode == 0, stderr
    assert stdout.decode().strip() == hashlib.sha256(secret.encode()).hexdigest()[:16]
    assert not seen_in_argv
    grep = subprocess.run(["grep", "-rl", secret, sshd_worker.workspace], capture_output=True)
    assert grep.stdout == b"", "the secret must not be written under the workspace"


def test_dropped_connection_mid_job_resumes_streaming(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = _outputs(tmp_path, sshd_worker)
    proc = spawn("run", "--outputs", str(out), "--job", "drop", "--wait", "--",
                 "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.4; done; exit 3",
                 cwd=repo, key=sshd_worker.key_path)
    # Drop it while the output streams (a fixed sleep could land in the launch on a busy machine).
    log = Path(sshd_worker.workspace) / "jobs" / "drop" / "tasks" / "main" / "log"
    wait_for(lambda: log.exists() and b"line 2" in log.read_bytes(), timeout=30, what="the job's output")
    assert sshd_worker.kill_sessions(), "there was a live SSH session to drop"
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert stdout.decode() == "".join(f"line {i}\n" for i in range(1, 9))
    assert b"reconnecting" in stderr


def test_eight_concurrent_runs_on_one_worker(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = _outputs(tmp_path, sshd_worker)
    # Each job writes into its worktree and reads it back a moment later: a shared worktree would show.
    procs = [spawn("run", "--outputs", str(out), "--job", f"c{i}", "--wait", "--",
                   f"cat file0.txt; echo job {i} > mine.txt; sleep 1; cat mine.txt", cwd=repo,
                   key=sshd_worker.key_path) for i in range(8)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    for i, (stdout, stderr, code) in enumerate(results):
        assert code == 0, stderr
        assert stdout == f"uncommitted edit\njob {i}\n".encode()
    (pool,) = list((Path(sshd_worker.workspace) / "trees").iterdir())
    trees = [p for p in pool.iterdir() if p.name.isdigit()]
    assert 2 <= len(trees) <= 8 and not list(pool.glob("*.lease"))


def test_hostile_job_id_is_rejected(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = _outputs(tmp_path, sshd_worker)
    for bad in ["a'b", "x$(touch /tmp/pwned)", "a;b", "a\nb", "-rf"]:
        p = offload("run", "--outputs", str(out), "--job", bad, "--", "true", cwd=repo, key=sshd_worker.key_path)
        assert p.returncode == 2 and "invalid job id" in stderr_line(p)


def test_a_job_id_with_a_trailing_newline_is_refused_before_anything_is_dialled(
        sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    """`$` before a final newline is no end of the id: the refusal comes from offload itself, not from the worker's
    shell after a sync."""
    out = _outputs(tmp_path, sshd_worker)
    before = sshd_worker.accepted_count()
    p = offload("run", "--outputs", str(out), "--job", "nl1\n", "--", "true", cwd=repo, key=sshd_worker.key_path)
    assert (p.returncode, stderr_line(p)) == (2, "offload: invalid job id 'nl1\\n': use 1-63 letters, digits, '_' "
                                                 "or '-', starting with a letter or digit")
    assert sshd_worker.accepted_count() == before, "no SSH login"
    agent = json.loads(offload("agent", "status", "--json", cwd=repo).stdout)
    assert not agent["running"], "no connection agent was started to dial it either"


def test_hostile_command_text_is_inert(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = _outputs(tmp_path, sshd_worker)
    marker = tmp_path / "pwned"
    p = offload("run", "--outputs", str(out), "--wait", "--", "printf", "%s|", f"$(touch {marker})", "a'b", "x;y",
                cwd=repo, key=sshd_worker.key_path)
    assert p.returncode == 0
    assert p.stdout == f"$(touch {marker})|a'b|x;y|".encode()
    assert not marker.exists()


def test_containerized_ssh_worker_runs_the_job_in_the_container(ssh_docker_worker: SshDockerWorker, repo: Path,
                                                                 tmp_path: Path) -> None:
    out = _outputs(tmp_path, ssh_docker_worker)
    ssh = ssh_docker_worker.ssh
    before = ssh.accepted_count()
    p = offload("run", "--outputs", str(out), "--wait", "--", "sh", "-c",
                "hostname; cat file0.txt; exit 5", cwd=repo, key=ssh.key_path)
    assert p.returncode == 5, p.stderr
    assert p.stdout.decode() == f"{container_hostname(ssh_docker_worker.container.name)}\nuncommitted edit\n"
    assert ssh.accepted_count() - before == 1


def test_stopped_or_missing_worker_container_is_healed(ssh_docker_worker: SshDockerWorker, repo: Path,
                                                       tmp_path: Path) -> None:
    name = ssh_docker_worker.container.name
    out = _outputs(tmp_path, ssh_docker_worker, image=ssh_docker_worker.container.image)
    key = ssh_docker_worker.ssh.key_path
    subprocess.run(["docker", "stop", "-t", "1", name], check=True, capture_output=True)
    p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "healed", cwd=repo, key=key)
    assert p.returncode == 0 and p.stdout == b"healed\n", p.stderr
    subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
    p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "recreated", cwd=repo, key=key)
    assert p.returncode == 0 and p.stdout == b"recreated\n", p.stderr
    state = subprocess.run(["docker", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", name],
                           capture_output=True, text=True)
    assert state.stdout.strip() == "always"


def test_reusing_a_running_jobs_id_changes_nothing(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    env = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    assert offload("run", "--outputs", str(out), "--job", "dup", "--", "sleep 30", cwd=repo, env=env).returncode == 0
    ws = Path(sshd_worker.workspace)
    (bare,) = list((ws / "repos").iterdir())

    def job_state() -> tuple[str, str, bytes]:
        ref = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(bare), "rev-parse", "refs/offload/jobs/dup"],
                             capture_output=True,
                             text=True).stdout
        return ref, (ws / "jobs" / "dup" / "meta").read_text(), tree_digest(ws / "worktrees" / "dup").encode()

    before = job_state()
    (repo / "file0.txt").write_text("changed, so the second snapshot differs\n")
    p = offload("run", "--outputs", str(out), "--job", "dup", "--", "true", cwd=repo, env=env)
    assert p.returncode == 2
    assert stderr_line(p).startswith(f"offload: job dup already exists on worker {sshd_record(sshd_worker)['name']}")
    assert job_state() == before and before[0].strip()
    check = offload("check", "dup", "--outputs", str(out), cwd=repo, env=env)
    assert check.returncode == 7, check.stdout  # still running, untouched
    assert offload("clean", "dup", "--outputs", str(out), cwd=repo, env=env).returncode == 0


def test_tasks_on_an_ssh_worker_get_its_umask(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    p = offload("run", "--outputs", str(out), "--wait", "--", "umask; stat -c %a file0.txt; touch made; stat -c %a made",
                cwd=repo, env={"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == ["0022", "644", "644"]


def test_clean_leaves_no_process_of_the_job(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    env = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    marker = f"{secrets.randbelow(10**6) + 10**6}"
    command = (f"nohup sh -c 'trap \"\" HUP TERM; sleep {marker}' >/dev/null 2>&1 & "
               f"setsid sh -c 'trap \"\" TERM; exec sleep {marker}' >/dev/null 2>&1 & sleep 60")
    assert offload("run", "--outputs", str(out), "--job", "srv", "--", command, cwd=repo, env=env).returncode == 0

    def servers() -> list[bytes]:
        return [c for c in all_cmdlines() if f"sleep\0{marker}".encode() in c]

    wait_for(lambda: len(servers()) == 2, timeout=30, what="the job's two daemons to start")
    p = offload("clean", "srv", "--outputs", str(out), cwd=repo, env=env)
    assert (p.returncode, p.stdout) == (0, f"cleaned srv on {sshd_record(sshd_worker)['name']}\n".encode()), p.stderr
    assert servers() == []


def test_a_full_workspace_on_an_ssh_worker_fails_the_job_and_says_so(start_sshd: Any, small_disk: Any, repo: Path,
                                                                     tmp_path: Path) -> None:
    worker = start_sshd(workspace=small_disk("2m") / "ws")
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(worker)])
    env = {"OFFLOAD_SSH_KEY": str(worker.key_path)}
    p = offload("run", "--outputs", str(out), "--job", "filler", "--wait", "--",
                "head -c 5000000 /dev/zero > fill; echo after", cwd=repo, env=env, timeout=60)
    assert p.returncode == 1
    assert "no space left in its workspace" in p.stderr.decode(), p.stderr
    check = offload("check", "filler", "--outputs", str(out), cwd=repo, env=env)
    assert check.returncode == 1 and "no space left" in check.stderr.decode()
    assert offload("clean", "filler", "--outputs", str(out), cwd=repo, env=env).returncode == 0
    # With the space back, the worker takes jobs again.
    again = offload("run", "--outputs", str(out), "--wait", "--", "echo", "room", cwd=repo, env=env)
    assert (again.returncode, again.stdout) == (0, b"room\n"), again.stderr
