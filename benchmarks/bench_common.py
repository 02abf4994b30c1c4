"""What every benchmark needs: an isolated home and caches on tmpfs, the worker login user, a client key,
and a timer for whole commands."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.workers import ClientKey, WorkerUser, ensure_worker_user, generate_keypair  # noqa: E402


@dataclass
class Bench:
    """A scratch directory on tmpfs with the environment offload runs in during a benchmark."""

    base: Path
    env: dict[str, str]
    user: WorkerUser
    key: ClientKey

    @classmethod
    def create(cls, prefix: str) -> "Bench":
        base = Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm"))
        (base / "home").mkdir()
        private, _ = generate_keypair(base / "id_ed25519")
        env = dict(os.environ, HOME=str(base / "home"), OFFLOAD_CONFIG_DIR=str(base / "cfg"),
                   OFFLOAD_CACHE_DIR=str(base / "cache"), OFFLOAD_SSH_KEY=str(private),
                   GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
                   GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
        env.pop("SSH_AUTH_SOCK", None)
        # An installed offload has its bytecode; without it every command would compile its modules first.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return cls(base, env, ensure_worker_user(), ClientKey(private, private.with_name("id_ed25519.pub")))

    def timed(self, argv: list[str], *, env: dict[str, str] | None = None, **kw) -> float:
        """Wall time of one command; a failing command ends the benchmark with its error."""
        start = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, env=env or self.env, **kw)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {p.stderr.decode().strip()}")
        return time.perf_counter() - start


def stop_agent(env: dict[str, str]) -> None:
    """Stop the connection agent and the warm command server the benchmark's commands started (they would exit
    when idle anyway)."""
    subprocess.run([sys.executable, "-m", "offload", "agent", "stop"], env=env, capture_output=True, check=False)
