"""Real test workers: per-test sshd hosts, Docker worker containers, outputs files and test repositories.

The fixtures in `tests/conftest.py` are thin wrappers around what is here; tests import the dataclasses and
helpers directly (`from tests.workers import SshdWorker, sshd_record, write_outputs, make_repo, ...`).
Everything started here is tracked by PID and stopped by PID; every wait has a timeout.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = REPO_ROOT / "scripts"
SHM = Path("/dev/shm")
WORKER_USER = "offloadw"
WORKER_IMAGE = "offload-worker:test"
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# Labels every container the suite starts, so a later session can remove what a killed one left behind.
CONTAINER_LABEL = "offload.test.pid"
# Every sshd the suite starts reads a config file named after the PID of the pytest session that owns it; sshd
# keeps its command line in its process title, so a later session can find what a killed one left behind.
SSHD_CONFIG_NAME = "sshd-{owner}.conf"
_SSHD_TITLE = re.compile(r"^sshd: " + re.escape(SSHD) + r" -D -e -f \S*/sshd-(\d+)\.conf( |$)")
# Infrastructure processes get this environment, never the test's patched one (HOME, git identity, ...).
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

SSHD_START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class TestbedError(RuntimeError):
    """A test worker could not be started or stopped; the message says what and shows its log."""

    __test__ = False  # a test module that imports it must not have pytest take it for a test class


# --------------------------------------------------------------------------------------------------------------
# Waiting and processes


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; raise TestbedError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class PipeReader:
    """What a child process writes to one of its pipes, read as it comes, so that a test waits for a line of it
    rather than for a time. Reads only what is there (never blocks), so the test can go on to `communicate()`,
    which returns the rest."""

    def __init__(self, pipe: Any) -> None:
        self.fd = pipe.fileno()
        self.data = b""
        self.closed = False

    def read(self) -> bytes:
        """Everything read so far, after taking in what has arrived."""
        while not self.closed and select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 65536)
            self.data += chunk
            self.closed = not chunk
        return self.data

    def wait_for(self, text: bytes, *, timeout: float) -> bytes:
        """Wait until TEXT has been written; everything read so far."""
        try:
            wait_for(lambda: text in self.read(), timeout=timeout, what=repr(text))
        except TestbedError as e:
            raise TestbedError(f"{e}; read so far: {self.data[-2000:]!r}") from None
        return self.data


def run(argv: Sequence[str], *, timeout: float = 60, check: bool = True, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout, capturing text output; on failure raise with its stderr."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from e
    if check and result.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process from /proc/PID/stat, or None once it is gone."""
    data = _read(f"/proc/{pid}/stat")
    if data is None:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[1])


def proc_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def proc_environ(pid: int) -> dict[str, str]:
    """The environment a process was started with (empty when unreadable or gone)."""
    data = _read(f"/proc/{pid}/environ") or b""
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def proc_comm(pid: int) -> str:
    return (_read(f"/proc/{pid}/comm") or b"").decode(errors="replace").strip()


def proc_cmdline(pid: int) -> list[str]:
    data = _read(f"/proc/{pid}/cmdline") or b""
    return [a.decode(errors="replace") for a in data.split(b"\0") if a]


def proc_cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def proc_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children_map() -> dict[int, list[int]]:
    """ppid -> child PIDs, for every process on the machine."""
    kids: dict[int, list[int]] = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st is not None:
            kids.setdefault(st[1], []).append(pid)
    return kids


def descendants(pid: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    """Every process below `pid` in the process tree (children first)."""
    kids = children_map() if kids is None else kids
    out: list[int] = []
    todo = list(kids.get(pid, ()))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL, *, timeout: float = STOP_TIMEOUT) -> list[int]:
    """Send `sig` to each PID and wait until all are gone; return the PIDs that were signalled."""
    sent = []
    for pid in pids:
        if pid <= 1 or pid == os.getpid():
            continue
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:
            pass
    if sent:
        wait_for(lambda: not any(proc_alive(p) for p in sent), timeout=timeout,
                 what=f"processes {sent} to exit after signal {sig}")
    return sent


