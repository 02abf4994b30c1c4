"""The connection agent: one background process per user that keeps each worker's SSH transport (and the proxy or
IAP tunnel under it) open, so that a warm command opens no connection and loads no SSH library.

A command dials through `connect()`: it finds the agent's Unix socket, starting the agent when none answers, and
asks it for the worker's transport; every later step of the command is one request on that socket, and the agent
runs it over the transport it keeps. The agent reuses a transport only for the same host, port, user, identity,
pinned host keys, proxy command and known_hosts file, and checks a transport's host key against the trust of the
request each time, so trust is exactly what it is without the agent. It exits after OFFLOAD_PERSIST idle seconds
(default 600); `OFFLOAD_PERSIST=0` turns it off. When the agent cannot be used (it will not start, or it dies
before a step has started) the command falls back to its own connection without a word.

The socket lives in `$XDG_RUNTIME_DIR/offload/` (else offload's cache directory), in a directory only the user
may enter; the socket is mode 0600 and both sides check the other's uid. A step's input (a job's `--env` values
travel in the launch script on stdin) passes through the socket only, never an argv or a file.

Protocol: one Unix stream connection per request. The client sends one JSON line (with its code stamp, see
`offload.paths.code_stamp`), then, for a step with input, the input as frames while it reads the answer; the agent
answers with frames. A frame is a kind byte, a 4-byte big-endian length and the payload. Kinds: `i` input (empty:
end of input); `n` a notice for the user; `s` the step has started on the worker; `o` and `e` its stdout and
stderr; `x` its exit (`{"exit": N}`); `r` a reply (JSON); `!` an error (`{"type", "worker", "message", "hint"}`);
`d` the request was declined before anything ran (`{"reason", "retry"}`).

The agent relays a step's input to the worker as it comes, holding none of it. After the input the client sends
nothing, so its end of the socket closing means it was interrupted: the agent then gives the step up, and its
channel closes, so the command on the worker loses its input and output and ends.

Each installation of offload (a Python and a copy of the package) has an agent of its own: its socket, lock, pid
file and log are named after the installation (`offload.paths.InstallationFiles`), so two installations side by
side never run each other's code, and each keeps its own connections. A request of the same installation whose
code has changed (offload was upgraded or edited) retires the agent: it lets go of its socket, declines that
request and any later one with `retry` (the client asks again and so starts a new agent), finishes the requests it
has in hand, then exits.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import offload.errors as errors
from offload.errors import OffloadError
from offload.frames import peer_uid, recv_exact, recv_frame, send_frame
from offload.paths import InstallationFiles, agent_dir, code_stamp, installation_of, persist_seconds, private_dir
from offload.runtime.transport import Result, Sink, Transport

START_TIMEOUT = 10.0            # how long a command waits for an agent it started to answer
PROBE_AFTER = 15.0              # a transport unused this long must answer a round trip before the agent uses it


def agent_files(directory: Path | None = None) -> InstallationFiles:
    """This installation's agent: its socket, lock, pid file and log, in the agent directory."""
    return InstallationFiles(directory or agent_dir(), "agent")

_CHUNK = 65536


# --- errors across the socket ------------------------------------------------------------------------------------


def _error_frame(e: OffloadError) -> bytes:
    return json.dumps({"type": type(e).__name__, "worker": getattr(e, "worker", None), "message": e.message,
                       "hint": e.hint}).encode()


def _error_from(payload: bytes) -> OffloadError:
    """The OffloadError the agent reported, as its own class where offload has one."""
    data = json.loads(payload)
    cls = getattr(errors, str(data.get("type")), None)
    message, hint, worker = str(data.get("message")), data.get("hint"), data.get("worker")
    if isinstance(cls, type) and issubclass(cls, errors.WorkerError) and worker is not None:
        try:
            return cls(worker, message, hint=hint)
        except TypeError:
            pass
    if isinstance(cls, type) and issubclass(cls, OffloadError) and not issubclass(cls, errors.WorkerError):
        try:
            return cls(message, hint=hint)
        except TypeError:
            pass
    return OffloadError(message, hint=hint)


