"""`ssh`: a host you already own, over one SSH connection; jobs run in `container` when one is named."""

from __future__ import annotations

from offload.outputs import ProviderType
from offload.providers.base import WorkerProvider
from offload.runtime.connection import open_connection
from offload.runtime.transport import SshTransport, Transport


class SshProvider(WorkerProvider):
    kind = ProviderType.SSH

    def _connect(self, *, extra_keys: list[str] | None = None, proxy_command: str | None = None) -> Transport:
        self.options.progress(f"connecting to {self.name}")
        conn = open_connection(self.record, self.options.connect, extra_keys=extra_keys,
                               proxy_command=proxy_command)
        return SshTransport(self.name, conn)

    def _open_host(self) -> Transport:
        return self._connect()
