"""`local`: this machine. Nothing is created; the stack exports the built-in local worker for its developer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from offload.outputs import local_outputs
from offload.stackconfig import StackConfig


@dataclass(frozen=True)
class LocalWorkerArgs:
    """Where the local worker keeps repositories, worktrees and jobs (default: offload's cache directory)."""

    workspace: str | None = None

    @classmethod
    def from_config(cls, config: StackConfig) -> "LocalWorkerArgs":
        return cls(workspace=config.workspace)


class LocalWorker(pulumi.ComponentResource):
    """No resources: the component carries the local worker record into the stack outputs."""

    workers: pulumi.Output[list[dict[str, Any]]]

    def __init__(self, name: str, args: LocalWorkerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:LocalWorker", name, None, opts)
        record = local_outputs(args.workspace).workers[0]
        self.workers = pulumi.Output.from_input([record.to_dict()])
        self.register_outputs({"workers": self.workers})
