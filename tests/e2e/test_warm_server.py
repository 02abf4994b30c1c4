"""Warm commands: after the first, a job command runs in a child forked from a warm server that has offload
loaded, with the user's own stdin, stdout and stderr; exit codes, signals (Ctrl-Z too) and a vanished user pass
through, a server whose code is older than the command's is not used, each installation of offload has a server of
its own, and a client that stalls holds up no other."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import offload, spawn
from tests.workers import (SshdWorker, all_pids, children_map, kill_pids, make_repo, proc_alive, proc_cmdline,
                           proc_stat, sshd_record, wait_for, write_outputs)

import offload.cli.warm.client as warm
from offload import paths as offload_paths
from offload.cli.main import eligible


@pytest.fixture
def setup(sshd_worker: SshdWorker, tmp_path: Path) -> dict[str, Any]:
    out = write_outputs(tmp_path / "outputs.json", "ssh", [sshd_record(sshd_worker)])
    return {"ssh": sshd_worker, "out": out, "repo": make_repo(tmp_path / "repo"),
            "env": {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}}


def cmd(s: dict[str, Any], *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return offload(args[0], "--outputs", str(s["out"]), *args[1:], cwd=s["repo"], env=s["env"], **kw)


def server(s: dict[str, Any]) -> int:
    """The warm server's pid, once the first command has started it."""
    files = warm.files()
    assert files is not None

    def running() -> int | None:
        try:
            pid = int(files.pid.read_text())
        except (OSError, ValueError):
            return None
        return pid if proc_alive(pid) and files.socket.exists() else None

    if running() is None:
        assert cmd(s, "status").returncode == 0
    return wait_for(running, timeout=30, what="the warm server")


def test_a_warm_command_runs_in_a_child_of_the_server_with_the_users_own_streams(setup: dict[str, Any]) -> None:
    pid = server(setup)
    assert cmd(setup, "run", "--job", "w1", "--", "echo begin; sleep 30").returncode == 0
    follower = spawn("logs", "--outputs", str(setup["out"]), "-f", "w1", cwd=setup["repo"], env=setup["env"])
    try:
        kids = wait_for(lambda: children_map().get(pid), timeout=20, what="a child of the warm server")
        assert len(kids) == 1 and proc_cmdline(kids[0]) == proc_cmdline(pid), "forked, not started anew"
        # The child takes the user's streams and directory just after the fork: wait for it to have done so.
        stdout = os.readlink(f"/proc/{follower.pid}/fd/1")
        wait_for(lambda: os.readlink(f"/proc/{kids[0]}/fd/1") == stdout
                 and os.readlink(f"/proc/{kids[0]}/cwd") == str(setup["repo"]),
                 timeout=20, what="the child to write to the user's own stdout, in the user's directory")
        assert b"begin\n" == follower.stdout.read(6)
        # Ctrl-C reaches the command through the user's process.
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=20) == 130
        wait_for(lambda: not proc_alive(kids[0]), timeout=20, what="the child to end with its user")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert cmd(setup, "clean", "w1").returncode == 0


def test_exit_codes_output_and_errors_are_the_commands_own(setup: dict[str, Any]) -> None:
    server(setup)
    p = cmd(setup, "run", "--job", "w2", "--wait", "--", "echo out; echo err >&2; exit 3")
    assert (p.returncode, p.stdout) == (3, b"out\nerr\n"), p.stderr  # the job's terminal: one stream
    p = cmd(setup, "check", "no-such-job")
    assert p.returncode == 5 and p.stdout == b""
    assert p.stderr.decode().startswith("offload: no job no-such-job"), p.stderr
    p = cmd(setup, "status", "--json")
    assert p.returncode == 0 and "w2" in [j["id"] for j in json.loads(p.stdout)["workers"][0]["jobs"]]
    env = dict(os.environ, **setup["env"])
    piped = subprocess.run(f"{sys.executable} -m offload run --outputs {setup['out']} --wait -- 'seq 1 100000' "
                           "| head -1", shell=True, cwd=setup["repo"], env=env, capture_output=True, timeout=60)
    assert piped.stdout == b"1\n", piped.stderr
    lines = piped.stderr.decode().splitlines()
    assert lines[0].startswith("offload: job ") and lines[1].startswith(
        "offload: stopped watching: the output was closed; job "), piped.stderr


