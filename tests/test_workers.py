"""The test workers themselves: real sshd and Docker workers behave as the rest of the suite relies on."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from offload.outputs import ProviderType, StackOutputs
from tests.workers import (
    SSHD,
    SSHD_CONFIG_NAME,
    DockerWorker,
    SshDockerWorker,
    SshdWorker,
    WorkerUser,
    all_pids,
    cleanup_user_processes,
    docker_record,
    make_repo,
    proc_alive,
    proc_comm,
    proc_environ,
    run,
    sshd_record,
    stop_stale_sshd,
    tree_digest,
    wait_for,
    write_outputs,
)


def ssh(worker: SshdWorker, known_hosts: Path, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return run(worker.ssh_argv(known_hosts, *command), check=False, timeout=timeout)


# -- every test ------------------------------------------------------------------------------------------------


def test_isolated_home_keeps_the_developer_out(isolated_home: Path) -> None:
    assert os.environ["HOME"] == str(isolated_home)
    assert str(isolated_home).startswith("/dev/shm/")
    assert not list(isolated_home.iterdir()) or [p.name for p in isolated_home.iterdir()] == ["tmp"]
    assert os.environ["OFFLOAD_CONFIG_DIR"].startswith(str(isolated_home))
    assert os.environ["OFFLOAD_CACHE_DIR"].startswith(str(isolated_home))
    assert os.environ["GIT_CONFIG_NOSYSTEM"] == "1"
    assert os.environ["TMUX_TMPDIR"].startswith("/dev/shm/")
    for name in ("SSH_AUTH_SOCK", "OFFLOAD_OUTPUTS", "OFFLOAD_STACK", "OFFLOAD_SSH_KEY", "OFFLOAD_DEBUG",
                 "OFFLOAD_WORKER", "GIT_DIR", "GIT_WORK_TREE", "TMUX"):
        assert name not in os.environ


def test_make_repo_and_tree_digest(tmp_path: Path) -> None:
    assert str(tmp_path).startswith("/dev/shm/")
    repo = make_repo(tmp_path / "repo", files=5)
    out = subprocess.run(["git", "-C", str(repo), "log", "--format=%an <%ae>", "-1"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "Offload Test <test@example.com>"
    assert subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True,
                          check=True).stdout == ""
    before = tree_digest(repo)
    assert tree_digest(repo) == before
    (repo / "run.sh").chmod(0o644)
    changed_mode = tree_digest(repo)
    assert changed_mode != before
    (repo / "run.sh").chmod(0o755)
    assert tree_digest(repo) == before
    (repo / "file0.txt").write_text("edited\n")
    assert tree_digest(repo) != before


def test_local_tmux_left_by_a_test_is_killed(isolated_home: Path) -> None:
    subprocess.run(["tmux", "-L", f"offload-fixture-{os.getpid()}", "new-session", "-d", "-s", "x", "sleep 300"],
                   cwd=isolated_home, check=True, timeout=10)
    assert os.environ["TMUX_TMPDIR"].startswith("/dev/shm/ot-")
    servers = wait_for(lambda: _tmux_servers(os.getuid(), isolated_home), timeout=5, what="the tmux server")
    killed = cleanup_user_processes(os.getuid(), homes_under=[str(isolated_home)], tmux_only=True)
    assert set(servers) <= set(killed)
    assert not any(proc_alive(p) for p in killed)


def _tmux_servers(uid: int, home: Path) -> list[int]:
    return [p for p in all_pids() if proc_comm(p) == "tmux: server" and os.stat(f"/proc/{p}").st_uid == uid
            and proc_environ(p).get("HOME") == str(home)]


# -- sshd ------------------------------------------------------------------------------------------------------


def test_real_ssh_login_is_counted_once(sshd_worker: SshdWorker, worker_user: WorkerUser, tmp_path: Path) -> None:
    known_hosts = sshd_worker.write_known_hosts(tmp_path / "known_hosts")
    before = sshd_worker.accepted_count()
    result = ssh(sshd_worker, known_hosts, "true")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: sshd_worker.accepted_count() == before + 1, timeout=5, what="one Accepted publickey line")

    result = ssh(sshd_worker, known_hosts, f"id -un && test -w {sshd_worker.workspace} && echo writable")
    assert result.stdout.split() == [worker_user.name, "writable"]
    assert sshd_worker.user == worker_user.name
    assert Path(sshd_worker.workspace).stat().st_uid == worker_user.uid
    assert sshd_worker.workspace.startswith("/dev/shm/")
    assert sshd_worker.host_key.startswith("ssh-ed25519 AAAA") and len(sshd_worker.host_key.split()) == 2


def test_unknown_host_key_is_refused(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = ssh(sshd_worker, empty, "true")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_rotated_host_key_fails_the_old_known_hosts(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    old = sshd_worker.write_known_hosts(tmp_path / "old_known_hosts")
    old_key, port = sshd_worker.host_key, sshd_worker.port
    assert ssh(sshd_worker, old, "true").returncode == 0

    new_key = sshd_worker.rotate_host_key()
    assert new_key == sshd_worker.host_key != old_key
    assert sshd_worker.port == port
    result = ssh(sshd_worker, old, "true")
    assert result.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr

    new = sshd_worker.write_known_hosts(tmp_path / "new_known_hosts")
    assert ssh(sshd_worker, new, "true").returncode == 0


def test_kill_sessions_drops_the_connection(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    known_hosts = sshd_worker.write_known_hosts(tmp_path / "known_hosts")
    client = subprocess.Popen(sshd_worker.ssh_argv(known_hosts, "echo up; sleep 120"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "up"
        killed = sshd_worker.kill_sessions()
        assert killed
        assert client.wait(timeout=10) == 255
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
    assert proc_alive(sshd_worker.pid)
    assert sshd_worker.session_pids() == []
    assert ssh(sshd_worker, known_hosts, "true").returncode == 0


def test_teardown_kills_what_a_login_left_running(sshd_worker: SshdWorker, worker_user: WorkerUser,
                                                  tmp_path: Path) -> None:
    known_hosts = sshd_worker.write_known_hosts(tmp_path / "known_hosts")
    job = f"offload-fixture-{sshd_worker.port}"
    result = ssh(sshd_worker, known_hosts,
                 f"cd {sshd_worker.workspace} && tmux -L {job} new-session -d -s job 'sleep 300' && echo started")
    assert result.stdout.strip() == "started", result.stderr
    assert sshd_worker.tmux_tmpdir is not None
    socket_path = Path(f"{sshd_worker.tmux_tmpdir}/tmux-{worker_user.uid}/{job}")
    assert socket_path.exists()
    servers = [p for p in all_pids() if proc_comm(p) == "tmux: server"
               and proc_environ(p).get("SSH_CONNECTION", "").endswith(f" {sshd_worker.port}")]
    assert len(servers) == 1

    killed = cleanup_user_processes(worker_user.uid, ssh_server=(sshd_worker.host, sshd_worker.port),
                                    under=[sshd_worker.workspace])
    assert servers[0] in killed
    assert not proc_alive(servers[0])
    assert not socket_path.exists()


def test_stop_leaves_nothing_running(start_sshd, tmp_path: Path) -> None:
    worker = start_sshd()
    known_hosts = worker.write_known_hosts(tmp_path / "known_hosts")
    client = subprocess.Popen(worker.ssh_argv(known_hosts, "echo up; sleep 120"), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "up"
        sessions = worker.session_pids()
        assert sessions
        pid = worker.pid
        worker.stop()
        assert not proc_alive(pid)
        assert not any(proc_alive(p) for p in sessions)
        assert client.wait(timeout=10) == 255
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
    with pytest.raises(OSError):
        socket.create_connection((worker.host, worker.port), timeout=2).close()
    worker.stop()  # twice is fine


def test_sshd_left_by_a_killed_session_is_stopped(start_sshd) -> None:
    worker = start_sshd()
    worker.stop()
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    config = worker.config_path.with_name(SSHD_CONFIG_NAME.format(owner=dead_owner.pid))
    config.write_text(worker.config_path.read_text())
    orphan = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: _answers(worker.host, worker.port), timeout=10, what="the orphan sshd")
        assert orphan.pid in stop_stale_sshd()
        assert orphan.wait(timeout=10) != 0
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait(timeout=10)


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_outputs_file_follows_the_contract(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    path = write_outputs(tmp_path / "outputs.json", "ssh", [sshd_record(sshd_worker, name="box")])
    outputs = StackOutputs.load(path)
    assert outputs.provider is ProviderType.SSH
    assert outputs.developer == "dev@example.com"
    (worker,) = outputs.workers
    assert (worker.name, worker.host, worker.port, worker.user, worker.container) == \
        ("box", "127.0.0.1", sshd_worker.port, sshd_worker.user, None)
    assert worker.workspace == sshd_worker.workspace
    assert worker.host_keys == (sshd_worker.host_key,)
    assert worker.proxy_command is None


# -- Docker ----------------------------------------------------------------------------------------------------


def test_docker_worker_has_tmux_and_git(docker_worker: DockerWorker) -> None:
    assert docker_worker.exec("tmux", "-V").stdout.startswith("tmux ")
    assert docker_worker.exec("git", "--version").stdout.startswith("git version ")
    inspect = run(["docker", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", docker_worker.name])
    assert inspect.stdout.strip() == "always"
    # The workspace is the same path inside and outside.
    assert docker_worker.workspace.startswith("/dev/shm/")
    docker_worker.exec("sh", "-c", f"echo inside > {docker_worker.workspace}/marker")
    assert (Path(docker_worker.workspace) / "marker").read_text() == "inside\n"
    record = docker_record(docker_worker)
    outputs = StackOutputs.load(write_outputs(Path(docker_worker.workspace) / "o.json", "local-docker", [record]))
    assert outputs.workers[0].container == docker_worker.name


def test_docker_worker_is_removed_by_stop(start_docker_worker) -> None:
    worker = start_docker_worker()
    assert worker.running()
    worker.stop()
    assert run(["docker", "inspect", worker.name], check=False).returncode != 0


def test_ssh_docker_worker_user_runs_docker_exec(ssh_docker_worker: SshDockerWorker, tmp_path: Path) -> None:
    ssh_worker, container = ssh_docker_worker.ssh, ssh_docker_worker.container
    assert ssh_docker_worker.workspace == ssh_worker.workspace == container.workspace
    known_hosts = ssh_worker.write_known_hosts(tmp_path / "known_hosts")
    result = ssh(ssh_worker, known_hosts,
                 f"echo from-host > {ssh_worker.workspace}/host-file && "
                 f"docker exec -w {ssh_worker.workspace} {container.name} "
                 "sh -c 'cat host-file; tmux -V; git --version'")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "from-host"
    assert lines[1].startswith("tmux ") and lines[2].startswith("git version ")
    record = sshd_record(ssh_docker_worker)
    assert record["container"] == container.name
    assert record["workspace"] == ssh_worker.workspace
