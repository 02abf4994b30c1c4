"""`ssh`: hosts the developer already has. Nothing is created; the configured hosts are validated and exported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from offload.stackconfig import StackConfig, static_workers
from offload.outputs import WorkerRecord


@dataclass(frozen=True)
class SshHostsArgs:
    """The hosts, already validated as worker records, at least one and with unique names (the stack config
    checked offload:hosts when it was read)."""

    hosts: tuple[WorkerRecord, ...]

    @classmethod
    def from_config(cls, config: StackConfig) -> "SshHostsArgs":
        return cls(hosts=static_workers(config))


class SshHosts(pulumi.ComponentResource):
    """No resources: the component only carries the hosts into the stack outputs."""

    workers: pulumi.Output[list[dict[str, Any]]]

    def __init__(self, name: str, args: SshHostsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:SshHosts", name, None, opts)
        self.workers = pulumi.Output.from_input([h.to_dict() for h in args.hosts])
        self.register_outputs({"workers": self.workers})