def stop_process(proc: subprocess.Popen[Any] | None, pid: int, *, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after `timeout`; reap it when it is our child."""
    if not proc_alive(pid):
        if proc is not None:
            proc.poll()
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        if proc is not None:
            proc.wait(timeout=timeout)
        else:
            wait_for(lambda: not proc_alive(pid), timeout=timeout, what=f"process {pid} to exit")
    except (subprocess.TimeoutExpired, TestbedError):
        kill_pids([pid])
        if proc is not None:
            proc.wait(timeout=timeout)


# --------------------------------------------------------------------------------------------------------------
# Users and keys


@dataclass(frozen=True)
class WorkerUser:
    """The dedicated login user that sshd workers accept (root's shell startup would skew timings)."""

    name: str
    uid: int
    gid: int
    home: str


def ensure_worker_user(name: str = WORKER_USER) -> WorkerUser:
    """Create the login user if it is missing, unlock it for key logins, and add it to `docker` if that exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        result = run(["useradd", "-m", "-s", "/bin/bash", name], check=False)
        if result.returncode != 0:
            try:  # another session may have created it in the meantime
                pwd.getpwnam(name)
            except KeyError:
                raise TestbedError(f"useradd {name} failed: {result.stderr.strip()}") from None
    # Without PAM, sshd refuses a locked account ('!' password); '*' is "no password" but not locked.
    run(["usermod", "-p", "*", name])
    if group_exists("docker"):
        ensure_in_group(name, "docker")
    pw = pwd.getpwnam(name)
    return WorkerUser(name=name, uid=pw.pw_uid, gid=pw.pw_gid, home=pw.pw_dir)


def group_exists(group: str) -> bool:
    try:
        grp.getgrnam(group)
        return True
    except KeyError:
        return False


def ensure_in_group(user: str, group: str) -> None:
    """Add `user` to `group` unless it is a member already (takes effect at its next login)."""
    if user not in grp.getgrnam(group).gr_mem:
        run(["usermod", "-aG", group, user])


def generate_keypair(path: Path, comment: str = "offload-test") -> tuple[Path, str]:
    """An ed25519 keypair without passphrase at `path`/`path`.pub; returns (private key path, public line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], timeout=30)
    pub = path.with_name(path.name + ".pub").read_text().strip()
    return path, pub


@dataclass(frozen=True)
class ClientKey:
    """The SSH client identity tests log in with."""

    private: Path
    public: Path

    @property
    def public_line(self) -> str:
        return self.public.read_text().strip()


def _key_only(public_line: str) -> str:
    """'ssh-ed25519 AAAA...' without the comment, the form outputs files pin."""
    kind, blob = public_line.split()[:2]
    return f"{kind} {blob}"


# --------------------------------------------------------------------------------------------------------------
# sshd workers


@dataclass
class SshdWorker:
    """A real OpenSSH server on loopback for one test, accepting `user` with the test client key.

    `workspace` is a fresh directory on tmpfs owned by `user`. `host_key` is the server's public key line
    ("ssh-ed25519 AAAA..."), ready to pin in an outputs file or a known_hosts file. Every login gets
    TMUX_TMPDIR=`tmux_tmpdir` (sshd SetEnv), a directory of this worker's own: all sshd workers share one
    login user, and job ids (hence `tmux -L offload-<job>` sockets) repeat across tests and sessions.
    """

    host: str
    port: int
    user: str
    key_path: Path
    host_key: str
    host_key_path: Path
    log_path: Path
    pid: int
    workspace: str
    config_path: Path
    authorized_keys_path: Path
    extra_config: tuple[str, ...] = ()
    tmux_tmpdir: str | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _generation: int = field(default=0, repr=False)

    # -- what tests read --------------------------------------------------------------------------------------

    def accepted_count(self) -> int:
        """How many logins sshd has accepted so far: each SSH connection logs one 'Accepted publickey' line."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count("Accepted publickey")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def known_hosts_line(self) -> str:
        """The known_hosts entry for this server: '[127.0.0.1]:PORT ssh-ed25519 AAAA...'."""
        return f"[{self.host}]:{self.port} {_key_only(self.host_key)}"

    def write_known_hosts(self, path: Path) -> Path:
        """Write a known_hosts file that trusts exactly this server's current host key."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.known_hosts_line + "\n")
        return path

    def ssh_argv(self, known_hosts: Path, *command: str, connect_timeout: int = 5) -> list[str]:
        """An OpenSSH client command line for this worker that ignores every ssh_config and agent.

        The ssh binary reads ~/.ssh from the passwd entry, not $HOME, so `-F /dev/null` is what keeps a
        developer's config out.
        """
        return ["ssh", "-F", "/dev/null", "-i", str(self.key_path), "-o", "IdentitiesOnly=yes",
                "-o", "IdentityAgent=none", "-o", f"UserKnownHostsFile={known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                "-p", str(self.port), f"{self.user}@{self.host}", *command]

    def session_pids(self) -> list[int]:
        """PIDs of the per-connection sshd processes (children of the listener and their sshd children)."""
        if not proc_alive(self.pid):
            return []
        kids = children_map()
        return [p for p in descendants(self.pid, kids) if proc_comm(p) == "sshd"]

    # -- what tests do ----------------------------------------------------------------------------------------

    def kill_sessions(self) -> list[int]:
        """Drop every open connection at once, as a network failure would; the listener keeps accepting.

        Only the per-connection sshd processes are killed: commands they started (tmux servers, nohup jobs)
        keep running, as they would on a real host. Returns the PIDs killed.
        """
        return kill_pids(self.session_pids())

    def restart(self) -> None:
        """Stop and start sshd on the same port with the same host key, dropping open connections."""
        self._shutdown()
        self._launch()

    def rotate_host_key(self) -> str:
        """Restart sshd on the same port with a NEW host key (a rebuilt or impersonated host); returns it."""
        self._shutdown()
        self._generation += 1
        new_path = self.host_key_path.with_name(f"host_ed25519_{self._generation}")
        _, pub = generate_keypair(new_path, comment=f"offload-test-host-{self._generation}")
        self.host_key_path = new_path
        self.host_key = _key_only(pub)
        self._write_config()
        self._launch()
        return self.host_key

    def use_host_key(self, private: Path, public_line: str) -> None:
        """Restart sshd on the same port with a host key it had before (PRIVATE, whose key line is PUBLIC_LINE):
        a host back on an old key, or an impersonator holding it."""
        self._shutdown()
        self.host_key_path = private
        self.host_key = _key_only(public_line)
        self._write_config()
        self._launch()

    def stop(self) -> None:
        """Stop the listener and every connection it has; safe to call twice."""
        self._shutdown()

    # -- the rest ---------------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        lines = [
            # Given first: for most keywords sshd keeps the first value it reads.
            *self.extra_config,
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key_path}",
            f"AuthorizedKeysFile {self.authorized_keys_path}",
            f"AllowUsers {self.user}",
            "PidFile none",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "LogLevel VERBOSE",
            "PrintMotd no",
            "PrintLastLog no",
            "AcceptEnv LANG LC_*",
            f"Subsystem sftp {SFTP_SERVER}",
            *([f"SetEnv TMUX_TMPDIR={self.tmux_tmpdir}"] if self.tmux_tmpdir else []),
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _launch(self) -> None:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config_path)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, env=CLEAN_ENV, cwd="/", start_new_session=True)
        self.pid = self._proc.pid
        try:
            wait_for(self._ready, timeout=SSHD_START_TIMEOUT, what=f"sshd on {self.host}:{self.port}")
        except TestbedError as e:
            self._shutdown()
            raise TestbedError(f"{e}; sshd log:\n{self.log_text()[-3000:]}") from None

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise TestbedError(f"sshd exited with {self._proc.returncode} during start; "
                               f"log:\n{self.log_text()[-3000:]}")
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.settimeout(2)
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def _shutdown(self) -> None:
        sessions = self.session_pids()  # before the listener goes: then they are reparented and hard to find
        stop_process(self._proc, self.pid)
        kill_pids(sessions + self.session_pids())


