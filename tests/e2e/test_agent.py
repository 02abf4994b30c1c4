"""The connection agent against a real sshd worker: started by the first command, reused by the next ones (no
new login), gone after OFFLOAD_PERSIST idle seconds; its socket private and its peers checked; a stale socket, a
killed agent and a changed host key; and nothing of it with OFFLOAD_PERSIST=0. Every test counts sshd logins."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import offload.runtime.agent.server as agent_server
from offload import paths as offload_paths
from tests.e2e.helpers import SSH_LIBRARIES, all_cmdlines, offload, spawn, stderr_line, top_modules_loaded
from tests.workers import (PipeReader, SshdWorker, all_pids, kill_pids, make_repo, proc_alive, proc_cmdline, proc_uid,
                           proxy_relay, sshd_record, wait_for, write_outputs)


@pytest.fixture
def setup(sshd_worker: SshdWorker, tmp_path: Path) -> dict[str, Any]:
    out = write_outputs(tmp_path / "outputs.json", "ssh", [sshd_record(sshd_worker)])
    return {"ssh": sshd_worker, "out": out, "repo": make_repo(tmp_path / "repo"),
            "env": {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}}


def cmd(s: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full = dict(s["env"], **(env or {}))
    outputs = ["--outputs", str(s["out"])] if args[0] not in ("agent",) else []
    return offload(*args[:1], *outputs, *args[1:], cwd=s["repo"], env=full)


def agent_state(s: dict[str, Any]) -> dict[str, Any]:
    p = offload("agent", "status", "--json", cwd=s["repo"], env=s["env"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_the_first_command_starts_the_agent_and_the_next_ones_open_no_connection(setup: dict[str, Any]) -> None:
    ssh: SshdWorker = setup["ssh"]
    before = ssh.accepted_count()
    assert agent_state(setup)["running"] is False
    p = cmd(setup, "run", "--job", "a1", "--wait", "--", "echo one")
    assert (p.returncode, p.stdout) == (0, b"one\n"), p.stderr
    state = agent_state(setup)
    assert state["running"] is True and proc_alive(state["pid"])
    sock = Path(state["socket"])
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert [c["worker"] for c in state["connections"]] == [f"ssh-{ssh.port}"]
    assert ssh.accepted_count() - before == 1

    for args in (("check", "a1"), ("logs", "a1"), ("status",), ("run", "--wait", "--", "echo two"), ("pull", "a1"),
                 ("clean", "a1")):
        p = cmd(setup, *args)
        assert p.returncode == 0, (args, p.stderr)
    assert ssh.accepted_count() - before == 1, "warm commands open no connection"
    again = agent_state(setup)
    assert again["pid"] == state["pid"]
    (held,) = again["connections"]
    assert held["alive"] is True and held["steps"] > 5
    assert len(ssh.session_pids()) == 2, "one connection (its privileged and user sshd processes)"


def test_agent_status_json_without_an_agent_and_with_one(setup: dict[str, Any]) -> None:
    """The two shapes docs/agent.md gives: `persist_seconds` and the connections only from a running agent."""
    ssh: SshdWorker = setup["ssh"]
    none = agent_state(setup)
    assert none == {"running": False, "pid": None, "socket": none["socket"], "connections": [],
                    "warm_server_pid": none["warm_server_pid"]}
    assert cmd(setup, "status", env={"OFFLOAD_PERSIST": "30"}).returncode == 0
    state = agent_state(setup)
    assert set(state) == {"running", "pid", "socket", "connections", "persist_seconds", "warm_server_pid"}
    assert (state["running"], state["persist_seconds"], state["socket"]) == (True, 30, none["socket"])
    (held,) = state["connections"]
    assert set(held) == {"worker", "host", "port", "user", "proxy", "alive", "idle_seconds", "open_seconds", "steps",
                         "channels", "dispatched"}
    assert (held["worker"], held["port"], held["proxy"], held["alive"]) == (f"ssh-{ssh.port}", ssh.port, False, True)


def test_the_agent_exits_when_idle_and_the_next_command_starts_another(setup: dict[str, Any]) -> None:
    ssh: SshdWorker = setup["ssh"]
    env = {"OFFLOAD_PERSIST": "1.5"}
    before = ssh.accepted_count()
    assert cmd(setup, "status", env=env).returncode == 0
    first = agent_state(setup)
    assert first["running"] and first["persist_seconds"] == 1.5
    wait_for(lambda: not proc_alive(first["pid"]), timeout=20, what="the idle agent to exit")
    assert not Path(first["socket"]).exists(), "an agent that exits takes its socket with it"
    wait_for(lambda: not ssh.session_pids(), timeout=10, what="its connection to close")
    assert cmd(setup, "status", env=env).returncode == 0
    assert agent_state(setup)["pid"] != first["pid"]
    assert ssh.accepted_count() - before == 2


def test_the_agent_answers_only_its_own_user(setup: dict[str, Any]) -> None:
    """Even with the directory and socket opened up, another user's connection is closed unanswered."""
    assert cmd(setup, "status").returncode == 0
    state = agent_state(setup)
    sock = Path(state["socket"])
    dirs = [d for d in (sock.parent, *sock.parents) if d != Path("/")]
    modes = {d: stat.S_IMODE(d.stat().st_mode) for d in dirs}
    try:
        for d in dirs:
            os.chmod(d, modes[d] | 0o011)
        os.chmod(sock, 0o666)
        probe = ("import socket, sys\n"
                 "s = socket.socket(socket.AF_UNIX)\n"
                 "s.connect(sys.argv[1])\n"
                 "s.settimeout(5)\n"
                 "try:\n"
                 "    s.sendall(b'{\"op\": \"status\"}\\n')\n"
                 "    print(repr(s.recv(100)))\n"
                 "except (ConnectionResetError, BrokenPipeError):\n"
                 "    print(repr(b''))\n")
        p = subprocess.run(["/usr/bin/python3", "-c", probe, str(sock)], user=setup["ssh"].user, capture_output=True,
                           text=True, timeout=30, cwd="/")
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "b''", "the agent hung up on another user"
    finally:
        os.chmod(sock, 0o600)
        for d, mode in modes.items():
            os.chmod(d, mode)
    assert agent_state(setup)["running"], "and it serves its own user still"


