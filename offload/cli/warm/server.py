"""The warm command server: load offload once, then fork a child per command that becomes the command (the user's
streams, directory, environment and umask) and runs it.

The server is one thread: it reads every request at once, each under a deadline of its own, so a client that
connects and sends nothing costs the others nothing; and it forks with no other thread about. Each child leads a
session of its own, so the user's process can stop it and its helpers (Ctrl-Z) and continue them, and the
server's exit never touches it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from offload.frames import HEADER, MAX_PAYLOAD, peer_uid, send_frame
from offload.listener import Listener
from offload.paths import InstallationFiles, code_stamp, installation_of

REQUEST_DEADLINE = 5.0  # seconds a client has, once connected, to send its whole request (it takes microseconds)
MAX_PENDING = 64  # clients still sending; past that, the one that has waited longest is dropped


def serve(directory: Path, persist: float) -> int:
    """Load offload, then fork a child per command until OFFLOAD_PERSIST seconds pass without one."""
    import fcntl

    stamp = code_stamp()
    where = InstallationFiles(directory, "warm", stamp)
    lock = open(where.lock, "a+b")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another server runs, or is starting
    from offload.cli.app import command  # every command's module, loaded once for all children
    from offload.jobs.service import preload

    command()
    preload()
    where.socket.unlink(missing_ok=True)  # a server that held the lock before this one is gone
    listener = Listener(where.socket, where.pid)
    try:
        return _Server(listener.socket, stamp, lock.fileno()).run(persist, listener.ours)
    finally:
        listener.close()


class _Pending:
    """A client that has connected and not yet sent its whole request."""

    __slots__ = ("sock", "data", "fds", "deadline")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.data = bytearray()
        self.fds: list[int] = []
        self.deadline = deadline

    def wants(self) -> int:
        """How many more bytes make the request whole (the header first, then what it announces)."""
        if len(self.data) < HEADER.size:
            return HEADER.size - len(self.data)
        return HEADER.size + HEADER.unpack(self.data[:HEADER.size])[1] - len(self.data)

    def drop(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.sock.close()


class _Server:
    """The accept loop, in one thread: clients still sending their request, and the children running commands."""

    def __init__(self, listener: socket.socket, stamp: str, lock_fd: int) -> None:
        import selectors

        self.listener = listener
        self.stamp = stamp
        self.lock_fd = lock_fd
        self.selector = selectors.DefaultSelector()
        self.pending: dict[socket.socket, _Pending] = {}
        # Per running child, a descriptor of the server's own for its user's connection: when the user's process
        # is gone, a child it left stopped is continued, so that it notices and ends (a stopped process notices
        # nothing). A plain descriptor: a socket object's dup() would set the blocking mode the child shares.
        self.children: dict[int, int] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def run(self, persist: float, ours: Callable[[], bool]) -> int:
        """Serve until PERSIST idle seconds pass or the socket is no longer ours; exit code 0."""
        import selectors
        import time

        listener = self.listener
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "reap")
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop (through wake_w), which reaps
        tick = min(max(persist / 4, 0.05), 1.0)
        last = time.monotonic()
        while True:
            now = time.monotonic()
            for p in [p for p in self.pending.values() if p.deadline <= now]:
                self._forget(p)
            if not self.pending and (now - last >= persist or not ours()):
                return 0
            soonest = min((p.deadline for p in self.pending.values()), default=now + tick)
            for key, _ in self.selector.select(max(min(soonest, now + tick) - now, 0)):
                if key.data == "accept":
                    last = time.monotonic()
                    self._accept()
                elif key.data == "reap":
                    self._reap()
                elif isinstance(key.data, int):
                    self._hangup(key.data)
                elif key.data.sock in self.pending and self._read(key.data):  # not dropped earlier in this batch
                    return 0

    def _accept(self) -> None:
        import selectors
        import time

        while True:
            try:
                client, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:  # out of file descriptors: the client that has waited longest makes room
                if self.pending:
                    self._forget(min(self.pending.values(), key=lambda p: p.deadline))
                return
            if peer_uid(client) != os.getuid():
                client.close()
                continue
            client.setblocking(False)
            if len(self.pending) >= MAX_PENDING:
                self._forget(min(self.pending.values(), key=lambda p: p.deadline))
            pending = _Pending(client, time.monotonic() + REQUEST_DEADLINE)
            self.pending[client] = pending
            self.selector.register(client, selectors.EVENT_READ, pending)

    def _forget(self, pending: _Pending) -> None:
        self.selector.unregister(pending.sock)
        del self.pending[pending.sock]
        pending.drop()

    def _read(self, pending: _Pending) -> bool:
        """Read what PENDING has sent; once its request is whole, answer it. True when this server is stale and
        must go."""
        try:
            data, fds, flags, _ = socket.recv_fds(pending.sock, min(pending.wants(), 1 << 16), 3)
        except BlockingIOError:
            return False
        except OSError:
            data, fds, flags = b"", [], 0
        for fd in fds:
            os.set_inheritable(fd, False)  # recv_fds takes no MSG_CMSG_CLOEXEC before Python 3.13
        pending.fds += fds
        if not data or flags & socket.MSG_CTRUNC:
            self._forget(pending)  # gone, or sent more descriptors than a request has
            return False
        pending.data += data
        if len(pending.data) >= HEADER.size and HEADER.unpack(pending.data[:HEADER.size])[1] > MAX_PAYLOAD:
            self._forget(pending)
            return False
        if pending.wants():
            return False
        self.selector.unregister(pending.sock)
        del self.pending[pending.sock]
        try:
            return self._answer(pending)
        finally:
            pending.drop()

    def _answer(self, pending: _Pending) -> bool:
        """Fork the child that runs PENDING's command, or refuse it. True when this server is stale and must go."""
        import selectors

        try:
            request = json.loads(pending.data[HEADER.size:].decode("utf-8", "surrogateescape"))
            theirs = str(request.get("stamp"))
        except (ValueError, AttributeError):
            return False
        try:
            if len(pending.fds) != 3 or theirs != self.stamp:
                send_frame(pending.sock, b"!")
                # The same installation with other code: this server is stale and goes. Another installation
                # (another Python or checkout) has a server of its own: this one just does not run its command.
                return installation_of(theirs) == installation_of(self.stamp) and theirs != self.stamp
            pid = os.fork()
        except OSError:
            return False
        if pid == 0:
            try:
                fds = list(pending.fds)
                self._let_go()
                _child(pending.sock, fds, request)
            finally:
                os._exit(70)
        try:
            watch = os.dup(pending.sock.fileno())
        except OSError:  # out of descriptors: this child goes unwatched
            return False
        self.children[pid] = watch
        self.selector.register(watch, selectors.EVENT_READ, pid)
        return False

    def _hangup(self, pid: int) -> None:
        """PID's user process has hung up: its connection became readable, and after its request such a process
        sends nothing, so that is its end."""
        watch = self.children.pop(pid, None)
        if watch is None:  # reaped earlier in this batch
            return
        self.selector.unregister(watch)
        os.close(watch)
        try:
            os.killpg(pid, signal.SIGCONT)  # a stopped child notices its user has gone, and ends
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            watch = self.children.pop(pid, None)
            if watch is not None:  # its user's process sees the end of the connection, had it no exit code
                self.selector.unregister(watch)
                os.close(watch)

    def _let_go(self) -> None:
        """In a child: close what is the server's (the other clients' connections and descriptors, the listening
        socket, the lock: a new server may start while this command runs), and take signals back."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()  # closes the child's copy of the epoll descriptor; the server's registrations stay
        for pending in self.pending.values():  # its own client is no longer among them
            pending.drop()
        for watch in self.children.values():
            os.close(watch)
        self.listener.close()
        os.close(self.lock_fd)
        os.close(self.wake_r)
        os.close(self.wake_w)


def _child(client: socket.socket, fds: list[int], request: dict) -> None:
    """In the forked child: lead a session of its own, tell the user's process its pid, become the command (its
    fds, directory, environment and umask), run it, report its exit code, and leave."""
    import io
    import threading

    os.setsid()
    client.setblocking(True)
    send_frame(client, b"p", str(os.getpid()).encode())
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                 encoding=sys.stdin.encoding, errors=sys.stdin.errors)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(fd, "w", closefd=False)), encoding=old.encoding,
                                  errors=old.errors, line_buffering=os.isatty(fd), write_through=fd == 2)
        setattr(sys, name, stream)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(int(request["umask"]))
    sys.argv = ["offload", *request["argv"]]

    def watch() -> None:
        # The user's `offload` process is gone (killed): so is the command.
        try:
            while client.recv(1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, daemon=True).start()
    code = 1
    try:
        from offload.cli.app import main as cli_main

        cli_main(request["argv"])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            send_frame(client, b"x", str(code).encode())
        except OSError:
            pass
        os._exit(code)