def make_traversable(path: Path) -> None:
    """Let other users pass through `path` and its parents (pytest makes its temporary dirs 0700)."""
    for p in (path, *path.parents):
        if p == Path("/"):
            break
        mode = p.stat().st_mode
        if mode & 0o011 != 0o011:
            p.chmod(stat.S_IMODE(mode) | 0o011)


def tmux_dir_prefix(owner: int | None = None) -> str:
    """Prefix of the private TMUX_TMPDIRs a test session makes on tmpfs; short, as socket paths must stay
    under 108 bytes with a 63-character job id in them."""
    return f"{SHM}/ot-{os.getpid() if owner is None else owner}-"


def start_sshd(*, base: Path, user: WorkerUser, client_key: ClientKey, workspace: Path | None = None,
               authorized_keys: Sequence[str] | None = None, extra_config: Sequence[str] = (),
               host: str = "127.0.0.1", port: int | None = None, isolate_tmux: bool = True) -> SshdWorker:
    """Start `sshd -D -e` for `user` on `host` and a free port; its files (config, keys, log) live in `base`.

    `workspace` defaults to a fresh `base/workspace`, owned by the user. `authorized_keys` defaults to the
    client key. `extra_config` lines come first in sshd_config and so override the defaults. With
    `isolate_tmux` (the default) logins get a private TMUX_TMPDIR; without it tmux uses /tmp/tmux-UID.
    """
    base.mkdir(parents=True, exist_ok=True)
    # sshd reads AuthorizedKeysFile as the login user, so the path to it must be traversable by that user.
    make_traversable(base)
    ws = workspace if workspace is not None else base / "workspace"
    ws.mkdir(parents=True, exist_ok=True)
    make_traversable(ws.parent)
    os.chown(ws, user.uid, user.gid)
    host_key_path, pub = generate_keypair(base / "host_ed25519_0", comment="offload-test-host-0")
    auth = base / "authorized_keys"
    auth.write_text("".join(f"{k}\n" for k in (authorized_keys if authorized_keys is not None
                                               else [client_key.public_line])))
    auth.chmod(0o644)
    attempts = 1 if port is not None else 5
    for attempt in range(attempts):
        chosen = port or free_port(host)
        tmux_tmpdir = None
        if isolate_tmux:
            tmux_tmpdir = f"{tmux_dir_prefix()}s{chosen}"
            shutil.rmtree(tmux_tmpdir, ignore_errors=True)
            os.mkdir(tmux_tmpdir, 0o700)
            os.chown(tmux_tmpdir, user.uid, user.gid)
        worker = SshdWorker(host=host, port=chosen, user=user.name, key_path=client_key.private,
                            host_key=_key_only(pub), host_key_path=host_key_path, log_path=base / "sshd.log",
                            pid=0, workspace=str(ws), config_path=base / SSHD_CONFIG_NAME.format(owner=os.getpid()),
                            authorized_keys_path=auth, extra_config=tuple(extra_config), tmux_tmpdir=tmux_tmpdir)
        worker._write_config()
        try:
            worker._launch()
            return worker
        except TestbedError:
            if tmux_tmpdir:
                shutil.rmtree(tmux_tmpdir, ignore_errors=True)
            # Another process can take the free port between probing and binding; try a different one.
            if attempt == attempts - 1 or "Address already in use" not in worker.log_text():
                raise
    raise AssertionError("unreachable")