def test_a_stale_socket_is_replaced_without_a_word(setup: dict[str, Any]) -> None:
    ssh: SshdWorker = setup["ssh"]
    before = ssh.accepted_count()
    assert cmd(setup, "status").returncode == 0
    state = agent_state(setup)
    kill_pids([state["pid"]])  # SIGKILL: the socket file stays behind
    assert Path(state["socket"]).exists()
    p = cmd(setup, "run", "--job", "after", "--wait", "--", "echo after")
    assert (p.returncode, p.stdout, p.stderr) == (0, b"after\n", f"offload: job after runs on ssh-{ssh.port}\n".encode())
    assert agent_state(setup)["pid"] != state["pid"]
    assert ssh.accepted_count() - before == 2


def test_a_killed_agent_in_the_middle_of_a_command(setup: dict[str, Any]) -> None:
    ssh: SshdWorker = setup["ssh"]
    assert cmd(setup, "status").returncode == 0
    state = agent_state(setup)
    proc = spawn("run", "--outputs", str(setup["out"]), "--job", "mid", "--wait", "--",
                 "echo begin; sleep 2; echo end", cwd=setup["repo"], env=setup["env"])
    begun = PipeReader(proc.stdout)
    try:
        begun.wait_for(b"begin\n", timeout=60)  # the agent is streaming the job's output
        kill_pids([state["pid"]])
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert begun.data + rest == b"begin\nend\n", "the output goes on from where it was, nothing twice, nothing lost"
    assert err == f"offload: job mid runs on ssh-{ssh.port}\n".encode(), "nothing but the job id"


