"""The worker container: checking it and healing it when it is missing or stopped."""

from __future__ import annotations

from offload.errors import WorkerError
from offload.runtime.transport import Transport, check

# The worker container's command, shared by cloud-init, pulumi-docker and healing: any image will do, since
# tmux and git are installed when missing; then it stays up for `docker exec`.
WORKER_ENTRY = (
    "if ! command -v tmux >/dev/null 2>&1 || ! command -v git >/dev/null 2>&1; then "
    "if command -v apt-get >/dev/null 2>&1; then "
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
    "tmux git ca-certificates >/dev/null; "
    "elif command -v apk >/dev/null 2>&1; then apk add --no-cache tmux git ca-certificates >/dev/null; fi; "
    "fi; exec sleep infinity"
)


def container_state(host: Transport, container: str) -> str:
    """'running', 'exited', 'created', ... as docker reports it, or 'missing'."""
    r = host.run(["docker", "inspect", "--type", "container", "--format", "{{.State.Status}}", container],
                 timeout=30)
    if r.ok:
        return r.text().strip() or "unknown"
    err = r.stderr.decode("utf-8", "replace")
    if "No such" in err:
        return "missing"
    raise WorkerError(host.worker, f"cannot inspect container {container} on worker {host.worker}: "
                      f"{r.error_line()}", hint="is Docker running on the worker?")


def run_container_argv(container: str, image: str, workspace: str) -> list[str]:
    """The one way a worker container is created: restart always, workspace at the same path inside and out."""
    return ["docker", "run", "-d", "--name", container, "--restart", "always", "--init",
            "-v", f"{workspace}:{workspace}", "-w", workspace, "--entrypoint", "/bin/sh", image, "-c", WORKER_ENTRY]


def heal_container(host: Transport, container: str, image: str | None, workspace: str) -> str:
    """Make CONTAINER run: start it if stopped, create it if missing. Returns what was done."""
    state = container_state(host, container)
    if state == "running":
        return "running"
    if state == "missing":
        if not image:
            raise WorkerError(host.worker, f"worker container {container} is missing on worker {host.worker} and "
                              "the stack outputs name no image to recreate it", hint="run `offload fleet up`")
        check(host.run(["mkdir", "-p", workspace], timeout=30), host.worker, "creating the workspace")
        argv = run_container_argv(container, image, workspace)
        check(host.run(argv, timeout=300), host.worker, f"creating container {container}", argv)
        return "created"
    if state == "paused":
        argv = ["docker", "unpause", container]
    else:
        argv = ["docker", "start", container]
    check(host.run(argv, timeout=120), host.worker, f"starting container {container}", argv)
    return "started"