def cleanup_user_processes(uid: int, *, ssh_server: tuple[str, int] | None = None,
                           under: Sequence[str] = (), homes_under: Sequence[str] = (),
                           sockets_under: Sequence[str] = (), tmux_only: bool = False) -> list[int]:
    """Kill what tests left behind for one uid: tmux servers (gracefully first) and the processes below them.

    A process belongs to the test when its environment says it came through `ssh_server` (SSH_CONNECTION),
    or has a HOME under a path in `homes_under`, or its working directory (or, for a tmux server, one of its
    panes') is under a path in `under`; a tmux server also belongs when its socket is under `sockets_under`.
    With `tmux_only`, only tmux servers and their panes are considered. Returns the PIDs stopped.
    """
    roots = [str(Path(p)) for p in under]
    home_roots = [str(Path(p)) for p in homes_under]
    socket_roots = [str(Path(p)) for p in sockets_under]

    def inside(path: str | None, within: list[str]) -> bool:
        return path is not None and any(path == r or path.startswith(r + "/") for r in within)

    def belongs(pid: int) -> bool:
        env = proc_environ(pid)
        if ssh_server is not None:
            conn = env.get("SSH_CONNECTION", "").split()
            if len(conn) == 4 and conn[2] == ssh_server[0] and conn[3] == str(ssh_server[1]):
                return True
        if inside(env.get("HOME"), home_roots):
            return True
        return inside(proc_cwd(pid), roots)

    me = os.getpid()
    kids = children_map()
    candidates = [p for p in all_pids() if p != me and proc_uid(p) == uid]
    servers = [p for p in candidates if proc_comm(p) == "tmux: server"]
    doomed: list[int] = []
    for server in servers:
        below = descendants(server, kids)
        if belongs(server) or any(belongs(p) for p in below) or \
                any(inside(path, socket_roots) for path in _unix_socket_paths(server)):
            _tmux_kill_server(server, uid)
            doomed.extend([server, *below])
    if not tmux_only:
        for pid in candidates:
            if pid not in doomed and proc_comm(pid) != "tmux: server" and belongs(pid):
                doomed.append(pid)
    kill_pids([p for p in doomed if proc_alive(p)])
    return doomed


