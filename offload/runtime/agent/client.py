"""The command's side of the connection agent: find the agent (starting it when none answers), and run each step
of a command as one request on its socket; fall back to a connection of the command's own when the agent cannot be
used."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import offload.errors as errors
from offload.errors import OffloadError
from offload.frames import peer_uid, recv_frame, send_frame
from offload.paths import InstallationFiles, agent_dir, code_stamp, persist_seconds, private_dir
from offload.runtime import user_ssh_config
from offload.runtime.agent.protocol import DialSpec, error_from
from offload.runtime.transport import Input, Result, Sink, Step, Transport, dispatch_enabled, dispatchable

START_TIMEOUT = 10.0            # how long a command waits for an agent it started to answer
INPUT_CHUNK = 1 << 20           # a step's input goes to the agent in frames this large: fewer to relay


def agent_files(directory: Path | None = None) -> InstallationFiles:
    """This installation's agent: its socket, lock, pid file and log, in the agent directory."""
    return InstallationFiles(directory or agent_dir(), "agent")


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
        # The agent has no ssh-agent of its own: each request brings its own, and uses no other.
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
        with open(log, "ab") as err:
            os.chmod(log, 0o600)
            process = subprocess.Popen([sys.executable, "-m", "offload.runtime.agent", str(directory), str(persist)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                       start_new_session=True, close_fds=True, cwd="/", env=env)
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


def _send_input(sock: socket.socket, data: Input) -> None:
    """A step's input as frames, then its end. The agent takes it as the worker does; when the step ends before
    taking all of it, the agent stops reading and the rest is dropped here."""
    try:
        for piece in [data] if isinstance(data, bytes) else data:
            view = memoryview(piece)
            for i in range(0, len(view), INPUT_CHUNK):
                send_frame(sock, b"i", view[i:i + INPUT_CHUNK])
        send_frame(sock, b"i")
    except OSError:
        pass
    except Exception:
        # The input failed at its source (a pack cut short here): the step must not take part of it for all of
        # it. The client goes away mid-input, as an interrupted one does, and the agent ends the step.
        try:
            sock.shutdown(socket.SHUT_RDWR)
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
                raise error_from(payload)
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

    dispatches = True  # `run` takes WITHIN, as SshTransport's does

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

    def _step(self, argv: Sequence[str], on_out: Sink, on_err: Sink, stdin: Input | None,
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

    def _answer(self, sock: socket.socket, on_out: Sink, on_err: Sink, *, started: bool = False) -> int:
        """One step's exit code, its output passed on as it comes. STARTED: the agent already said the request
        began (a later step of `_steps`), so its going away is a lost connection, never a reason to go again."""
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
                raise error_from(payload)
            elif kind == b"d":
                raise _declined(payload)

    def run(self, argv: Sequence[str], *, stdin: Input | None = None, timeout: float | None = None,
            within: Sequence[str] = ()) -> Result:
        """ARGV's result, run by the agent (through the worker's dispatcher when it can); WITHIN enters a
        container, as `SshTransport.run` does."""
        if dispatchable(stdin):
            return self.run_steps([Step(argv, stdin, timeout)], within=within)[0]
        # A large input streams through the agent to a channel of its own, the agent holding none of it.
        argv = [*within, *argv]
        if self._own is None:
            out: list[bytes] = []
            err: list[bytes] = []
            try:
                code = _asking(lambda: self._step(argv, out.append, err.append, stdin, timeout))
                return Result(code, b"".join(out), b"".join(err))
            except AgentUnavailable:
                pass
        return self._own_connection().run(argv, stdin=stdin, timeout=timeout)

    def run_steps(self, steps: Sequence[Step], *, within: Sequence[str] = ()) -> list[Result]:
        """STEPS sent to the agent in one request, and by it to the worker's dispatcher together (see
        `offload.runtime.transport.run_steps`)."""
        if not all(dispatchable(s.stdin) for s in steps):
            return [self.run(s.argv, stdin=s.stdin, timeout=s.timeout, within=within) for s in steps]
        if self._own is None:
            try:
                return _asking(lambda: self._steps(steps, within))
            except AgentUnavailable:
                pass
        own = self._own_connection()
        if getattr(own, "dispatches", False):
            return own.run_steps(steps, within=within)  # type: ignore[attr-defined]
        return [own.run([*within, *s.argv], stdin=s.stdin, timeout=s.timeout) for s in steps]

    def _steps(self, steps: Sequence[Step], within: Sequence[str]) -> list[Result]:
        header = {"op": "steps", "spec": self.spec.to_dict(), "within": list(within), "dispatch": dispatch_enabled(),
                  "steps": [{"argv": list(s.argv), "timeout": s.timeout, "stdin": s.stdin is not None}
                            for s in steps]}
        sock = _request(header, start=True)
        with sock:
            inputs = [bytes(s.stdin) if isinstance(s.stdin, bytes) else b"".join(s.stdin)  # type: ignore[arg-type]
                      for s in steps if s.stdin is not None]
            threading.Thread(target=lambda: [_send_input(sock, data) for data in inputs], daemon=True).start()
            results: list[Result] = []
            try:
                for _ in steps:
                    out: list[bytes] = []
                    err: list[bytes] = []
                    # The agent says once that the request began, before the first step's answer.
                    code = self._answer(sock, out.append, err.append, started=bool(results))
                    results.append(Result(code, b"".join(out), b"".join(err)))
            finally:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return results

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


def host_config(host: str) -> user_ssh_config.HostConfig:
    """HOST as the user's ~/.ssh/config describes it, parsed by the agent, which has the SSH libraries loaded: a
    command that reaches its workers through the agent loads none. Parsed here when the agent cannot be used."""
    return user_ssh_config.lookup(host, _read_in_agent)


def _read_in_agent(path: Path, host: str) -> user_ssh_config.HostConfig:
    try:
        reply = _asking(lambda: _reply(_request({"op": "ssh-config", "path": str(path), "host": host}, start=True)))
    except AgentUnavailable:
        return user_ssh_config.read(path, host)
    return user_ssh_config.HostConfig.from_dict(reply)


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