# --- what a transport is for --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DialSpec:
    """Everything a dial depends on, as the agent receives it: the worker, how to authenticate, whom to trust."""

    name: str
    host: str
    port: int
    user: str | None
    workspace: str
    host_keys: tuple[str, ...] = ()          # pinned in the outputs, plus keys from an authenticated API
    proxy_command: str | None = None         # as given (unexpanded), the record's or the options'
    identity: str | None = None
    known_hosts: str = ""
    connect_timeout: float = 15.0
    timeout: float | None = None
    auth_sock: str | None = None             # the ssh-agent offered when no identity file is given
    identity_stamp: str = ""                 # the identity file's inode, size and mtime: a new key, a new login
    key_source: str = ""                     # where HOST_KEYS come from (a KeySource), for what a refusal says

    @classmethod
    def of(cls, record: Any, options: Any, *, extra_keys: Sequence[str] | None = None,
           proxy_command: str | None = None, timeout: float | None = None) -> "DialSpec":
        identity = str(options.identity) if options.identity else None
        stamp = ""
        if identity:
            try:
                st = os.stat(identity)
                stamp = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
        source = "outputs" if record.host_keys else ("published" if extra_keys else "remembered")
        return cls(name=record.name, host=record.host, port=record.port, user=record.user,
                   workspace=record.workspace, host_keys=tuple(record.host_keys) + tuple(extra_keys or ()),
                   proxy_command=proxy_command or record.proxy_command or options.proxy_command,
                   identity=identity, known_hosts=str(options.known_hosts.path),
                   connect_timeout=options.connect_timeout, timeout=timeout,
                   auth_sock=None if identity else os.environ.get("SSH_AUTH_SOCK"), identity_stamp=stamp,
                   key_source=source)

    def key(self) -> str:
        """Two requests share a transport only when this is the same."""
        parts = [self.host, str(self.port), self.user or "", self.identity or "", self.identity_stamp,
                 self.auth_sock or "", "\n".join(sorted(set(self.host_keys))), self.proxy_command or "",
                 self.known_hosts]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DialSpec":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["host_keys"] = tuple(values.get("host_keys") or ())
        return cls(**values)


# --- the client side ------------------------------------------------------------------------------------------------


class AgentUnavailable(Exception):
    """The agent could not take the request before anything ran: the caller falls back to its own connection."""


