"""`workstation`: a Cloud Workstation, reached over SSH through its tunnel as a proxy command."""

from __future__ import annotations

from offload.errors import WorkerUnreachable
from offload.outputs import ProviderType
from offload.providers.ssh import SshProvider
from offload.runtime.transport import Transport


class WorkstationProvider(SshProvider):
    kind = ProviderType.WORKSTATION

    def _open_host(self) -> Transport:
        try:
            return self._connect()
        except WorkerUnreachable as e:
            if e.hint is None or "proxy" in e.message:
                e.hint = (f"start it with `gcloud workstations start {self.record.instance or self.name}` "
                          "and check `gcloud auth login`")
            raise