RELAY = """\
import socket, sys, threading, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
def up():
    start, sent = time.monotonic(), 0
    while chunk := sys.stdin.buffer.raw.read(16384 if rate else 65536):
        s.sendall(chunk)
        sent += len(chunk)
        if rate:
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while chunk := s.recv(65536):
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
"""


def proxy_relay(directory: Path, python: str = sys.executable, *, upload_rate: float | None = None) -> str:
    """A ProxyCommand (%h and %p left for the client to expand) that relays stdin and stdout to the worker, as an
    IAP tunnel does: a process of its own per connection, and a hop in between. With UPLOAD_RATE (bytes a second),
    what goes to the worker is held to that rate, as on a slow link. The script goes in DIRECTORY."""
    script = directory / "relay.py"
    script.write_text(RELAY)
    return f"{python} -S {script} %h %p" + (f" {upload_rate:.0f}" if upload_rate else "")


def stop_agents(directory: Path) -> list[int]:
    """Stop the connection agents and warm command servers a test started: every such process serving a directory
    under DIRECTORY, found by its command line and stopped by PID."""
    root = str(directory)
    doomed = []
    for pid in all_pids():
        argv = proc_cmdline(pid)
        for module in ("offload.runtime.agent", "offload.cli.warm"):
            if module in argv and len(argv) > argv.index(module) + 1:
                served = argv[argv.index(module) + 1]
                if served == root or served.startswith(root + "/"):
                    doomed.append(pid)
    return kill_pids(doomed, signal.SIGTERM)