class _Declined(AgentUnavailable):
    """The agent did not take the request: it belongs to another installation of offload, or it is retiring
    (RETRY: a new agent, started by asking again, takes it)."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


def _declined(payload: bytes) -> _Declined:
    data = json.loads(payload)
    return _Declined(str(data.get("reason")), retry=bool(data.get("retry")))


T = TypeVar("T")


def _asking(ask: Callable[[], T]) -> T:
    """ASK the agent, and once more when the one it reached was retiring (it has let go of its socket, so the
    second time starts and reaches a new agent)."""
    try:
        return ask()
    except _Declined as e:
        if not e.retry:
            raise
    return ask()


def _dial_agent(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        if peer_uid(sock) != os.getuid():
            raise AgentUnavailable(f"{path} is served by another user")
    except (OSError, AgentUnavailable):
        sock.close()
        raise
    return sock


def _start_agent(directory: Path, persist: float) -> None:
    """Start the agent unless one answers, and wait until it does (AgentUnavailable when it does not)."""
    import fcntl

    files = agent_files(directory)
    path = files.socket
    with open(files.lock, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _dial_agent(path).close()
            return  # another command started it meanwhile
        except (OSError, AgentUnavailable):
            pass
        try:
            path.unlink()  # a stale socket: its agent is gone
        except FileNotFoundError:
            pass
        log = files.log
        try:
            if log.stat().st_size > 1 << 20:
                log.unlink()
        except OSError:
            pass
        with open(log, "ab") as err:
            os.chmod(log, 0o600)
            process = subprocess.Popen([sys.executable, "-m", "offload.runtime.agent", str(directory), str(persist)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                       start_new_session=True, close_fds=True, cwd="/")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AgentUnavailable(f"the agent exited with {process.returncode} (see {log})")
            try:
                _dial_agent(path).close()
                return
            except (OSError, AgentUnavailable):
                time.sleep(0.01)
        raise AgentUnavailable("the agent did not answer in time")


def _request(header: dict[str, Any], *, start: bool) -> socket.socket:
    """A connection to the agent with HEADER sent; with START, an agent is started when none answers."""
    persist = persist_seconds()
    if persist == 0:
        raise AgentUnavailable("OFFLOAD_PERSIST=0")
    directory = agent_dir()
    if not private_dir(directory):
        raise AgentUnavailable(f"{directory} is not a private directory of this user")
    try:
        sock = _dial_agent(agent_files(directory).socket)
    except (OSError, AgentUnavailable):
        if not start:
            raise AgentUnavailable("no agent") from None
        _start_agent(directory, persist)
        try:
            sock = _dial_agent(agent_files(directory).socket)
        except OSError as e:
            raise AgentUnavailable(str(e)) from None
    try:
        sock.sendall(json.dumps(dict(header, stamp=code_stamp())).encode() + b"\n")
    except OSError as e:
        sock.close()
        raise AgentUnavailable(str(e)) from None
    return sock


def _send_input(sock: socket.socket, data: bytes) -> None:
    """A step's input as frames, then its end. The agent takes it as the worker does; when the step ends before
    taking all of it, the agent stops reading and the rest is dropped here."""
    view = memoryview(data)
    try:
        for i in range(0, len(view), _CHUNK):
            send_frame(sock, b"i", view[i:i + _CHUNK])
        send_frame(sock, b"i")
    except OSError:
        pass


def _reply(sock: socket.socket, notice: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """The reply to a request that has one (notices passed on); AgentUnavailable when the agent went away."""
    with sock:
        while True:
            frame = recv_frame(sock)
            if frame is None:
                raise AgentUnavailable("the agent went away")
            kind, payload = frame
            if kind == b"n":
                notice(payload.decode("utf-8", "replace"))
            elif kind == b"!":
                raise _error_from(payload)
            elif kind == b"d":
                raise _declined(payload)
            elif kind == b"r":
                return json.loads(payload)


def connect(spec: DialSpec, notice: Callable[[str], None],
            direct: Callable[[], Transport]) -> "AgentTransport | None":
    """The worker's transport through the agent, dialled by the agent unless it holds it already; None when the
    agent cannot be used (the caller then dials itself). An error of the dial itself (unreachable, a changed host
    key) is raised as it would be without the agent."""
    try:
        _asking(lambda: _reply(_request({"op": "open", "spec": spec.to_dict()}, start=True), notice))
    except AgentUnavailable:
        return None
    return AgentTransport(spec, notice, direct)


class AgentTransport:
    """A worker's transport held by the agent: each step is one request on the agent's socket. When the agent is
    gone before a step starts, this transport dials its own connection and carries on over it."""

    def __init__(self, spec: DialSpec, notice: Callable[[str], None], direct: Callable[[], Transport]) -> None:
        self.worker = spec.name
        self.spec = spec
        self._notice = notice
        self._direct = direct
        self._own: Transport | None = None

    def _own_connection(self) -> Transport:
        if self._own is None:
            self._own = self._direct()
        return self._own

    def _step(self, argv: Sequence[str], on_out: Sink, on_err: Sink, stdin: bytes | None,
              timeout: float | None) -> int:
        header = {"op": "step", "spec": self.spec.to_dict(), "argv": list(argv), "timeout": timeout,
                  "stdin": stdin is not None}
        sock = _request(header, start=True)
        with sock:
            if stdin is not None:
                # Sent while the answer is read: the step's output may fill the socket before its input is all in.
                threading.Thread(target=_send_input, args=(sock, stdin), daemon=True).start()
            try:
                return self._answer(sock, on_out, on_err)
            finally:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # input still being sent stops here, and the agent sees us go
                except OSError:
                    pass

    def _answer(self, sock: socket.socket, on_out: Sink, on_err: Sink) -> int:
        started = False
        while True:
            frame = recv_frame(sock)
            if frame is None:
                if not started:
                    raise AgentUnavailable("the agent went away")
                raise errors.AgentGone(self.worker, f"the connection to worker {self.worker} was lost")
            kind, payload = frame
            if kind == b"o":
                on_out(payload)
            elif kind == b"e":
                on_err(payload)
            elif kind == b"s":
                started = True
            elif kind == b"n":
                self._notice(payload.decode("utf-8", "replace"))
            elif kind == b"x":
                return int(json.loads(payload)["exit"])
            elif kind == b"!":
                raise _error_from(payload)
            elif kind == b"d":
                raise _declined(payload)

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None) -> Result:
        if self._own is None:
            out: list[bytes] = []
            err: list[bytes] = []
            try:
                code = _asking(lambda: self._step(argv, out.append, err.append, stdin, timeout))
                return Result(code, b"".join(out), b"".join(err))
            except AgentUnavailable:
                pass
        return self._own_connection().run(argv, stdin=stdin, timeout=timeout)

    def stream(self, argv: Sequence[str], sink: Sink, *, stdin: bytes | None = None,
               stderr: Sink | None = None) -> int:
        if self._own is None:
            try:
                return _asking(lambda: self._step(argv, sink, stderr or (lambda b: sys.stderr.buffer.write(b)),
                                                  stdin if stdin else None, None))
            except AgentUnavailable:
                pass
        return self._own_connection().stream(argv, sink, stdin=stdin, stderr=stderr)

    def interactive(self, argv: Sequence[str]) -> int:
        """A terminal session on a connection of its own (the agent carries no terminal)."""
        own = self._own_connection()
        try:
            return own.interactive(argv)
        finally:
            if own is not self._own:
                own.close()

    def alive(self) -> bool:
        if self._own is not None:
            return self._own.alive()
        try:
            return bool(_asking(lambda: _reply(_request({"op": "alive", "spec": self.spec.to_dict()},
                                                        start=False)))["alive"])
        except (AgentUnavailable, OffloadError):
            return False

    def close(self) -> None:
        """The agent keeps the transport for the next command; only a connection of our own is closed."""
        if self._own is not None:
            self._own.close()
            self._own = None


def status() -> dict[str, Any]:
    """What `offload agent status --json` prints."""
    path = agent_files().socket
    try:
        reply = _reply(_request({"op": "status"}, start=False))
    except (AgentUnavailable, OffloadError):
        return {"running": False, "pid": None, "socket": str(path), "connections": []}
    return dict(reply, running=True, socket=str(path))


def stop() -> int | None:
    """Stop the agent (its connections close); the pid it had, or None when none was running."""
    try:
        reply = _reply(_request({"op": "stop"}, start=False))
    except (AgentUnavailable, OffloadError):
        return None
    pid = int(reply["pid"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.02)
    return pid


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# --- the agent --------------------------------------------------------------------------------------------------------


@dataclass
class _Held:
    """One transport the agent keeps."""

    spec: DialSpec
    transport: Any = None           # an SshTransport
    opened: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)
    steps: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Agent:
    """The agent process: a socket, the transports it keeps, and the idle clock."""

    def __init__(self, directory: Path, persist: float, stamp: str) -> None:
        self.directory = directory
        self.files = InstallationFiles(directory, "agent", stamp)
        self.path = self.files.socket
        self.persist = persist
        self.stamp = stamp                  # the code this agent runs (offload.paths.code_stamp)
        self.held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._active = 0
        self._last = time.monotonic()
        self._stopping = threading.Event()
        self._retiring = threading.Event()
        self._inode = 0

    # -- serving --

    def serve(self) -> None:
        threading.Thread(target=_preload, daemon=True).start()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            server.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        inode = self._inode = os.stat(self.path).st_ino
        server.listen(64)
        server.settimeout(min(max(self.persist / 4, 0.05), 1.0))
        self.files.pid.write_text(f"{os.getpid()}\n")
        try:
            while not self._stopping.is_set() and not self._retiring.is_set():
                try:
                    client, _ = server.accept()
                except socket.timeout:
                    if self._idle() or not _same_inode(self.path, inode):
                        break
                    continue
                self._take(client)
            if self._retiring.is_set():
                # Clients that reached the socket before it was let go are answered too: told to ask again.
                server.setblocking(False)
                while True:
                    try:
                        client, _ = server.accept()
                    except OSError:
                        break
                    client.setblocking(True)
                    self._take(client)
        finally:
            server.close()
            if _same_inode(self.path, inode):
                for path in (self.files.socket, self.files.pid):
                    path.unlink(missing_ok=True)
            if self._retiring.is_set() and not self._stopping.is_set():
                with self._done:
                    self._done.wait_for(lambda: self._active == 0 or self._stopping.is_set())
            self._close_all()

    def _take(self, client: socket.socket) -> None:
        with self._lock:
            self._active += 1
        threading.Thread(target=self._serve_client, args=(client,), daemon=True).start()

    def _retire(self) -> None:
        """Offload's code has changed since this agent started: let go of the socket, so that the next command
        starts an agent with the code as it is now, and finish what is in hand (a `logs -f` streams on to its
        end) before exiting. The pid file goes first: a new agent can only start once the socket is gone."""
        with self._lock:
            if self._retiring.is_set():
                return
            self._retiring.set()
        if _same_inode(self.path, self._inode):
            for path in (self.files.pid, self.files.socket):
                path.unlink(missing_ok=True)

    def _idle(self) -> bool:
        with self._lock:
            return self._active == 0 and time.monotonic() - self._last >= self.persist

    def _serve_client(self, client: socket.socket) -> None:
        try:
            with client:
                if peer_uid(client) != os.getuid():
                    return
                header = json.loads(_read_line(client))
                self._handle(client, header)
        except (OSError, ValueError):
            pass
        finally:
            with self._done:
                self._active -= 1
                self._last = time.monotonic()
                self._done.notify_all()

    def _handle(self, client: socket.socket, header: dict[str, Any]) -> None:
        op = header.get("op")
        if op in ("open", "step", "alive"):
            declined = self._declined(str(header.get("stamp", "")))
            if declined is not None:
                send_frame(client, b"d", json.dumps(declined).encode())
                return
        if op == "status":
            send_frame(client, b"r", json.dumps(self._status()).encode())
        elif op == "stop":
            send_frame(client, b"r", json.dumps({"pid": os.getpid()}).encode())
            self._stopping.set()
        elif op == "alive":
            held = self.held.get(DialSpec.from_dict(header["spec"]).key())
            alive = held is not None and held.transport is not None and held.transport.alive()
            send_frame(client, b"r", json.dumps({"alive": alive}).encode())
        elif op == "open":
            self._open(client, header)
        elif op == "step":
            self._step(client, header)

    def _declined(self, theirs: str) -> dict[str, Any] | None:
        """Why a request with code stamp THEIRS is not taken, or None when it is. A command of another
        installation (another Python, another copy of offload) has an agent of its own and never comes here; should
        one all the same, it is not served (it connects on its own). One of this installation with other code
        retires this agent, and it and every later request are told to ask again: the next agent runs the code as
        it is now."""
        if installation_of(theirs) != installation_of(self.stamp):
            return {"retry": False, "reason": "another installation of offload"}
        if theirs != self.stamp:
            self._retire()
        if self._retiring.is_set():
            return {"retry": True, "reason": "offload's code has changed since this agent started"}
        return None

    # -- transports --

    def _transport(self, spec: DialSpec, notice: Callable[[str], None]) -> tuple[_Held, Any]:
        """The transport for SPEC: the one held, when it is alive and its host key still trusted, else a new one."""
        key = spec.key()
        with self._lock:
            held = self.held.setdefault(key, _Held(spec))
        with held.lock:
            t = held.transport
            if t is not None and not self._usable(held, spec):
                t.close()
                t = held.transport = None
            if t is None:
                t = held.transport = _dial(spec, notice)
                held.opened = time.monotonic()
            held.used = time.monotonic()
            return held, t

    def _usable(self, held: _Held, spec: DialSpec) -> bool:
        t = held.transport
        if not t.alive() or not _still_trusted(t, spec):
            return False
        if time.monotonic() - held.used > PROBE_AFTER:
            try:
                return t.run(["true"], timeout=spec.connect_timeout).ok
            except OffloadError:
                return False
        return True

    def _open(self, client: socket.socket, header: dict[str, Any]) -> None:
        notice = _notices_to(client)
        try:
            self._transport(DialSpec.from_dict(header["spec"]), notice)
        except OffloadError as e:
            send_frame(client, b"!", _error_frame(e))
            return
        send_frame(client, b"r", b"{}")

    def _step(self, client: socket.socket, header: dict[str, Any]) -> None:
        notice = _notices_to(client)
        spec = DialSpec.from_dict(header["spec"])
        watch = _ClientWatch(client, has_input=bool(header.get("stdin")))
        try:
            held, transport = self._transport(spec, notice)
            send_frame(client, b"s")
            held.steps += 1
            watch.start()
            code = transport.stream([str(a) for a in header["argv"]], lambda b: send_frame(client, b"o", b),
                                    stdin=watch.input() if header.get("stdin") else None,
                                    stderr=lambda b: send_frame(client, b"e", b), timeout=header.get("timeout"),
                                    cancel=watch.gone)
        except OffloadError as e:
            if not watch.gone.is_set():
                send_frame(client, b"!", _error_frame(e))
            return
        finally:
            watch.stop()
            held_now = self.held.get(spec.key())
            if held_now is not None:
                held_now.used = time.monotonic()
        send_frame(client, b"x", json.dumps({"exit": code}).encode())

    def _status(self) -> dict[str, Any]:
        now = time.monotonic()
        connections = []
        for held in list(self.held.values()):
            if held.transport is None:
                continue
            s = held.spec
            connections.append({"worker": s.name, "host": s.host, "port": s.port, "user": s.user,
                                "proxy": bool(s.proxy_command), "alive": held.transport.alive(),
                                "idle_seconds": round(now - held.used, 1), "open_seconds": round(now - held.opened, 1),
                                "steps": held.steps})
        return {"pid": os.getpid(), "persist_seconds": self.persist, "connections": connections}

    def _close_all(self) -> None:
        for held in list(self.held.values()):
            if held.transport is not None:
                try:
                    held.transport.close()
                except OSError:
                    pass
                held.transport = None


def _preload() -> None:
    """Load the SSH libraries while the first request is on its way."""
    try:
        import fabric  # noqa: F401
        import paramiko  # noqa: F401
    except ImportError:
        pass


def _same_inode(path: Path, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _read_line(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """The request's header line, and not a byte past it (the input frames follow). Looks ahead rather than
    reading a byte at a time: a step's header carries its script, tens of kilobytes."""
    buf = bytearray()
    while True:
        ahead = sock.recv(_CHUNK, socket.MSG_PEEK)
        end = ahead.find(b"\n")
        chunk = recv_exact(sock, len(ahead) if end < 0 else end + 1) if ahead else None
        if chunk is None or len(buf) > limit:
            raise ValueError("no request")
        buf += chunk
        if end >= 0:
            return bytes(buf)


