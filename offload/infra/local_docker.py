"""`local-docker`: worker containers on this machine, declared through pulumi-docker.

Each container is made from the one worker-container spec (offload/worker/container.py): it keeps running,
restart always, with its workspace bind-mounted at the same path inside and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from offload.stackconfig import DEFAULT_WORKER_IMAGE, StackConfig
from offload.outputs import WorkerRecord
from offload.paths import cache_dir
from offload.worker.container import ENTRYPOINT, RESTART, WorkerContainer


def default_workspace_root() -> str:
    """Where worker workspaces go unless offload:workspace says otherwise: offload's cache directory."""
    return str(cache_dir() / "workers")


@dataclass(frozen=True)
class LocalDockerArgs:
    """The developer's local worker containers: how many, from which image, with workspaces under a root. The
    values are the stack config's (`from_config`), which checked each one when it was read."""

    developer: str
    workers: int = 1
    image: str = DEFAULT_WORKER_IMAGE
    # Each worker's workspace is WORKSPACE_ROOT/<worker name>.
    workspace_root: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspace_root", (self.workspace_root or default_workspace_root()).rstrip("/"))

    @classmethod
    def from_config(cls, config: StackConfig) -> "LocalDockerArgs":
        return cls(developer=config.developer, workers=config.workers, image=config.image,
                   workspace_root=config.workspace or "")


class LocalDockerWorkers(pulumi.ComponentResource):
    """The image, kept locally, and one long-running container per worker."""

    workers: pulumi.Output[list[dict[str, Any]]]

    def __init__(self, name: str, args: LocalDockerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:LocalDockerWorkers", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        records: list[pulumi.Output[dict[str, Any]]] = []
        for i in range(args.workers):
            worker = f"{name}-{i}"
            spec = WorkerContainer(name=worker, image=args.image, workspace=f"{args.workspace_root}/{worker}",
                                   owner=args.developer)
            container = docker.Container(
                worker,
                name=spec.name,
                image=spec.image,
                entrypoints=[ENTRYPOINT],
                command=spec.command,
                restart=RESTART,
                init=True,
                must_run=True,
                working_dir=spec.workspace,
                envs=[f"{key}={value}" for key, value in spec.env.items()],
                volumes=[docker.ContainerVolumeArgs(host_path=host, container_path=inside)
                         for host, inside in spec.mounts],
                labels=[docker.ContainerLabelArgs(label=key, value=value) for key, value in spec.labels.items()],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[image]))
            record = WorkerRecord(name=worker, host="localhost", container=worker, workspace=spec.workspace,
                                  image=args.image).to_dict()
            records.append(container.name.apply(lambda _, record=record: record))
        self.workers = pulumi.Output.all(*records)
        self.register_outputs({"workers": self.workers, "image": image.name})
