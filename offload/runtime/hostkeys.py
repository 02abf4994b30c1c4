"""Host-key trust: pinned keys from the outputs, GCE guest attributes, and first use, in one managed file.

The managed known_hosts is plain OpenSSH format, so `ssh -o UserKnownHostsFile=...` reads it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from offload.outputs import validate_host_key
from offload.paths import known_hosts_path


def host_id(host: str, port: int) -> str:
    """The known_hosts name of an address: `host` on port 22, else `[host]:port` (as OpenSSH writes it)."""
    return host if port == 22 else f"[{host}]:{port}"


@dataclass
class KnownHosts:
    """The offload-managed known_hosts file: one `name keytype base64` line per trusted key."""

    path: Path

    @classmethod
    def default(cls) -> "KnownHosts":
        return cls(known_hosts_path())

    def entries(self) -> list[tuple[str, str]]:
        """(host_id, 'keytype base64') pairs, in file order; comments and malformed lines are skipped."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and not line.startswith("#"):
                for name in parts[0].split(","):
                    out.append((name, f"{parts[1]} {parts[2]}"))
        return out

    def lookup(self, name: str) -> list[str]:
        return [key for n, key in self.entries() if n == name]

    def add(self, name: str, key: str) -> None:
        """Trust KEY for NAME (idempotent). The file is private to the user."""
        key = validate_host_key(key, "host key")
        if key in self.lookup(name):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(f"{name} {key}\n")

    def replace(self, name: str, keys: list[str]) -> None:
        """Forget every key of NAME and trust KEYS instead (used only by explicit re-pinning)."""
        keep = [(n, k) for n, k in self.entries() if n != name]
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            for n, k in keep + [(name, validate_host_key(k, "host key")) for k in keys]:
                f.write(f"{n} {k}\n")
        os.replace(tmp, self.path)