class _ClientWatch:
    """A step's client, read in one place: first its input frames, handed to the step as they come, then nothing
    but its going away (it sends nothing more, so its end of the socket closing means it was interrupted). GONE is
    set then, and the step is given up."""

    def __init__(self, client: socket.socket, *, has_input: bool) -> None:
        self.client = client
        self.gone = threading.Event()
        self._input_done = threading.Event()
        self._stopped = False
        if not has_input:
            self._input_done.set()

    def start(self) -> None:
        threading.Thread(target=self._watch, daemon=True).start()

    def input(self) -> Iterator[bytes]:
        try:
            while True:
                frame = recv_frame(self.client)
                if frame is None or frame[0] != b"i":
                    self.gone.set()
                    raise OSError("the input ended early")
                if not frame[1]:
                    return
                yield frame[1]
        finally:
            self._input_done.set()

    def _watch(self) -> None:
        self._input_done.wait()
        try:
            while self.client.recv(_CHUNK):
                pass
        except OSError:
            pass
        if not self._stopped:
            self.gone.set()

    def stop(self) -> None:
        """The step has ended: stop reading (input the step did not take is refused, so a client still sending it
        stops) and let the watch go."""
        self._stopped = True
        self._input_done.set()
        try:
            self.client.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def _notices_to(client: socket.socket) -> Callable[[str], None]:
    def notice(message: str) -> None:
        try:
            send_frame(client, b"n", message.encode())
        except OSError:
            pass

    return notice


