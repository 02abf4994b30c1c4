"""Driving the real `offload` CLI as a subprocess, the way developers and agents do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence


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


def worker_setup(request: Any, kind: str, tmp_path: Path) -> dict[str, Any]:
    """Where a test's jobs run, for a `worker` fixture parametrized over KIND: the built-in `local` worker, an
    `sshd` host, an sshd host's worker `container`, or a `gce` instance (that container behind the Compute API
    fake). Returns the arguments and environment every command takes, and the workspace (None for local)."""
    from tests.workers import sshd_record, write_outputs

    if kind == "local":
        return {"args": [], "env": {}, "workspace": None}
    if kind == "gce":
        vm: Any = request.getfixturevalue("ssh_docker_worker")
        compute = request.getfixturevalue("compute_fake")
        compute.add("offload-dev-0", status="RUNNING", host_keys={"ssh-ed25519": vm.ssh.host_key.split()[1]})
        record = sshd_record(vm, name="offload-dev-0", instance="offload-dev-0", project="p", zone="us-west1-a",
                             host_keys=[], image=vm.container.image)
        out = write_outputs(tmp_path / "o.json", "gce-cos", [record])
        return {"args": ["--outputs", str(out)], "env": {"OFFLOAD_SSH_KEY": str(vm.ssh.key_path)},
                "workspace": str(vm.workspace)}
    w: Any = request.getfixturevalue("sshd_worker" if kind == "sshd" else "ssh_docker_worker")
    ssh = w if kind == "sshd" else w.ssh
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(w)])
    return {"args": ["--outputs", str(out)], "env": {"OFFLOAD_SSH_KEY": str(ssh.key_path)},
            "workspace": str(w.workspace)}


def on_worker(worker: dict[str, Any], repo: Path, *args: str,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """`offload VERB ARGS...` in REPO against WORKER (a `worker_setup` dict)."""
    verb, rest = args[0], args[1:]
    return offload(verb, *worker["args"], *rest, cwd=repo, env={**worker["env"], **(env or {})})


def ran(worker: dict[str, Any], repo: Path, job: str, command: str) -> None:
    """Run COMMAND as job JOB and wait for it; it must succeed."""
    p = on_worker(worker, repo, "run", "--job", job, "--wait", "--", command)
    assert p.returncode == 0, (p.stdout, p.stderr)


SSH_LIBRARIES = frozenset({"paramiko", "fabric", "invoke", "cryptography"})


def top_modules_loaded(*args: str, cwd: Path, env: dict[str, str] | None = None) -> set[str]:
    """The top-level modules `offload ARGS` loads, by `-X importtime`: run by the executable (which hands the command
    to a warm server when one answers) and run in a process of its own (where the command itself runs, as a warm
    server's child would). Each must succeed."""
    full = dict(os.environ, **(env or {}))
    in_process = "import sys; from offload.cli.app import main; main(sys.argv[1:])"
    loaded: set[str] = set()
    for how in (["-m", "offload"], ["-c", in_process]):
        p = subprocess.run([sys.executable, "-X", "importtime", *how, *args], cwd=cwd, env=full, capture_output=True,
                           timeout=60)
        assert p.returncode == 0, (how, p.stderr.decode()[-3000:])
        loaded |= {line.split("|")[-1].strip().split(".")[0] for line in p.stderr.decode().splitlines()
                   if line.startswith("import time:")}
    return loaded
