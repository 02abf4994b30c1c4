"""`local-docker`: worker containers on this machine, declared through pulumi-docker.

Each container keeps running (`sleep infinity`, restart always) with its workspace bind-mounted at the same
path inside and out, so paths in job state mean the same thing on both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from offload.errors import ConfigError
from offload.runtime.container import WORKER_ENTRY
from offload.stackconfig import DEFAULT_WORKER_IMAGE, StackConfig, check_shape
from offload.outputs import WorkerRecord
from offload.paths import cache_dir

_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")


def default_workspace_root() -> str:
    """Where worker workspaces go unless offload:workspace says otherwise: offload's cache directory."""
    return str(cache_dir() / "workers")


@dataclass(frozen=True)
class LocalDockerArgs:
    """The developer's local worker containers: how many, from which image, with workspaces under a root."""

    developer: str
    workers: int = 1
    image: str = DEFAULT_WORKER_IMAGE
    # Each worker's workspace is WORKSPACE_ROOT/<worker name>.
    workspace_root: str = ""

    def __post_init__(self) -> None:
        check_shape(self.workers, 0)
        root = (self.workspace_root or default_workspace_root()).rstrip("/")
        if not _PATH.match(root) or "/../" in f"{root}/":
            raise ConfigError(f"the workspace root must be an absolute path; got {root!r}")
        object.__setattr__(self, "workspace_root", root)

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
            workspace = f"{args.workspace_root}/{worker}"
            container = docker.Container(
                worker,
                name=worker,
                image=args.image,
                entrypoints=["/bin/sh", "-c"],
                command=[WORKER_ENTRY],
                restart="always",
                init=True,
                must_run=True,
                working_dir=workspace,
                volumes=[docker.ContainerVolumeArgs(host_path=workspace, container_path=workspace)],
                labels=[docker.ContainerLabelArgs(label="offload.worker", value=worker),
                        docker.ContainerLabelArgs(label="offload.owner", value=args.developer)],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[image]))
            record = WorkerRecord(name=worker, host="localhost", container=worker, workspace=workspace,
                                  image=args.image).to_dict()
            records.append(container.name.apply(lambda _, record=record: record))
        self.workers = pulumi.Output.all(*records)
        self.register_outputs({"workers": self.workers, "image": image.name})