def test_a_user_process_killed_outright_takes_its_command_along(setup: dict[str, Any]) -> None:
    pid = server(setup)
    assert cmd(setup, "run", "--job", "w3", "--", "sleep 30").returncode == 0
    follower = spawn("logs", "--outputs", str(setup["out"]), "-f", "w3", cwd=setup["repo"], env=setup["env"])
    try:
        (child,) = wait_for(lambda: children_map().get(pid), timeout=20, what="a child of the warm server")
        kill_pids([follower.pid])
        follower.wait()
        wait_for(lambda: not proc_alive(child), timeout=20, what="the orphaned command to end")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert cmd(setup, "clean", "w3").returncode == 0


def test_a_server_older_than_the_code_is_not_used(setup: dict[str, Any]) -> None:
    pid = server(setup)
    source = Path(warm.__file__)
    before = source.stat()
    try:
        os.utime(source, ns=(before.st_atime_ns, time.time_ns()))
        p = cmd(setup, "status")
        assert p.returncode == 0, p.stderr
        wait_for(lambda: not proc_alive(pid), timeout=20, what="the stale server to go")
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert server(setup) != pid, "the next command starts a server with the code as it is"


def test_no_server_when_persist_is_zero_and_agent_stop_stops_it(setup: dict[str, Any]) -> None:
    zero = dict(setup, env=dict(setup["env"], OFFLOAD_PERSIST="0"))
    for _ in range(2):
        assert cmd(zero, "status").returncode == 0
    # A command starts a server (and creates its log) before it exits: had either started one, it would show now.
    directory = offload_paths.agent_dir()
    assert not list(directory.glob("warm-*.log")) and not list(directory.glob("warm-*.pid"))
    assert not [pid for pid in all_pids() if "offload.cli.warm" in proc_cmdline(pid)
                and str(directory) in proc_cmdline(pid)]
    pid = server(setup)
    state = json.loads(offload("agent", "status", "--json", cwd=setup["repo"], env=setup["env"]).stdout)
    assert state["warm_server_pid"] == pid
    p = offload("agent", "stop", cwd=setup["repo"], env=setup["env"])
    assert p.returncode == 0 and f"stopped the warm command server {pid}\n" in p.stdout.decode()
    wait_for(lambda: not proc_alive(pid), timeout=20, what="the warm server to stop")


def test_interactive_commands_start_the_usual_way() -> None:
    assert eligible(["run", "--wait", "--", "make"])
    assert eligible(["run", "--", "make", "--attach"]), "words after -- are the job's"
    assert not eligible(["run", "--attach", "--", "make"])
    assert not any(eligible([c, "job"]) for c in ("attach", "shell", "mcp", "agent", "fleet", "init"))
    assert not eligible([])


def test_every_installations_socket_fits_where_the_agent_puts_it(tmp_path: Path) -> None:
    """The directory is chosen (under /tmp when need be) so that its longest socket name fits."""
    from offload.paths import LONGEST_SOCKET_NAME, InstallationFiles

    names = {InstallationFiles(tmp_path, kind, f"/venv{i}/bin/python|/src{i}/offload:1").socket.name
             for i in range(3) for kind in ("agent", "warm")}
    assert len(names) == 6 and max(len(n) for n in names) == len(LONGEST_SOCKET_NAME)


