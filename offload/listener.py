"""The Unix socket a background process of this user listens on (the connection agent, the warm command server),
with its pid file: private from the moment it is bound, and let go of only while it is still this process's.

A newer process of the same kind may have taken the path since (this one was retired, or its socket was thought
stale): what it left there is its own and stays. A leaf: it imports nothing of offload.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


class Listener:
    """A socket bound at PATH (mode 0600, under a umask that lets no one else in even for an instant), listening,
    with this process's pid in PID_FILE."""

    def __init__(self, path: Path, pid_file: Path, *, backlog: int = 64) -> None:
        self.path = path
        self.pid_file = pid_file
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.socket.bind(str(path))
        except OSError:
            self.socket.close()
            raise
        finally:
            os.umask(old)
        self._inode = os.stat(path).st_ino
        self.socket.listen(backlog)
        pid_file.write_text(f"{os.getpid()}\n")

    def ours(self) -> bool:
        """The path still names this socket: nobody has removed or replaced it."""
        try:
            return os.stat(self.path).st_ino == self._inode
        except OSError:
            return False

    def let_go(self) -> None:
        """Remove the pid file, then the socket, while they are still this process's. The pid file goes first: a
        new process starts only once the socket is gone, and the pid file it writes then is its own."""
        if not self.ours():
            return
        try:
            if self.pid_file.read_text().strip() == str(os.getpid()):
                self.pid_file.unlink()
        except (OSError, ValueError):
            pass
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop listening, and let go of the socket and the pid file."""
        self.socket.close()
        self.let_go()
