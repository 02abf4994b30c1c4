"""Providers: one module per provider type, all implementing WorkerProvider; `provider_for` picks one.

This package is what the jobs layer sees of the runtime: the providers' verbs, the snapshot of the local working
tree that `sync` sends, the result of a step on a worker, (`results`, `apply_engine`) what a job's result does locally, and
(`connection_agent`) the process that keeps workers' connections open between commands.
"""

from __future__ import annotations

from offload.extras import require_for_provider
from offload.outputs import ProviderType, StackOutputs, WorkerRecord
from offload.providers.base import ProviderOptions, SshEntry, WorkerProvider, WorkerStatus
from offload.runtime import agent as connection_agent
from offload.runtime import apply as apply_engine
from offload.runtime import results
from offload.runtime.localgit import repo_root
from offload.runtime.meter import Direction, Meters, Transfer, metered_sink, unmetered
from offload.runtime.snapshot import (LocalRepository, Snapshot, large_changes, local_repository, snapshot_of_ref,
                                      take_snapshot)
from offload.runtime.transport import Result, Step, check


def provider_for(outputs: StackOutputs, worker: WorkerRecord, options: ProviderOptions | None = None
                 ) -> WorkerProvider:
    """The WorkerProvider implementation for the outputs' provider type; a GCP one needs the `gcp` extra."""
    require_for_provider(outputs.provider)
    from offload.providers.gce import GceCosProvider, GceLinuxProvider
    from offload.providers.local import LocalProvider
    from offload.providers.local_docker import LocalDockerProvider
    from offload.providers.ssh import SshProvider
    from offload.providers.workstation import WorkstationProvider

    classes: dict[ProviderType, type[WorkerProvider]] = {
        ProviderType.GCE_COS: GceCosProvider,
        ProviderType.GCE_LINUX: GceLinuxProvider,
        ProviderType.WORKSTATION: WorkstationProvider,
        ProviderType.LOCAL_DOCKER: LocalDockerProvider,
        ProviderType.SSH: SshProvider,
        ProviderType.LOCAL: LocalProvider,
    }
    return classes[outputs.provider](worker, outputs, options)


def preload() -> None:
    """Load every provider type and what their steps use, for a process that serves many commands."""
    import offload.providers.gce  # noqa: F401
    import offload.providers.local  # noqa: F401
    import offload.providers.local_docker  # noqa: F401
    import offload.providers.ssh  # noqa: F401
    import offload.providers.workstation  # noqa: F401
    import offload.runtime.sync  # noqa: F401


__all__ = ["Direction", "LocalRepository", "Meters", "ProviderOptions", "Result", "Snapshot", "SshEntry", "Step",
           "Transfer", "WorkerProvider", "WorkerStatus", "apply_engine", "check", "connection_agent",
           "large_changes", "local_repository", "metered_sink", "preload", "provider_for", "repo_root", "results",
           "snapshot_of_ref", "take_snapshot", "unmetered"]
