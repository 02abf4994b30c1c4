"""The COS worker's start script against a real Docker engine: the container it makes is the one the runtime
expects (running in the foreground of its unit, removed when it ends, workspace at the same path inside and
out), and the next start (systemd's restart, or a changed image) replaces it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from offload.infra import cloudinit
from tests.workers import CONTAINER_LABEL, wait_for

TIMEOUT = 180


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=TIMEOUT, check=check)


@pytest.fixture
def start_script(tmp_path: Path) -> Path:
    doc = yaml.safe_load(cloudinit.cos_user_data(image="unused", idle_stop_minutes=30, docker_user=None))
    content = next(f["content"] for f in doc["write_files"] if f["path"] == "/etc/offload/start-worker.sh")
    path = tmp_path / "start-worker.sh"
    path.write_text(content)
    return path


def test_start_worker_makes_the_container_the_runtime_expects(docker_engine: object, worker_image: str,
                                                               start_script: Path, tmp_path: Path) -> None:
    name = f"offload-infra-test-{os.getpid()}"
    workspace = tmp_path / "data" / "offload"
    # Docker, but every container it runs carries the suite's label, so a killed session's leftovers are found.
    shim = tmp_path / "bin"
    shim.mkdir()
    real_docker = shutil.which("docker")
    (shim / "docker").write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = run ]; then shift; exec {real_docker} run --label {CONTAINER_LABEL}={os.getpid()} "$@"; fi\n'
        f'exec {real_docker} "$@"\n')
    (shim / "docker").chmod(0o755)
    env = {"PATH": f"{shim}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "OFFLOAD_IMAGE": worker_image, "OFFLOAD_CONTAINER": name, "OFFLOAD_WORKSPACE": str(workspace),
           "OFFLOAD_DOCKER_USER": "", "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")}
    runs: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        # As its systemd unit runs it: in the foreground, for as long as the container lives.
        proc = subprocess.Popen(["bash", str(start_script)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        runs.append(proc)
        return proc

    def running_container(proc: subprocess.Popen[str], not_id: str = "") -> dict:
        def running() -> dict | None:
            assert proc.poll() is None, proc.communicate()[1]
            found = docker("inspect", name, check=False)
            info = json.loads(found.stdout)[0] if found.returncode == 0 else None
            return info if info and info["State"]["Running"] and info["Id"] != not_id else None

        return wait_for(running, timeout=TIMEOUT, what=f"container {name} to start", interval=0.2)

    try:
        first = start()
        info = running_container(first)
        # systemd restarts it; Docker's own restart policy would start it at boot before the disk is mounted.
        assert info["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
        assert info["HostConfig"]["AutoRemove"] is True
        assert info["HostConfig"]["Init"] is True
        assert info["Config"]["WorkingDir"] == str(workspace)
        assert [(m["Source"], m["Destination"]) for m in info["Mounts"]] == [(str(workspace), str(workspace))]
        # The image has tmux and git, so the entry went straight to sleeping; the runtime can exec in.
        tools = docker("exec", name, "sh", "-c", "command -v tmux && command -v git && ps -o args= -p 1,$(pgrep sleep)")
        assert "sleep infinity" in tools.stdout
        docker("exec", name, "sh", "-c", f"echo from-container > {workspace}/probe")
        assert (workspace / "probe").read_text() == "from-container\n"

        second = start()
        again = running_container(second, not_id=info["Id"])
        # The first run's container was replaced, so its unit's process ended with it.
        first.wait(timeout=TIMEOUT)
        assert docker("exec", name, "cat", f"{workspace}/probe").stdout == "from-container\n"
        # Stopping the unit (ExecStop) ends the foreground run, and --rm leaves nothing behind.
        docker("stop", "-t", "5", name)
        second.wait(timeout=TIMEOUT)
        wait_for(lambda: docker("inspect", name, check=False).returncode != 0, timeout=30,
                 what=f"container {again['Id']} to be removed", interval=0.2)
    finally:
        docker("rm", "-f", name, check=False)
        for proc in runs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=TIMEOUT)