def _unix_socket_paths(pid: int) -> list[str]:
    """Filesystem paths of the unix sockets a process has open (its listening socket among them)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    paths = []
    for line in (_read("/proc/net/unix") or b"").decode(errors="replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes and fields[7].startswith("/"):
            paths.append(fields[7])
    return paths


def _tmux_socket(server_pid: int, uid: int) -> str | None:
    """The socket a tmux server listens on: the path of the unix socket it holds under a tmux dir."""
    for path in _unix_socket_paths(server_pid):
        if f"/tmux-{uid}/" in path or os.path.basename(os.path.dirname(path)).startswith("tmux-"):
            return path
    paths = _unix_socket_paths(server_pid)
    return paths[0] if paths else None


def _tmux_kill_server(server_pid: int, uid: int) -> None:
    """`tmux kill-server` as the server's owner, then remove its socket (tmux 3.3 leaves it behind)."""
    sock = _tmux_socket(server_pid, uid)
    if sock is None:
        kill_pids([server_pid])
        return
    user = pwd.getpwuid(uid)
    argv = ["tmux", "-S", sock, "kill-server"]
    if uid != os.getuid():
        argv = ["runuser", "-u", user.pw_name, "--", *argv]
    run(argv, check=False, timeout=10, env=dict(CLEAN_ENV, HOME=user.pw_dir))
    try:  # kill-server returns before the server has exited
        wait_for(lambda: not proc_alive(server_pid), timeout=3, what="tmux kill-server")
    except TestbedError:
        kill_pids([server_pid])
    try:
        if stat.S_ISSOCK(os.lstat(sock).st_mode) and os.lstat(sock).st_uid == uid:
            os.unlink(sock)
    except OSError:
        pass


# --------------------------------------------------------------------------------------------------------------
# Docker workers


@dataclass
class DockerWorker:
    """A running worker container (`--restart always`, kept alive by `sleep infinity`).

    `workspace` is bind-mounted at the same path inside and out.
    """

    name: str
    workspace: str
    image: str

    def exec(self, *argv: str, check: bool = True, timeout: float = 60,
             user: str | None = None, workdir: str | None = None) -> subprocess.CompletedProcess[str]:
        """`docker exec` a command in the container and capture its output."""
        opts = [*(["-u", user] if user else []), *(["-w", workdir] if workdir else [])]
        return run(["docker", "exec", *opts, self.name, *argv], check=check, timeout=timeout)

    def running(self) -> bool:
        result = run(["docker", "inspect", "-f", "{{.State.Running}}", self.name], check=False, timeout=30)
        return result.returncode == 0 and result.stdout.strip() == "true"

    def stop(self) -> None:
        """Remove the container, whatever its state; safe to call twice."""
        run(["docker", "rm", "-f", self.name], check=False, timeout=60)


@dataclass(frozen=True)
class DockerEngine:
    """The Docker engine the suite uses; `started` is True when this session had to start it."""

    socket: str
    started: bool


_container_seq = 0


def start_docker_worker(workspace: Path, *, image: str = WORKER_IMAGE, name: str | None = None,
                        extra_args: Sequence[str] = ()) -> DockerWorker:
    """Start a worker container from `image` with `workspace` bind-mounted at the same path."""
    global _container_seq
    _container_seq += 1
    name = name or f"offload-test-{os.getpid()}-{_container_seq}"
    workspace.mkdir(parents=True, exist_ok=True)
    ws = str(workspace)
    run(["docker", "run", "-d", "--name", name, "--restart", "always", "--label", f"{CONTAINER_LABEL}={os.getpid()}",
         "-v", f"{ws}:{ws}", *extra_args, image, "sleep", "infinity"], timeout=120)
    worker = DockerWorker(name=name, workspace=ws, image=image)
    try:
        wait_for(worker.running, timeout=30, what=f"container {name} to run", interval=0.1)
    except TestbedError:
        worker.stop()
        raise
    return worker


def stop_stale_sshd() -> list[int]:
    """Kill sshd listeners, and their connections, whose owning test session no longer runs."""
    me = os.getpid()
    stale = []
    kids = children_map()
    for pid in all_pids():
        if proc_comm(pid) != "sshd":
            continue
        m = _SSHD_TITLE.match(" ".join(proc_cmdline(pid)))
        if m and int(m.group(1)) != me and not proc_alive(int(m.group(1))):
            stale.extend(p for p in descendants(pid, kids) if proc_comm(p) == "sshd")
            stale.append(pid)
    return kill_pids(stale)


