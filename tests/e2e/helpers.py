"""Driving the real `offload` CLI as a subprocess, the way developers and agents do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence


def offload(*args: str, cwd: Path, key: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    full = dict(os.environ)
    if key is not None:
        full["OFFLOAD_SSH_KEY"] = str(key)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "offload", *args], cwd=cwd, env=full, capture_output=True,
                          timeout=timeout, input=input or b"", )


def spawn(*args: str, cwd: Path, key: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full = dict(os.environ)
    if key is not None:
        full["OFFLOAD_SSH_KEY"] = str(key)
    full.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "offload", *args], cwd=cwd, env=full, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stderr_line(p: subprocess.CompletedProcess[bytes]) -> str:
    """Errors are one line on stderr: return it, failing loudly when there is more."""
    lines = [ln for ln in p.stderr.decode().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {p.stderr.decode()!r}"
    return lines[0]


def all_cmdlines() -> Sequence[bytes]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
    return out


def container_hostname(name: str) -> str:
    """The hostname a job sees inside container NAME (this test machine may itself be a container)."""
    import subprocess

    return subprocess.run(["docker", "inspect", "-f", "{{.Config.Hostname}}", name], capture_output=True,
                          text=True, check=True).stdout.strip()