def test_the_server_answers_only_its_own_user(setup: dict[str, Any]) -> None:
    """Its socket is 0600 in a 0700 directory; even opened up, another user's command is refused unrun."""
    pid = server(setup)
    sock = warm.files().socket
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    dirs = [d for d in (sock.parent, *sock.parents) if d != Path("/")]
    modes = {d: stat.S_IMODE(d.stat().st_mode) for d in dirs}
    probe = ("import json, socket, struct, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "s.connect(sys.argv[1])\n"
             "s.settimeout(5)\n"
             "req = json.dumps({'argv': ['status'], 'cwd': '/', 'env': {}, 'umask': 18, 'stamp': sys.argv[2]}).encode()\n"
             "try:\n"
             "    socket.send_fds(s, [struct.pack('>cI', b'q', len(req)) + req], [0, 1, 2])\n"
             "    print(repr(s.recv(100)))\n"
             "except (ConnectionResetError, BrokenPipeError):\n"
             "    print(repr(b''))\n")
    try:
        for d in dirs:
            os.chmod(d, modes[d] | 0o011)
        os.chmod(sock, 0o666)
        p = subprocess.run(["/usr/bin/python3", "-c", probe, str(sock), warm.code_stamp()], user=setup["ssh"].user,
                           capture_output=True, text=True, timeout=30, cwd="/")
    finally:
        os.chmod(sock, 0o600)
        for d, mode in modes.items():
            os.chmod(d, mode)
    assert (p.returncode, p.stdout.strip()) == (0, "b''"), p.stderr
    assert not children_map().get(pid), "nothing ran for another user"
    assert cmd(setup, "status").returncode == 0 and proc_alive(pid)


def test_a_command_of_another_installation_runs_itself_and_leaves_the_server(setup: dict[str, Any]) -> None:
    pid = server(setup)
    sock_path = warm.files().socket
    other = "/opt/other/bin/python|/opt/other/offload:1"
    request = json.dumps({"argv": ["status"], "cwd": "/", "env": {}, "umask": 0o22, "stamp": other}).encode()

    def answer() -> bytes:
        with socket.socket(socket.AF_UNIX) as s, open(os.devnull, "wb") as null:
            s.connect(str(sock_path))
            socket.send_fds(s, [struct.pack(">cI", b"q", len(request)) + request], [null.fileno()] * 3)
            s.settimeout(10)
            return s.recv(5)[:1]

    assert answer() == b"!", "refused: nothing ran"
    assert not children_map().get(pid), "it forked nothing for it"
    # The server answers the next request as it did this one: it serves on, and did not take itself for stale.
    assert answer() == b"!"
    assert proc_alive(pid) and warm.server_pid() == pid, "the server serves on"