def remove_stale_containers() -> list[str]:
    """Remove containers that test sessions which no longer run left behind (found by their label)."""
    result = run(["docker", "ps", "-a", "--filter", f"label={CONTAINER_LABEL}",
                  "--format", f'{{{{.Names}}}} {{{{.Label "{CONTAINER_LABEL}"}}}}'], check=False, timeout=60)
    stale = []
    for line in result.stdout.splitlines():
        name, _, owner = line.partition(" ")
        if owner.isdigit() and int(owner) != os.getpid() and not proc_alive(int(owner)):
            stale.append(name)
    if stale:
        run(["docker", "rm", "-f", *stale], check=False, timeout=120)
    return stale


@dataclass
class SshDockerWorker:
    """An sshd host whose login user runs `docker`, plus the worker container it runs jobs in.

    This is the shape of a `gce-cos` VM (or an `ssh` host with `container` set): SSH to the host, then
    `docker exec` into the container; the workspace is the same path on both.
    """

    ssh: SshdWorker
    container: DockerWorker

    @property
    def workspace(self) -> str:
        return self.ssh.workspace


# --------------------------------------------------------------------------------------------------------------
# Outputs files


def sshd_record(worker: SshdWorker | SshDockerWorker, **overrides: Any) -> dict[str, Any]:
    """The outputs-contract worker dict for an sshd worker; its host key is pinned unless overridden."""
    ssh = worker.ssh if isinstance(worker, SshDockerWorker) else worker
    record: dict[str, Any] = {
        "name": f"ssh-{ssh.port}",
        "host": ssh.host,
        "port": ssh.port,
        "user": ssh.user,
        "container": worker.container.name if isinstance(worker, SshDockerWorker) else None,
        "workspace": ssh.workspace,
        "host_keys": [ssh.host_key],
        "proxy_command": None,
    }
    record.update(overrides)
    return record


def docker_record(worker: DockerWorker, **overrides: Any) -> dict[str, Any]:
    """The outputs-contract worker dict for a local container (`local-docker`)."""
    record: dict[str, Any] = {
        "name": worker.name,
        "host": "localhost",
        "port": 22,
        "user": None,
        "container": worker.name,
        "workspace": worker.workspace,
        "host_keys": [],
        "proxy_command": None,
    }
    record.update(overrides)
    return record


