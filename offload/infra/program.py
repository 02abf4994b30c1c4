"""The Pulumi program: read the stack config, build the workers for `offload:provider`, export the contract.

`program` is what `pulumi up` runs from a checkout (through `__main__.py`) and what `offload fleet` hands the
Automation API as its inline program, so an installed package needs no checkout.
"""

from __future__ import annotations

from typing import Any, Protocol

import pulumi

from offload.errors import MissingExtra
from offload.extras import require_for_provider
from offload.outputs import ProviderType
from offload.stackconfig import CLOUD_PROVIDERS, StackConfig, load_stack_config, with_retention


class HasWorkers(Protocol):
    workers: pulumi.Output[list[dict[str, Any]]]


def build(config: StackConfig) -> HasWorkers:
    """The component for the stack's provider type; each exposes `.workers` (a list of WorkerRecord dicts).

    A provider type whose Pulumi provider is not installed raises MissingExtra before anything is imported."""
    require_for_provider(config.provider, deploy=True)
    name = config.name_prefix
    match config.provider:
        case ProviderType.GCE_COS:
            from offload.infra.gce_cos import GceCosArgs, GceCosWorkers

            return GceCosWorkers(name, GceCosArgs.from_config(config))
        case ProviderType.GCE_LINUX:
            from offload.infra.gce_linux import GceLinuxArgs, GceLinuxWorkers

            return GceLinuxWorkers(name, GceLinuxArgs.from_config(config))
        case ProviderType.WORKSTATION:
            from offload.infra.workstation import WorkstationArgs, WorkstationWorkers

            return WorkstationWorkers(name, WorkstationArgs.from_config(config))
        case ProviderType.LOCAL_DOCKER:
            from offload.infra.local_docker import LocalDockerArgs, LocalDockerWorkers

            return LocalDockerWorkers(name, LocalDockerArgs.from_config(config))
        case ProviderType.SSH:
            from offload.infra.ssh_hosts import SshHosts, SshHostsArgs

            return SshHosts(name, SshHostsArgs.from_config(config))
        case ProviderType.LOCAL:
            from offload.infra.local import LocalWorker, LocalWorkerArgs

            return LocalWorker(name, LocalWorkerArgs.from_config(config))
    raise AssertionError(f"unhandled provider {config.provider}")  # read_stack_config admits no other


def program() -> None:
    """The whole program: one stack's config in, its workers declared, the stack outputs exported."""
    stack_config = load_stack_config()
    try:
        workers = build(stack_config)
    except MissingExtra as e:
        raise pulumi.RunError(e.line()) from None  # pulumi shows a RunError as its message alone
    pulumi.export("provider", stack_config.provider.value)
    pulumi.export("developer", stack_config.developer)
    pulumi.export("workers", workers.workers.apply(lambda records: with_retention(records, stack_config)))
    if stack_config.provider in CLOUD_PROVIDERS:
        # The grants this run made take minutes to reach IAP and OS Login; the runtime retries denials meanwhile.
        pulumi.export("deployed_at", deployed_now())


def deployed_now() -> str:
    """Now, in UTC, as the outputs' `deployed_at`."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