def _dial(spec: DialSpec, notice: Callable[[str], None]) -> Any:
    from offload.outputs import WorkerRecord
    from offload.runtime.connection import ConnectOptions, KeySource, open_connection
    from offload.runtime.hostkeys import KnownHosts
    from offload.runtime.transport import SshTransport

    record = WorkerRecord(name=spec.name, host=spec.host, port=spec.port, user=spec.user, workspace=spec.workspace,
                          proxy_command=spec.proxy_command)
    options = ConnectOptions(identity=Path(spec.identity) if spec.identity else None,
                             connect_timeout=spec.connect_timeout, known_hosts=KnownHosts(Path(spec.known_hosts)),
                             notice=notice)
    if spec.auth_sock:
        os.environ["SSH_AUTH_SOCK"] = spec.auth_sock
    conn = open_connection(record, options, extra_keys=list(spec.host_keys), proxy_command=spec.proxy_command,
                           timeout=spec.timeout, key_source=KeySource(spec.key_source) if spec.key_source else None)
    return SshTransport(spec.name, conn)


def _still_trusted(transport: Any, spec: DialSpec) -> bool:
    """The host key the transport was opened with is still one the request trusts: among its pinned keys, or
    (without pins) the one known_hosts remembers now."""
    from offload.runtime.hostkeys import KnownHosts, host_id

    key = transport.connection.transport.get_remote_server_key()
    line = f"{key.get_name()} {key.get_base64()}"
    if spec.host_keys:
        return line in {" ".join(k.split()[:2]) for k in spec.host_keys}
    # Under the name the key was checked with when the transport was opened (an alias's HostName).
    conn = transport.connection
    remembered = KnownHosts(Path(spec.known_hosts)).lookup(host_id(conn.host, conn.port))
    return not remembered or line in remembered


def main(argv: list[str]) -> int:
    directory, persist = Path(argv[0]), float(argv[1])
    if not private_dir(directory):
        print(f"offload agent: {directory} is not a private directory", file=sys.stderr)
        return 1
    import logging

    if os.environ.get("OFFLOAD_DEBUG") != "1":
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    Agent(directory, persist, code_stamp()).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
