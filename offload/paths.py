"""Where offload keeps its own state on the developer's machine (never inside a repository)."""

from __future__ import annotations

import os
from pathlib import Path


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