def test_a_changed_host_key_is_refused_while_the_agent_is_warm(setup: dict[str, Any], tmp_path: Path) -> None:
    ssh: SshdWorker = setup["ssh"]
    # Trusted on first use: the agent holds a connection made with the key known_hosts remembers.
    tofu = dict(setup, out=write_outputs(tmp_path / "tofu.json", "ssh", [sshd_record(ssh, host_keys=[])]))
    assert cmd(tofu, "status").returncode == 0
    assert agent_state(tofu)["connections"]
    ssh.rotate_host_key()
    p = cmd(tofu, "run", "--wait", "--", "true")
    assert p.returncode == 204, p.stderr  # 4, moved out of the job's exit codes by --wait
    assert "host key" in stderr_line(p) and "changed" in stderr_line(p)
    # Pinned keys: the outputs name the old key.
    p = cmd(setup, "status", "--json")
    assert json.loads(p.stdout)["workers"][0]["state"] == "host key changed"
    assert "host key" in json.loads(p.stdout)["workers"][0]["error"]


def test_known_hosts_changed_under_a_warm_connection_is_refused(setup: dict[str, Any], tmp_path: Path) -> None:
    """The agent checks the key of a connection it holds against the trust of each request."""
    ssh: SshdWorker = setup["ssh"]
    tofu = dict(setup, out=write_outputs(tmp_path / "tofu.json", "ssh", [sshd_record(ssh, host_keys=[])]))
    assert cmd(tofu, "status").returncode == 0
    known = Path(os.environ["OFFLOAD_CONFIG_DIR"]) / "known_hosts"
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE9pOv8ZbVm7V0b1lHn2wVJkG1mL5C0jz3I9q9b6g4kQ"
    known.write_text(f"[{ssh.host}]:{ssh.port} {other}\n")
    p = cmd(tofu, "run", "--wait", "--", "true")
    assert p.returncode == 204 and "host key" in stderr_line(p), p.stderr


def test_persist_zero_means_no_agent(setup: dict[str, Any]) -> None:
    ssh: SshdWorker = setup["ssh"]
    env = {"OFFLOAD_PERSIST": "0"}
    before = ssh.accepted_count()
    for args in (("run", "--job", "z", "--wait", "--", "echo zero"), ("check", "z"), ("status",)):
        assert cmd(setup, *args, env=env).returncode == 0
    assert ssh.accepted_count() - before == 3, "one connection per command"
    assert agent_state(setup)["running"] is False
    assert not [c for c in all_cmdlines() if b"offload.runtime.agent" in c and
                os.environ["OFFLOAD_CACHE_DIR"].encode() in c]


def test_agent_stop_closes_its_connections(setup: dict[str, Any]) -> None:
    ssh: SshdWorker = setup["ssh"]
    assert cmd(setup, "status").returncode == 0
    pid = agent_state(setup)["pid"]
    assert ssh.session_pids()
    p = offload("agent", "stop", cwd=setup["repo"], env=setup["env"])
    lines = p.stdout.decode().splitlines()
    assert p.returncode == 0 and lines[0] == f"stopped agent {pid}; its connections are closed"
    assert all(line.startswith("stopped the warm command server ") for line in lines[1:]) and len(lines) <= 2
    assert not proc_alive(pid)
    wait_for(lambda: not ssh.session_pids(), timeout=10, what="the agent's connection to close")
    assert offload("agent", "stop", cwd=setup["repo"], env=setup["env"]).stdout == b"no agent was running\n"
    human = offload("agent", "status", cwd=setup["repo"], env=setup["env"]).stdout.decode()
    assert human.startswith("no agent is running")


def test_secrets_pass_through_the_socket_only(setup: dict[str, Any]) -> None:
    secret = "s3cret-" + os.urandom(6).hex()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    check = f'sleep 1; test "$(printf %s "$TOKEN" | sha256sum | cut -c1-64)" = {digest}'
    p = cmd(setup, "run", "--env", "TOKEN", "--job", "sec", "--", check, env={"TOKEN": secret})
    assert p.returncode == 0, p.stderr
    assert not [c for c in all_cmdlines() if secret.encode() in c], "a secret in an argv"
    agent_dir = Path(agent_state(setup)["socket"]).parent
    for f in agent_dir.iterdir():
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    assert cmd(setup, "run", "--wait", "--", "true").returncode == 0
    done = wait_for(lambda: (rc := cmd(setup, "check", "sec").returncode) != 7 and [rc], timeout=30,
                    what="the job to end")
    assert done == [0], "the job saw the secret it was given"


