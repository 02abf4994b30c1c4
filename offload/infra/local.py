"""`local`: this machine. Nothing is created; the stack exports the built-in local worker for its developer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from offload.outputs import WorkerRecord
from offload.stackconfig import StackConfig, static_workers


@dataclass(frozen=True)
class LocalWorkerArgs:
    """The local worker's record, as `static_workers` builds it for `offload run --stack` too."""

    records: tuple[WorkerRecord, ...]

    @classmethod
    def from_config(cls, config: StackConfig) -> "LocalWorkerArgs":
        return cls(records=static_workers(config))


class LocalWorker(pulumi.ComponentResource):
    """No resources: the component carries the local worker record into the stack outputs."""

    workers: pulumi.Output[list[dict[str, Any]]]

    def __init__(self, name: str, args: LocalWorkerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:LocalWorker", name, None, opts)
        self.workers = pulumi.Output.from_input([r.to_dict() for r in args.records])
        self.register_outputs({"workers": self.workers})
