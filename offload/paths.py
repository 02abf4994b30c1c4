"""Where offload keeps its own state on the developer's machine (never inside a repository), how long its
background processes (the connection agent, the warm command server) stay once idle, and which code they run."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from offload.errors import UsageError

DEFAULT_PERSIST = 600.0
_MAX_SOCKET_PATH = 100  # a Unix socket's path holds 108 bytes
# The longest socket name in that directory: an agent's, named after its installation (installation_files).
LONGEST_SOCKET_NAME = "agent-0123456789ab.sock"


def config_dir() -> Path:
    """Settings and trust: the managed known_hosts lives here."""
    env = os.environ.get("OFFLOAD_CONFIG_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "offload"


def cache_dir() -> Path:
    """Rebuildable state: snapshot objects, the local worker's workspace."""
    env = os.environ.get("OFFLOAD_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "offload"


def known_hosts_path() -> Path:
    """The offload-managed known_hosts file: pinned, guest-attribute and first-use host keys."""
    return config_dir() / "known_hosts"


def agent_dir() -> Path:
    """Where the background processes keep their sockets, pid files and logs: $XDG_RUNTIME_DIR/offload, else
    offload's cache directory (under /tmp when that path is too long for a socket)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "offload" if runtime else cache_dir() / "agent"
    if len(os.fsencode(str(base / LONGEST_SOCKET_NAME))) > _MAX_SOCKET_PATH:
        digest = hashlib.sha256(os.fsencode(str(base))).hexdigest()[:12]
        base = Path("/tmp") / f"offload-{os.getuid()}-{digest}"
    return base


def persist_seconds() -> float:
    """OFFLOAD_PERSIST: idle seconds before the background processes exit and idle connections close (default
    600; 0: none run). A malformed value is a usage error."""
    raw = os.environ.get("OFFLOAD_PERSIST", "").strip()
    if not raw:
        return DEFAULT_PERSIST
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise UsageError(f"OFFLOAD_PERSIST is a number of seconds; got {raw!r}",
                         hint="0 turns the connection agent off")
    return seconds


def private_dir(path: Path) -> bool:
    """PATH exists (made now if need be) as a directory of this user that nobody else may enter."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(path)
    except OSError:
        return False
    if st.st_uid != os.getuid() or not os.path.isdir(path) or os.path.islink(path):
        return False
    if st.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError:
            return False
    return True


def code_stamp() -> str:
    """Which offload this is and when its code last changed: `PYTHON|PACKAGE:NEWEST_MTIME_NS` over its .py and .sh
    files. A background process compares a command's stamp with its own: the same installation with another
    stamp means offload was upgraded or edited since the process started."""
    root = Path(__file__).resolve().parent
    newest = 0
    stack = [root]
    while stack:
        for entry in os.scandir(stack.pop()):
            if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                stack.append(Path(entry.path))
            elif entry.name.endswith((".py", ".sh")):
                newest = max(newest, entry.stat().st_mtime_ns)
    return f"{sys.executable}|{root}:{newest}"


def installation_of(stamp: str) -> str:
    """The installation a code stamp names (its Python and package directory), without the time."""
    return stamp.rsplit(":", 1)[0]


class InstallationFiles:
    """A background process's files in DIRECTORY (its socket, lock, pid file and log), named after the
    installation of offload it serves: two installations side by side each have their own, and neither ever runs
    the other's code."""

    __slots__ = ("socket", "lock", "pid", "log")

    def __init__(self, directory: Path, kind: str, stamp: str | None = None) -> None:
        digest = hashlib.sha256(installation_of(stamp or code_stamp()).encode("utf-8", "surrogateescape"))
        name = f"{kind}-{digest.hexdigest()[:12]}"
        self.socket = directory / f"{name}.sock"
        self.lock = directory / f"{name}.lock"
        self.pid = directory / f"{name}.pid"
        self.log = directory / f"{name}.log"