@pytest.mark.parametrize("ssh_config", [False, True], ids=["no ~/.ssh/config", "an alias in ~/.ssh/config"])
def test_a_warm_command_loads_no_ssh_library(setup: dict[str, Any], tmp_path: Path, isolated_home: Path,
                                              ssh_config: bool) -> None:
    """With the agent up, a command loads no SSH library: not to dial, and not to read ~/.ssh/config (the worker's
    host an alias there, its port and user left to it): the agent parses that file."""
    ssh: SshdWorker = setup["ssh"]
    s = setup
    if ssh_config:
        (isolated_home / ".ssh").mkdir(mode=0o700)
        (isolated_home / ".ssh" / "config").write_text(f"Host offload-alias\n    HostName {ssh.host}\n"
                                                       f"    Port {ssh.port}\n    User {ssh.user}\n")
        record = sshd_record(ssh, host="offload-alias", port=None, user=None)
        s = dict(setup, out=write_outputs(tmp_path / "alias.json", "ssh", [record]))
    assert cmd(s, "run", "--job", "imp", "--wait", "--", "true").returncode == 0
    for args in (["check", "imp"], ["run", "--wait", "--", "true"]):
        loaded = top_modules_loaded(args[0], "--outputs", str(s["out"]), *args[1:], cwd=s["repo"], env=s["env"])
        assert "offload" in loaded
        assert not loaded & SSH_LIBRARIES, args
    assert [c["host"] for c in agent_state(s)["connections"]] == ["offload-alias" if ssh_config else ssh.host]


def peak_memory(pid: int) -> int:
    """The most resident memory the process has had, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def random_file(path: Path, megabytes: int) -> str:
    """Incompressible content, so the pack is as large as the file; returns git's id of it."""
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(1 << 20))
    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_large_file_streams_through_the_agent_whole(setup: dict[str, Any]) -> None:
    """The agent relays a step's input as it comes: it never holds the file, and what arrives is the file."""
    assert cmd(setup, "status").returncode == 0
    pid = agent_state(setup)["pid"]
    before = peak_memory(pid)
    size = 48
    random_file(setup["repo"] / "big.bin", size)
    digest = hashlib.sha256((setup["repo"] / "big.bin").read_bytes()).hexdigest()
    p = cmd(setup, "run", "--wait", "--", "sha256sum big.bin")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split()[0] == digest
    assert agent_state(setup)["pid"] == pid
    grown = peak_memory(pid) - before
    assert grown < (size << 20) // 4, f"the agent held {grown >> 20} MiB of a {size} MiB input"


def receiving(ssh: SshdWorker) -> list[int]:
    """The worker's processes that take a snapshot's pack in (receive.sh's unpack-objects or index-pack)."""
    uid = os.stat(ssh.workspace).st_uid
    found = []
    for pid in all_pids():
        argv = proc_cmdline(pid)
        if proc_uid(pid) == uid and ("index-pack" in argv or "unpack-objects" in argv) and \
                any(a.startswith(ssh.workspace) for a in argv):
            found.append(pid)
    return found