def write_outputs(path: Path, provider: str, workers: list[dict[str, Any]],
                  developer: str = "dev@example.com") -> Path:
    """Write a stack-outputs JSON file (the shape of `pulumi stack output --json`) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provider": provider, "developer": developer, "workers": workers}, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------------------------------
# Repositories


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Offload Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Offload Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(repo: Path, *args: str, timeout: float = 60) -> str:
    """Run git in `repo` with a fixed identity and no system or global config; return stdout."""
    env = {**os.environ, **GIT_IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise TestbedError(f"git {' '.join(args)} in {repo} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def ssh_transport(worker: "SshdWorker", tmp_path: Path, **overrides: Any) -> Any:
    """One SshTransport to WORKER over a direct connection of its own (its host key pinned in TMP_PATH); OVERRIDES go
    to its worker record (`proxy_command`, say). Close it."""
    from offload.outputs import WorkerRecord
    from offload.runtime.connection import ConnectOptions, open_connection
    from offload.runtime.hostkeys import KnownHosts
    from offload.runtime.transport import SshTransport

    record = WorkerRecord.from_dict(sshd_record(worker, **overrides))
    options = ConnectOptions(identity=worker.key_path, known_hosts=KnownHosts(tmp_path / "known_hosts"))
    return SshTransport("w", open_connection(record, options))


def make_repo(path: Path, files: int = 3) -> Path:
    """A git repository at `path` (put it on tmpfs) with `files` committed files on branch main.

    It holds `file0.txt`..., one file in a subdirectory and an executable script, so a sync that drops
    directories or modes shows up.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for i in range(files):
        (path / f"file{i}.txt").write_text(f"content {i}\n")
    (path / "src").mkdir(exist_ok=True)
    (path / "src" / "module.py").write_text("VALUE = 1\n")
    script = path / "run.sh"
    script.write_text("#!/bin/sh\necho ok\n")
    script.chmod(0o755)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def make_long_history(path: Path, *, commits: int = 120, files: int = 4, file_bytes: int = 16384,
                      seed: int = 1) -> Path:
    """A repository at PATH on branch main whose history is far larger than its tree: COMMITS commits, each
    rewriting one of FILES files with FILE_BYTES of fresh random text (which no delta or compression shrinks), so
    the history weighs about COMMITS / FILES times the tree. Built with `git fast-import`: seconds, not minutes."""
    import base64
    import random

    rng = random.Random(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    stream = bytearray()
    for n in range(commits):
        stream += b"commit refs/heads/main\n"
        stream += f"committer Offload Test <test@example.com> {1700000000 + n} +0000\n".encode()
        message = f"commit {n}\n".encode()
        stream += b"data %d\n%s" % (len(message), message)
        if n == 0:
            for i in range(files):
                data = base64.b64encode(rng.randbytes(file_bytes * 3 // 4))
                stream += f"M 100644 inline file{i}.txt\ndata {len(data)}\n".encode() + data + b"\n"
        else:
            data = base64.b64encode(rng.randbytes(file_bytes * 3 // 4))
            stream += f"M 100644 inline file{n % files}.txt\ndata {len(data)}\n".encode() + data + b"\n"
        stream += b"\n"
    env = {**os.environ, **GIT_IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    subprocess.run(["git", "-C", str(path), "fast-import", "--quiet"], input=bytes(stream), env=env, check=True,
                   timeout=300, capture_output=True)
    git(path, "checkout", "-q", "-f", "main")
    return path


def archive_size(repo: Path, rev: str = "HEAD") -> int:
    """Bytes of `git archive REV | gzip`: what the tree alone weighs on the wire."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev], capture_output=True, check=True, timeout=300)
    return len(subprocess.run(["gzip", "-c"], input=archive.stdout, capture_output=True, check=True,
                              timeout=300).stdout)


def tree_digest(path: Path) -> str:
    """A sha256 over every entry under `path` (the .git directory included): its path, type, mode and content.

    Two equal digests mean the tree is byte-identical, down to git's index and refs.
    """
    root = Path(path)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            h.update(f"{rel}\0{stat.S_IFMT(st.st_mode):o}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(full).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            h.update(b"\0")
    return h.hexdigest()


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)



def path_without(tool: str, scratch: Path) -> str:
    """This PATH with TOOL taken out: each directory that holds it is replaced by SCRATCH/<n>, a directory of
    links to everything else in it."""
    out = []
    for i, entry in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        d = Path(entry)
        if not (d / tool).exists():
            out.append(entry)
            continue
        copy = scratch / str(i)
        copy.mkdir(parents=True, exist_ok=True)
        for item in d.iterdir():
            if item.name != tool:
                (copy / item.name).symlink_to(item)
        out.append(str(copy))
    return os.pathsep.join(out)


class RecordedMeters:
    """Meters (offload/runtime/meter.py) that keep what they were told: the transfers opened, with their direction
    and total, the totals learnt later, the bytes moved and the transfers done."""

    def __init__(self) -> None:
        self.opened: list[tuple[Any, int | None]] = []
        self.totals: list[int] = []
        self.moved = 0
        self.finished = 0

    def __call__(self, direction: Any, total: int | None) -> "RecordedMeters":
        self.opened.append((direction, total))
        return self

    def advance(self, n: int) -> None:
        self.moved += n

    def sized(self, total: int) -> None:
        self.totals.append(total)

    def done(self) -> None:
        self.finished += 1
