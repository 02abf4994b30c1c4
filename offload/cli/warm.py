"""Warm commands: the `offload` entry point, and the server that runs a command in a process already warm.

Most of what a command costs on this machine is starting Python and loading offload. The warm server loads it
once and then forks a child per command; the `offload` process a user starts hands it the command (its
arguments, working directory, environment and umask) and its own stdin, stdout and stderr (passed over a Unix
socket, so output goes straight to the terminal or pipe), forwards the signals it gets to the child, and exits
with the child's exit code. The child reaches workers through the connection agent like any command. Only the
job commands that need no terminal of their own go this way; `attach`, `shell`, `run --attach` and everything
else start the usual way.

The server lives beside the agent's socket (see `offload.paths.agent_dir`), answers only its own user, and exits
after OFFLOAD_PERSIST idle seconds (0: no server); a command that finds none runs the usual way and starts one
for the next. A server whose offload code differs from the command's own is not used: it exits when it is the
same installation (its code changed since it started), and serves on when the command came from another one.

This module is what the `offload` executable imports first: it loads nothing heavy unless it has to.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys
from pathlib import Path

from offload.frames import HEADER, pack, peer_uid, recv_frame, send_frame
from offload.paths import code_stamp

SOCKET = "warm.sock"
LOCK = "warm.lock"
PIDFILE = "warm.pid"
LOG = "warm.log"
WARM_COMMANDS = frozenset({"run", "status", "check", "logs", "clean", "pull", "diff", "apply", "get"})
_lock_fd: int | None = None


def main() -> None:
    """The `offload` executable: a warm server's child runs the command when one answers, else this process."""
    argv = sys.argv[1:]
    code = forward(argv) if eligible(argv) else None
    if code is not None:
        sys.exit(code)
    from offload.cli.app import main as cli_main

    try:
        cli_main(argv)
    finally:
        if eligible(argv):
            start_server()


def eligible(argv: list[str]) -> bool:
    """A job command that needs no terminal of its own (not `run --attach`)."""
    if not argv or argv[0] not in WARM_COMMANDS:
        return False
    words = argv[:argv.index("--")] if "--" in argv else argv
    return not (argv[0] == "run" and ("--attach" in words or "-a" in words))


def _place() -> Path | None:
    """The server's directory, when the settings allow a server at all."""
    from offload.paths import agent_dir, persist_seconds, private_dir

    try:
        if persist_seconds() == 0:
            return None
    except Exception:  # a malformed setting: the usual path reports it
        return None
    directory = agent_dir()
    return directory if private_dir(directory) else None


# --- the client: the `offload` process a user starts --------------------------------------------------------------


