"""The connection agent's process: it serves requests on its socket, one thread each, over the SSH transports it
keeps, and exits after OFFLOAD_PERSIST idle seconds, when stopped, or once retired by a command with changed code.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offload.errors import OffloadError
from offload.frames import peer_uid, recv_exact, recv_frame, send_frame
from offload.listener import Listener
from offload.paths import InstallationFiles, code_stamp, installation_of, private_dir
from offload.runtime.agent.protocol import CHUNK, DialSpec, error_payload

PROBE_AFTER = 15.0              # a transport unused this long must answer a round trip before the agent uses it


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
        self._listener: Listener | None = None

    # -- serving --

    def serve(self) -> None:
        threading.Thread(target=_preload, daemon=True).start()
        listener = self._listener = Listener(self.path, self.files.pid)
        server = listener.socket
        server.settimeout(min(max(self.persist / 4, 0.05), 1.0))
        try:
            while not self._stopping.is_set() and not self._retiring.is_set():
                try:
                    client, _ = server.accept()
                except socket.timeout:
                    if self._idle() or not listener.ours():
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
            listener.close()
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
        end) before exiting."""
        with self._lock:
            if self._retiring.is_set():
                return
            self._retiring.set()
        if self._listener is not None:
            self._listener.let_go()

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
        if op in ("open", "step", "steps", "alive", "ssh-config"):
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
        elif op == "steps":
            self._steps(client, header)
        elif op == "ssh-config":
            self._ssh_config(client, header)

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
            send_frame(client, b"!", error_payload(e))
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
                send_frame(client, b"!", error_payload(e))
            return
        finally:
            watch.stop()
            held_now = self.held.get(spec.key())
            if held_now is not None:
                held_now.used = time.monotonic()
        send_frame(client, b"x", json.dumps({"exit": code}).encode())

    def _steps(self, client: socket.socket, header: dict[str, Any]) -> None:
        """Steps whose client waits for their whole answers: their inputs (small) are read first, then they go to the
        worker's dispatcher together, one round trip for all (see `offload.runtime.transport.run_steps`)."""
        from offload.runtime.transport import Step

        steps = []
        for step in header["steps"]:
            data = None
            if step.get("stdin"):
                chunks = []
                while (frame := recv_frame(client)) is not None and frame[0] == b"i" and frame[1]:
                    chunks.append(frame[1])
                if frame is None or frame[0] != b"i":
                    return  # the client went away
                data = b"".join(chunks)
            steps.append(Step([str(a) for a in step["argv"]], data, step.get("timeout")))
        spec = DialSpec.from_dict(header["spec"])
        try:
            held, transport = self._transport(spec, _notices_to(client))
            send_frame(client, b"s")
            held.steps += len(steps)
            results = transport.run_steps(steps, within=[str(a) for a in header.get("within") or ()],
                                          dispatch=bool(header.get("dispatch", True)))
        except OffloadError as e:
            send_frame(client, b"!", error_payload(e))
            return
        finally:
            held_now = self.held.get(spec.key())
            if held_now is not None:
                held_now.used = time.monotonic()
        for result in results:
            for kind, data in ((b"o", result.stdout), (b"e", result.stderr)):
                for i in range(0, len(data), CHUNK):
                    send_frame(client, kind, data[i:i + CHUNK])
            send_frame(client, b"x", json.dumps({"exit": result.exit_code}).encode())

    def _ssh_config(self, client: socket.socket, header: dict[str, Any]) -> None:
        """A command's ~/.ssh/config, parsed for one host (the command loads no SSH library to do it)."""
        from offload.runtime.user_ssh_config import lookup_in

        try:
            found = lookup_in(Path(str(header.get("path"))), str(header.get("host")))
        except OffloadError as e:
            send_frame(client, b"!", error_payload(e))
            return
        send_frame(client, b"r", json.dumps(found.to_dict()).encode())

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
                                "steps": held.steps, "channels": held.transport.channels_opened,
                                "dispatched": held.transport.dispatched})
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


def _read_line(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """The request's header line, and not a byte past it (the input frames follow). Looks ahead rather than
    reading a byte at a time: a step's header carries its script, tens of kilobytes."""
    buf = bytearray()
    while True:
        ahead = sock.recv(CHUNK, socket.MSG_PEEK)
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
            while self.client.recv(CHUNK):
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
                          proxy_command=spec.proxy_command, strict_host_keys=spec.strict_host_keys or None)
    options = ConnectOptions(identity=Path(spec.identity) if spec.identity else None,
                             connect_timeout=spec.connect_timeout, known_hosts=KnownHosts(Path(spec.known_hosts)),
                             notice=notice, ssh_agent=spec.auth_sock)
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


