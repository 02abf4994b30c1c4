"""The worker container on a host: checking it, and healing it when it is missing or stopped."""

from __future__ import annotations

from collections.abc import Sequence

from offload.errors import WorkerError
from offload.runtime.transport import Transport, check
from offload.worker.container import WorkerContainer


def container_state(host: Transport, container: str, docker: Sequence[str] = ("docker",)) -> str:
    """'running', 'exited', 'created', ... as docker reports it, or 'missing'."""
    r = host.run([*docker, "inspect", "--type", "container", "--format", "{{.State.Status}}", container],
                 timeout=30)
    if r.ok:
        return r.text().strip() or "unknown"
    err = r.stderr.decode("utf-8", "replace")
    if "No such" in err:
        return "missing"
    raise WorkerError(host.worker, f"cannot inspect container {container} on worker {host.worker}: "
                      f"{r.error_line()}", hint="is Docker running on the worker?")


def heal_container(host: Transport, container: str, spec: WorkerContainer | None,
                   docker: Sequence[str] = ("docker",)) -> str:
    """Make CONTAINER run: start it if stopped, create it from SPEC if missing. Returns what was done."""
    state = container_state(host, container, docker)
    if state == "running":
        return "running"
    if state == "missing":
        if spec is None:
            raise WorkerError(host.worker, f"worker container {container} is missing on worker {host.worker} and "
                              "the stack outputs name no image to recreate it", hint="run `offload fleet up`")
        check(host.run(["mkdir", "-p", spec.workspace], timeout=30), host.worker, "creating the workspace")
        argv = [*docker, *spec.run_argv()[1:]]
        check(host.run(argv, timeout=300), host.worker, f"creating container {container}", argv)
        return "created"
    argv = [*docker, "unpause" if state == "paused" else "start", container]
    check(host.run(argv, timeout=120), host.worker, f"starting container {container}", argv)
    return "started"


def heal_by_unit(host: Transport, container: str, unit: str, *, timeout: float = 300.0,
                 poll: float = 1.0, docker: Sequence[str] = ("docker",)) -> str | None:
    """Where a systemd UNIT owns CONTAINER (COS workers), restart the unit and wait until the container runs:
    the unit starts it after the data disk is mounted, as root with the registry credentials, and a container
    made by hand would race it. None when the host has no such unit."""
    import time

    if not host.run(["systemctl", "cat", unit], timeout=30).ok:
        return None
    argv = ["sudo", "-n", "systemctl", "restart", unit]
    check(host.run(argv, timeout=120), host.worker, f"restarting {unit}", argv)
    deadline = time.monotonic() + timeout
    while True:
        state = container_state(host, container, docker)
        if state == "running":
            return "restarted"
        if time.monotonic() >= deadline:
            raise WorkerError(host.worker, f"worker container {container} is still {state} on worker {host.worker} "
                              f"after restarting {unit}",
                              hint=f"see `journalctl -u {unit}` on the worker (`offload ssh-config` to log in)")
        time.sleep(poll)
