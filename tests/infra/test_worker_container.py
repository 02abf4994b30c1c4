"""The COS worker's start script against a real Docker engine: the container it makes is the one the runtime
expects (running, restart always, workspace at the same path inside and out), and a second boot replaces it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from offload.infra import cloudinit
from tests.workers import CONTAINER_LABEL

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
    try:
        first = subprocess.run(["bash", str(start_script)], env=env, capture_output=True, text=True,
                               timeout=TIMEOUT)
        assert first.returncode == 0, first.stderr
        info = json.loads(docker("inspect", name).stdout)[0]
        assert info["State"]["Running"] is True
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "always"
        assert info["HostConfig"]["Init"] is True
        assert info["Config"]["WorkingDir"] == str(workspace)
        assert [(m["Source"], m["Destination"]) for m in info["Mounts"]] == [(str(workspace), str(workspace))]
        # The image has tmux and git, so the entry went straight to sleeping; the runtime can exec in.
        tools = docker("exec", name, "sh", "-c", "command -v tmux && command -v git && ps -o args= -p 1,$(pgrep sleep)")
        assert "sleep infinity" in tools.stdout
        docker("exec", name, "sh", "-c", f"echo from-container > {workspace}/probe")
        assert (workspace / "probe").read_text() == "from-container\n"

        second = subprocess.run(["bash", str(start_script)], env=env, capture_output=True, text=True,
                                timeout=TIMEOUT)
        assert second.returncode == 0, second.stderr
        again = json.loads(docker("inspect", name).stdout)[0]
        assert again["Id"] != info["Id"] and again["State"]["Running"] is True
        assert docker("exec", name, "cat", f"{workspace}/probe").stdout == "from-container\n"
    finally:
        docker("rm", "-f", name, check=False)