def forward(argv: list[str]) -> int | None:
    """Run ARGV in a warm server's child; its exit code, or None when no server took the command (nothing ran)."""
    directory = _place()
    if directory is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(directory / SOCKET))
        if peer_uid(sock) != os.getuid():
            return None
        umask = os.umask(0)
        os.umask(umask)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                              "stamp": code_stamp()}).encode("utf-8", "surrogateescape")
        fds = array.array("i", [0, 1, 2])
        sock.sendmsg([pack(b"q", request)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        frame = recv_frame(sock)
    except OSError:
        sock.close()
        return None
    if frame is None or frame[0] != b"p":
        sock.close()
        return None  # refused (a stale server): nothing ran
    child = int(frame[1])

    def relay(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, relay)
    with sock:
        while True:
            frame = recv_frame(sock)
            if frame is None:
                print("offload: the warm command server went away in the middle of the command", file=sys.stderr)
                return 1
            if frame[0] == b"x":
                return int(frame[1])


def start_server() -> None:
    """Start a warm server in the background for the next command, unless one runs (never waits for it)."""
    import subprocess

    directory = _place()
    if directory is None:
        return
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with probe:
            probe.connect(str(directory / SOCKET))
        return
    except OSError:
        pass
    from offload.paths import persist_seconds

    try:
        with open(directory / LOG, "ab") as log:
            subprocess.Popen([sys.executable, "-m", "offload.cli.warm", str(directory), str(persist_seconds())],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                             start_new_session=True, close_fds=True, cwd="/")
    except OSError:
        pass


def server_pid() -> int | None:
    """The pid of the warm server, when one runs."""
    directory = _place()
    try:
        pid = int((directory / PIDFILE).read_text()) if directory else 0
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid if b"offload.cli.warm" in f.read() else None
    except (OSError, ValueError):
        return None


def _lock_held(directory: Path) -> bool:
    """A server holds the lock: it runs, or is starting and has not written its pid yet."""
    import fcntl

    try:
        with open(directory / LOCK, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def stop_server() -> int | None:
    """Stop the warm server (commands it started go on); its pid, or None when none ran. A server still starting
    (the previous command started it a moment ago) is waited for, briefly, and stopped too."""
    import time

    pid = server_pid()
    directory = _place()
    deadline = time.monotonic() + 5
    while pid is None and directory is not None and _lock_held(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
        pid = server_pid()
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return None
    return pid


# --- the server ---------------------------------------------------------------------------------------------------


def serve(directory: Path, persist: float) -> int:
    """Load offload, then fork a child per command until OFFLOAD_PERSIST seconds pass without one."""
    import fcntl

    global _lock_fd
    lock = open(directory / LOCK, "a+b")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another server runs, or is starting
    _lock_fd = lock.fileno()
    stamp = code_stamp()
    from offload.cli.app import command  # every command's module, loaded once for all children
    from offload.jobs.service import preload

    command()
    preload()
    path = directory / SOCKET
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    inode = os.stat(path).st_ino
    (directory / PIDFILE).write_text(f"{os.getpid()}\n")
    server.listen(64)
    server.settimeout(min(max(persist / 4, 0.05), 1.0))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped as they exit
    import time

    last = time.monotonic()
    try:
        while True:
            try:
                client, _ = server.accept()
            except socket.timeout:
                if time.monotonic() - last >= persist or not _same(path, inode):
                    return 0
                continue
            last = time.monotonic()
            with client:
                if _take(client, server, stamp):
                    return 0
    finally:
        server.close()
        if _same(path, inode):
            path.unlink(missing_ok=True)
            (directory / PIDFILE).unlink(missing_ok=True)


def _same(path: Path, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _take(client: socket.socket, server: socket.socket, stamp: str) -> bool:
    """Receive one command and fork its child. True when this server is stale and must go."""
    if peer_uid(client) != os.getuid():
        return False
    try:
        client.settimeout(10)
        head = client.recv(HEADER.size, socket.MSG_PEEK)
        if len(head) < HEADER.size:
            return False
        _, size = HEADER.unpack(head)
        fds = array.array("i")
        data, ancillary, _, _ = client.recvmsg(HEADER.size + size, socket.CMSG_LEN(3 * fds.itemsize))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        while len(data) < HEADER.size + size:
            more = client.recv(HEADER.size + size - len(data))
            if not more:
                raise OSError("the request ended early")
            data += more
        request = json.loads(data[HEADER.size:].decode("utf-8", "surrogateescape"))
    except (OSError, ValueError):
        return False
    try:
        theirs = str(request.get("stamp"))
        if len(fds) != 3 or theirs != stamp:
            send_frame(client, b"!")
            # The same installation with other code: this server is stale and goes. Another installation (another
            # Python or checkout) just runs its commands itself.
            return theirs.rsplit(":", 1)[0] == stamp.rsplit(":", 1)[0] and theirs != stamp
        pid = os.fork()
        if pid == 0:
            try:
                server.close()
                if _lock_fd is not None:
                    os.close(_lock_fd)  # the lock is the server's alone: a new server may start while this runs
                _child(client, list(fds), request)
            finally:
                os._exit(70)
        send_frame(client, b"p", str(pid).encode())
        return False
    except OSError:
        return False
    finally:
        for fd in fds:
            os.close(fd)


def _child(client: socket.socket, fds: list[int], request: dict) -> None:
    """In the forked child: become the command (its fds, directory, environment and umask), run it, report its
    exit code, and leave."""
    import io
    import threading

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
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

    client.settimeout(None)
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


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1]), float(sys.argv[2])))
