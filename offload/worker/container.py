"""The worker container: how every worker container is made, whoever makes it.

cloud-init on a COS VM, pulumi-docker for `local-docker`, and the runtime when it heals a missing container all
build it from this one spec, so the three agree on the command, the mount and the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from offload.worker.layout import WorkerLayout

DEFAULT_NAME = "offload-worker"
ENTRYPOINT = "/bin/sh"
RESTART = "always"
LABEL_WORKER = "offload.worker"
LABEL_OWNER = "offload.owner"

# The container's command: any image will do, since tmux and git are installed when missing; then it stays up
# for `docker exec`. Fixed text: nothing of a stack reaches it (HOME and XDG_CACHE_HOME come from its env).
ENTRY = (
    'mkdir -p "$HOME" "$XDG_CACHE_HOME" 2>/dev/null; '
    "if ! command -v tmux >/dev/null 2>&1 || ! command -v git >/dev/null 2>&1; then "
    "if command -v apt-get >/dev/null 2>&1; then "
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
    "tmux git ca-certificates >/dev/null; "
    "elif command -v apk >/dev/null 2>&1; then apk add --no-cache tmux git ca-certificates >/dev/null; fi; "
    "fi; exec sleep infinity"
)


@dataclass(frozen=True)
class WorkerContainer:
    """One worker container: restart always, an init process, the workspace at the same path inside and out
    (so paths in job state mean the same on both sides), and labels that say whose worker it is."""

    name: str
    image: str
    workspace: str
    owner: str | None = None

    @property
    def command(self) -> list[str]:
        """The arguments after the image (the entrypoint is ENTRYPOINT)."""
        return ["-c", ENTRY]

    @property
    def mounts(self) -> list[tuple[str, str]]:
        """(host path, container path) bind mounts."""
        return [(self.workspace, self.workspace)]

    @property
    def env(self) -> dict[str, str]:
        """HOME and XDG_CACHE_HOME on the workspace: the caches of pip, npm, cargo or go outlive the container,
        and on GCE the VM (the workspace is the data disk)."""
        layout = WorkerLayout(self.workspace)
        return {"HOME": layout.home, "XDG_CACHE_HOME": layout.cache}

    @property
    def labels(self) -> dict[str, str]:
        labels = {LABEL_WORKER: self.name}
        if self.owner:
            labels[LABEL_OWNER] = self.owner
        return labels

    def run_argv(self, *, foreground: bool = False) -> list[str]:
        """`docker run` for this container: detached with Docker's own restart policy, or, in FOREGROUND, for a
        supervisor (a systemd unit) that restarts it and removes it when it ends (`--rm`)."""
        lifecycle = ["--rm"] if foreground else ["-d"]
        argv = ["docker", "run", *lifecycle, "--name", self.name]
        argv += [] if foreground else ["--restart", RESTART]
        argv += ["--init"]
        for key, value in self.labels.items():
            argv += ["--label", f"{key}={value}"]
        for host, inside in self.mounts:
            argv += ["-v", f"{host}:{inside}"]
        for key, value in self.env.items():
            argv += ["-e", f"{key}={value}"]
        return argv + ["-w", self.workspace, "--entrypoint", ENTRYPOINT, self.image, *self.command]