def test_agent_stop_also_stops_a_server_still_starting(setup: dict[str, Any]) -> None:
    """`offload agent stop` right after a command stops the server that command has just started."""
    env = dict(os.environ, **setup["env"])
    both = (f"{sys.executable} -m offload status --outputs {setup['out']} > /dev/null && "
            f"{sys.executable} -m offload agent stop")
    p = subprocess.run(both, shell=True, cwd=setup["repo"], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    stopped = [line for line in p.stdout.decode().splitlines() if line.startswith("stopped the warm command server ")]
    assert stopped, p.stdout
    pid = int(stopped[0].split()[-1])
    wait_for(lambda: not proc_alive(pid), timeout=20, what="the stopped server to exit")
    assert warm.server_pid() is None


MARKER = '''

_unmarked_main = main


def main(argv: list[str] | None = None) -> None:
    """Note where this ran (the process, its parent, this file), then run as always."""
    mark = os.environ.get("OFFLOAD_TEST_MARK")
    if mark:
        import json as _json

        with open(mark, "a") as f:
            f.write(_json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "file": __file__,
                                 "argv": list(sys.argv[1:] if argv is None else argv)}) + "\\n")
    _unmarked_main(argv)
'''


def _installation(base: Path) -> str:
    """Another installation of offload in BASE: a virtualenv of its own with its own copy of the package (which
    notes in $OFFLOAD_TEST_MARK where each command ran), on this environment's dependencies. Its Python."""
    import sysconfig

    source = base / "src"
    shutil.copytree(Path(offload_paths.__file__).resolve().parent, source / "offload",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(source / "offload" / "cli" / "app.py", "a") as f:
        f.write(MARKER)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # The copy first; then this environment's packages as plain entries, so its editable offload stays out.
    ours = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "offload-test.pth").write_text("".join(f"{p}\n" for p in (str(source), *ours)))
    return str(venv / "bin" / "python")


def test_each_installation_gets_a_warm_server_of_its_own(setup: dict[str, Any], tmp_path: Path) -> None:
    """Two installations (two virtualenvs, two copies of offload) side by side: each command of either runs warm,
    in a child of its own installation's server, never in the other's."""
    pythons = [_installation(tmp_path / name) for name in ("one", "two")]
    mark = tmp_path / "marks"
    env = dict(os.environ, **setup["env"], OFFLOAD_TEST_MARK=str(mark))

    def offload_of(python: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        p = subprocess.run([python, "-m", "offload", *args], cwd=setup["repo"], env=env, capture_output=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        return p

    def warm_pid(python: str) -> int | None:
        return json.loads(offload_of(python, "agent", "status", "--json").stdout)["warm_server_pid"]

    for python in pythons:
        offload_of(python, "status", "--outputs", str(setup["out"]))  # runs itself, and starts a server
    servers = [wait_for(lambda: warm_pid(python), timeout=30, what=f"the warm server of {python}")
               for python in pythons]
    assert servers[0] != servers[1]
    for python in pythons * 2:
        offload_of(python, "status", "--outputs", str(setup["out"]))
    copies = {server: str(Path(python).parents[2]) for server, python in zip(servers, pythons)}  # base/venv/bin
    ran = [json.loads(line) for line in mark.read_text().splitlines()]
    warm_runs = [r for r in ran if r["ppid"] in copies]
    assert all(r["file"].startswith(copies[r["ppid"]] + "/") for r in warm_runs), "only its own code"
    assert [r["ppid"] for r in warm_runs] == servers * 2, "every command after the first of each ran warm"
    # `agent stop` of one installation stops its own server, and leaves the other's serving.
    p = offload_of(pythons[0], "agent", "stop")
    assert f"stopped the warm command server {servers[0]}\n" in p.stdout.decode()
    wait_for(lambda: not proc_alive(servers[0]), timeout=20, what="the first installation's server to stop")
    assert proc_alive(servers[1]) and warm_pid(pythons[1]) == servers[1]
    assert warm_pid(pythons[0]) is None


def _gone(sock: socket.socket) -> bool:
    """The server has closed its end of SOCK (it reads EOF, or a reset)."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_a_stalled_client_holds_up_no_other_command(setup: dict[str, Any]) -> None:
    """Clients that connect and send nothing, or half a request, cost the commands behind them nothing, and are
    dropped once their deadline passes."""
    pid = server(setup)
    stalled = [socket.socket(socket.AF_UNIX) for _ in range(5)]
    try:
        for s in stalled:
            s.connect(str(warm.files().socket))
        stalled[-2].sendall(b"q\0")  # half a header
        stalled[-1].sendall(struct.pack(">cI", b"q", 1000) + b"{")  # a header and the start of its request
        started = time.monotonic()
        # Before, each stalled client held the server for 10 s in turn: this command waited 50 s.
        p = cmd(setup, "status", timeout=15)
        took = time.monotonic() - started
        assert p.returncode == 0, p.stderr
        assert not any(_gone(s) for s in stalled), f"served in {took:.1f} s, while every stalled client still waits"
        wait_for(lambda: all(_gone(s) for s in stalled), timeout=30, what="the stalled clients to be dropped")
    finally:
        for s in stalled:
            s.close()
    assert proc_alive(pid) and cmd(setup, "status", timeout=15).returncode == 0


def _state(pid: int) -> str:
    st = proc_stat(pid)
    return st[0] if st else "gone"


class _Reader:
    """Everything a process writes to a pipe, read as it comes."""

    def __init__(self, pipe: Any) -> None:
        self.data = b""
        self._pipe = pipe
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := os.read(self._pipe.fileno(), 65536):
            self.data += chunk

    def last(self) -> int:
        """The last whole number printed so far (0 before any)."""
        lines = self.data.split(b"\n")[:-1]
        return int(lines[-1]) if lines else 0


def test_ctrl_z_stops_the_command_and_fg_continues_it(setup: dict[str, Any]) -> None:
    """SIGTSTP stops the warm command along with the user's process; SIGCONT continues both, nothing is lost, and
    the exit code is the command's. A stopped command outlives the warm server that started it."""
    pid = server(setup)
    workspace = Path(setup["ssh"].workspace)
    end = workspace / "tz.end"  # the job ends once this file is there
    counter = f"i=0; while [ ! -e {end} ]; do i=$((i+1)); echo $i; sleep 0.05; done; exit 3"
    user = subprocess.Popen([sys.executable, "-m", "offload", "run", "--outputs", str(setup["out"]), "--job", "tz",
                             "--wait", "--", counter], cwd=setup["repo"], env=dict(os.environ, **setup["env"]),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            process_group=0)  # a job of its own, as a shell makes it
    out = _Reader(user.stdout)
    try:
        (child,) = wait_for(lambda: children_map().get(pid), timeout=30, what="the warm child")
        wait_for(lambda: out.last() >= 3, timeout=30, what="the counter on the user's stdout")
        user.send_signal(signal.SIGTSTP)
        wait_for(lambda: _state(user.pid) == "T" and _state(child) == "T", timeout=20,
                 what="the user's process and the command to stop")

        def job_at() -> int:
            logs = list(workspace.glob("jobs/tz/tasks/*/log"))
            lines = logs[0].read_bytes().split(b"\n")[:-1] if logs else []
            return int(lines[-1]) if lines else 0

        # The job goes on on the worker; the stopped command shows none of it.
        wait_for(lambda: job_at() >= out.last() + 10, timeout=30, what="the job to go on")
        shown = out.data
        wait_for(lambda: job_at() >= out.last() + 30, timeout=30, what="the job to go on")
        assert out.data == shown and _state(child) == "T"
        # The server going away takes nothing from a stopped command.
        kill_pids([pid], signal.SIGTERM)
        assert _state(child) == "T"
        user.send_signal(signal.SIGCONT)
        wait_for(lambda: out.last() > job_at() - 5, timeout=30, what="the output to catch up with the job")
        end.touch()
        assert user.wait(timeout=60) == 3, user.stderr.read()
        numbers = [int(n) for n in out.data.split()]
        assert numbers == list(range(1, len(numbers) + 1)) and numbers[-1] == job_at()
    finally:
        if user.poll() is None:
            user.kill()
            user.wait()


def test_a_stopped_command_whose_user_process_is_killed_ends(setup: dict[str, Any]) -> None:
    """Killed outright while stopped, the user's process can continue nothing: the command still ends."""
    pid = server(setup)
    assert cmd(setup, "run", "--job", "tk", "--", "sleep 30").returncode == 0
    user = subprocess.Popen([sys.executable, "-m", "offload", "logs", "--outputs", str(setup["out"]), "-f", "tk"],
                            cwd=setup["repo"], env=dict(os.environ, **setup["env"]), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, process_group=0)
    try:
        (child,) = wait_for(lambda: children_map().get(pid), timeout=30, what="the warm child")
        user.send_signal(signal.SIGTSTP)
        wait_for(lambda: _state(user.pid) == "T" and _state(child) == "T", timeout=20,
                 what="the user's process and the command to stop")
        kill_pids([user.pid])
        wait_for(lambda: not proc_alive(child), timeout=20, what="the stopped command to end with its user")
    finally:
        if user.poll() is None:
            user.kill()
        user.wait()
    assert cmd(setup, "clean", "tk").returncode == 0