@pytest.mark.parametrize("how", ["SIGINT, through the warm server", "SIGKILL"])
def test_an_interrupted_transfer_frees_the_worker_and_the_agent_serves_on(setup: dict[str, Any], tmp_path: Path,
                                                                          how: str) -> None:
    """On a slow link (0.5 MB/s up), a command is stopped while its 24 MB snapshot is on the way: the command on
    the worker that takes it in ends at once, without the file, and the agent's connection serves the next
    command."""
    ssh: SshdWorker = setup["ssh"]
    relay = proxy_relay(tmp_path, upload_rate=500_000)
    slow = dict(setup, out=write_outputs(tmp_path / "slow.json", "ssh", [sshd_record(ssh, proxy_command=relay)]))
    warm = how.startswith("SIGINT")
    if warm:
        assert cmd(slow, "status").returncode == 0  # the agent, and a warm server for the next command
    blob = random_file(slow["repo"] / "big.bin", 24)
    proc = spawn("run", "--outputs", str(slow["out"]), "--job", "big", "--wait", "--", "true", cwd=slow["repo"],
                 env=slow["env"])
    try:
        (taker,) = wait_for(lambda: receiving(ssh), timeout=60, what="the worker to take the snapshot in")
        logins = ssh.accepted_count()
        agent = agent_state(slow)["pid"]
        if warm:
            proc.send_signal(signal.SIGINT)
        else:
            proc.kill()
        proc.wait(timeout=30)
        # At 0.5 MB/s the whole file would take 48 s more.
        wait_for(lambda: not proc_alive(taker), timeout=20, what="the worker's side of the transfer to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    repos = list((Path(ssh.workspace) / "repos").glob("*.git"))
    assert repos
    for repo in repos:
        has = subprocess.run(["git", "--git-dir", str(repo), "cat-file", "-e", blob], user=ssh.user,
                             capture_output=True, timeout=30)
        assert has.returncode != 0, "the file did not arrive whole"
    (slow["repo"] / "big.bin").unlink()
    p = cmd(slow, "run", "--job", "next", "--wait", "--", "echo next")
    assert (p.returncode, p.stdout) == (0, b"next\n"), p.stderr
    assert agent_state(slow)["pid"] == agent
    assert ssh.accepted_count() == logins, "over the connection the agent held"


def test_changed_code_retires_the_agent_and_a_running_logs_f_streams_to_its_end(setup: dict[str, Any]) -> None:
    """offload is upgraded while `logs -f` streams through the agent: the next command is served by a new agent
    with the code as it is now, and the old one streams the log to the job's end, then exits."""
    ssh: SshdWorker = setup["ssh"]
    go = Path(ssh.workspace) / "go"
    p = cmd(setup, "run", "--job", "long", "--", f"echo begin; while [ ! -e {go} ]; do sleep 0.1; done; echo end")
    assert p.returncode == 0, p.stderr
    old = agent_state(setup)["pid"]
    follower = spawn("logs", "--outputs", str(setup["out"]), "-f", "long", cwd=setup["repo"], env=setup["env"])
    source = Path(agent_server.__file__)
    before = source.stat()
    try:
        assert follower.stdout is not None and follower.stdout.read(6) == b"begin\n"
        logins = ssh.accepted_count()
        os.utime(source, ns=(before.st_atime_ns, time.time_ns()))  # the upgrade
        p = cmd(setup, "status")
        assert p.returncode == 0, p.stderr
        new = agent_state(setup)["pid"]
        assert new != old, "a new agent served the command"
        assert ssh.accepted_count() - logins == 1, "over a connection of its own"
        assert proc_alive(old), "the old agent streams on"
        go.touch()
        out, err = follower.communicate(timeout=60)
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert (follower.returncode, out) == (0, b"end\n"), err
    wait_for(lambda: not proc_alive(old), timeout=20, what="the old agent to exit once the log has ended")
    state = agent_state(setup)
    assert state["pid"] == new and Path(state["socket"]).exists(), "and its going left the new agent's socket alone"


def test_another_installation_has_an_agent_of_its_own(setup: dict[str, Any], tmp_path: Path) -> None:
    """Another copy of offload never uses this one's agent (which runs this one's code): it starts an agent of its
    own, which it then keeps using, and this installation's agent goes on serving this one."""
    ssh: SshdWorker = setup["ssh"]
    assert cmd(setup, "status").returncode == 0
    pid = agent_state(setup)["pid"]
    other = tmp_path / "other"
    shutil.copytree(Path(offload_paths.__file__).parent, other / "offload",
                    ignore=shutil.ignore_patterns("__pycache__"))
    theirs = {"PYTHONPATH": str(other)}
    before = ssh.accepted_count()
    for word in ("other", "again"):
        p = cmd(setup, "run", "--wait", "--", f"echo {word}", env=theirs)
        assert (p.returncode, p.stdout) == (0, f"{word}\n".encode()), p.stderr
    assert ssh.accepted_count() - before == 1, "one login, kept by the other installation's own agent"
    other_agent = json.loads(offload("agent", "status", "--json", cwd=setup["repo"], env={**setup["env"], **theirs})
                             .stdout)
    assert other_agent["running"] and other_agent["pid"] != pid and other_agent["socket"] != agent_state(setup)["socket"]
    assert agent_state(setup)["pid"] == pid
    assert cmd(setup, "run", "--wait", "--", "echo this").stdout == b"this\n"
    assert ssh.accepted_count() - before == 1, "this installation's commands still go through its agent"

# A ProxyCommand that notes the ssh-agent it was given, and holds its dial until COUNT dials have started: the
# requests' logins then overlap in the agent, as those of commands that start together do.
GATED_RELAY = """\
import os, socket, sys, threading, time
gate, count, host, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with open(os.path.join(gate, str(os.getpid())), "w") as f:
    f.write(os.environ.get("SSH_AUTH_SOCK", "none"))
deadline = time.monotonic() + 30
while len(os.listdir(gate)) < count and time.monotonic() < deadline:
    time.sleep(0.01)
s = socket.create_connection((host, port))
def up():
    while data := os.read(0, 65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    os.write(1, data)
"""


@pytest.fixture
def ssh_agents(tmp_path: Path) -> Any:
    """A factory for real ssh-agents, each holding one key: `ssh_agents(KEY)` is the agent's socket. Each is
    stopped by its pid at teardown."""
    import tempfile

    from tests.workers import stop_process

    short = Path(tempfile.mkdtemp(prefix="oa-", dir="/dev/shm"))  # a socket's path must stay under 108 bytes
    started: list[subprocess.Popen[bytes]] = []

    def start(key: Path) -> str:
        sock = short / f"agent{len(started)}.sock"
        proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        started.append(proc)
        wait_for(lambda: sock.exists(), timeout=10, what="ssh-agent's socket")
        subprocess.run(["ssh-add", "-q", str(key)], env=dict(os.environ, SSH_AUTH_SOCK=str(sock)), check=True,
                       capture_output=True, timeout=30)
        return str(sock)

    try:
        yield start
    finally:
        for proc in started:
            stop_process(proc, proc.pid)
        shutil.rmtree(short, ignore_errors=True)


def test_each_request_logs_in_with_its_own_ssh_agent_and_no_other(setup: dict[str, Any], tmp_path: Path,
                                                                  ssh_agents: Any) -> None:
    """Three commands dial at once through the agent: one whose ssh-agent holds the key the worker accepts, one
    whose ssh-agent holds another key, and one with that other key as its identity file and no ssh-agent. Only
    the first logs in: no dial used another request's ssh-agent, and a proxy command got its own request's."""
    from tests.workers import generate_keypair

    ssh: SshdWorker = setup["ssh"]
    other, _ = generate_keypair(tmp_path / "keys" / "other")
    accepted, refused = ssh_agents(ssh.key_path), ssh_agents(other)
    gate = tmp_path / "gate"
    gate.mkdir()
    (tmp_path / "gated.py").write_text(GATED_RELAY)
    relay = f"{sys.executable} -S {tmp_path / 'gated.py'} {gate} 3 %h %p"
    out = write_outputs(tmp_path / "gated.json", "ssh", [sshd_record(ssh, proxy_command=relay)])
    before = ssh.accepted_count()
    requests = {"its agent's key": {"SSH_AUTH_SOCK": accepted}, "another key in its agent": {"SSH_AUTH_SOCK": refused},
                "another key as its identity": {"OFFLOAD_SSH_KEY": str(other)}}
    procs = {what: spawn("run", "--outputs", str(out), "--wait", "--", "echo in", cwd=setup["repo"], env=env)
             for what, env in requests.items()}
    results = {}
    for what, proc in procs.items():
        try:
            out_, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        results[what] = (proc.returncode, out_, err.decode())
    code, printed, err = results["its agent's key"]
    assert (code, printed) == (0, b"in\n"), err
    for what in ("another key in its agent", "another key as its identity"):
        code, printed, err = results[what]
        assert code == 208 and "refused the SSH login" in err, (what, err)  # 8, moved out by --wait
    assert ssh.accepted_count() - before == 1
    assert sorted(f.read_text() for f in gate.iterdir()) == sorted([accepted, refused, "none"]), \
        "each proxy command had its own request's ssh-agent"
    assert agent_state(setup)["running"], "all three went through the agent"
