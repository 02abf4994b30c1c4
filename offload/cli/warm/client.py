"""The `offload` process's side of a warm command: hand the command and this process's streams to the warm server,
pass signals on to the child that runs it, and start, find or stop the server.

The `offload` executable imports this first: it loads nothing heavy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

from offload.frames import pack, peer_uid, recv_frame
from offload.paths import InstallationFiles, code_stamp


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


def files(stamp: str | None = None) -> InstallationFiles | None:
    """This installation's warm server files, when the settings allow a server at all."""
    directory = _place()
    return None if directory is None else InstallationFiles(directory, "warm", stamp)


def forward(argv: list[str]) -> int | None:
    """Run ARGV in a warm server's child; its exit code, or None when no server took the command (nothing ran)."""
    directory = _place()
    if directory is None:
        return None
    stamp = code_stamp()
    where = InstallationFiles(directory, "warm", stamp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(where.socket))
        if peer_uid(sock) != os.getuid():
            sock.close()
            return None
    except OSError:
        sock.close()
        return None
    control = _JobControl()
    try:
        umask = os.umask(0)
        os.umask(umask)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                              "stamp": stamp}).encode("utf-8", "surrogateescape")
        socket.send_fds(sock, [pack(b"q", request)], [0, 1, 2])
        frame = recv_frame(sock)
    except OSError:
        frame = None
    if frame is None or frame[0] != b"p":
        sock.close()
        control.release()
        return None  # refused (a stale server): nothing ran
    control.attach(int(frame[1]))
    with sock:
        while True:
            frame = recv_frame(sock)
            if frame is None:
                print("offload: the warm command ended without an exit code (was it killed?); `offload status` "
                      "shows what it did", file=sys.stderr)
                return 1
            if frame[0] == b"x":
                return int(frame[1])


class _JobControl:
    """The signals of the user's process, for its warm child. Ctrl-Z (SIGTSTP) stops the child, then this process;
    SIGCONT (`fg`, `bg`) continues the child; SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on. The child leads a
    session of its own, so stopping its process group stops the helpers it started too. A Ctrl-Z that comes before
    the child is known waits for it."""

    def __init__(self) -> None:
        self.child: int | None = None
        self.stop_asked = False
        signal.signal(signal.SIGTSTP, self._suspend)
        signal.signal(signal.SIGCONT, self._resume)

    def attach(self, child: int) -> None:
        """The child runs: from now on signals are its."""
        self.child = child
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(signum, self._relay)
        if self.stop_asked:
            self._suspend(signal.SIGTSTP, None)

    def release(self) -> None:
        """No child runs (this process runs the command itself): a Ctrl-Z that came meanwhile stops it now."""
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        signal.signal(signal.SIGCONT, signal.SIG_DFL)
        if self.stop_asked:
            os.kill(os.getpid(), signal.SIGTSTP)

    def _relay(self, signum: int, _frame: object) -> None:
        if self.child is not None:
            _signal(self.child, signum)

    def _suspend(self, _signum: int, _frame: object) -> None:
        if self.child is None:
            self.stop_asked = True
            return
        # SIGSTOP, not SIGTSTP: the child's session is its own, so its process group is orphaned, and the kernel
        # drops SIGTSTP sent to an orphaned group.
        _signal(-self.child, signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
        signal.signal(signal.SIGTSTP, self._suspend)

    def _resume(self, _signum: int, _frame: object) -> None:
        if self.child is not None:
            _signal(-self.child, signal.SIGCONT)


def _signal(target: int, signum: int) -> None:
    """Send SIGNUM to a process (TARGET > 0) or a process group (-TARGET) that may be gone already."""
    try:
        if target > 0:
            os.kill(target, signum)
        else:
            os.killpg(-target, signum)
    except (ProcessLookupError, PermissionError):
        pass


def start_server() -> None:
    """Start a warm server in the background for the next command, unless one runs (never waits for it)."""
    import subprocess

    where = files()
    if where is None:
        return
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with probe:
            probe.connect(str(where.socket))
        return
    except OSError:
        pass
    from offload.paths import persist_seconds

    try:
        with open(where.log, "ab") as log:
            subprocess.Popen([sys.executable, "-m", "offload.cli.warm", str(where.socket.parent),
                              str(persist_seconds())],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                             start_new_session=True, close_fds=True, cwd="/")
    except OSError:
        pass


def server_pid(where: InstallationFiles | None = None) -> int | None:
    """The pid of this installation's warm server, when one runs."""
    where = where or files()
    try:
        pid = int(where.pid.read_text()) if where else 0
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid if b"offload.cli.warm" in f.read() else None
    except (OSError, ValueError):
        return None


def _lock_held(where: InstallationFiles) -> bool:
    """A server holds the lock: it runs, or is starting and has not written its pid yet."""
    import fcntl

    try:
        with open(where.lock, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def stop_server() -> int | None:
    """Stop this installation's warm server (commands it started go on); its pid, or None when none ran. A server
    still starting (the previous command started it a moment ago) is waited for, briefly, and stopped too."""
    import time

    where = files()
    pid = server_pid(where)
    deadline = time.monotonic() + 5
    while pid is None and where is not None and _lock_held(where) and time.monotonic() < deadline:
        time.sleep(0.05)
        pid = server_pid(where)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return None
    return pid


