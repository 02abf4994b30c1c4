"""`ssh`: a host you already own, over one SSH connection; jobs run in `container` when one is named."""

from __future__ import annotations

from offload.outputs import ProviderType
from offload.providers.base import SshEntry, WorkerProvider
from offload.runtime import agent
from offload.runtime.agent import DialSpec
from offload.runtime.connection import open_connection, scan_host_key
from offload.runtime.hostkeys import host_id
from offload.runtime.transport import SshTransport, Transport


class SshProvider(WorkerProvider):
    kind = ProviderType.SSH

    def _connect(self, *, extra_keys: list[str] | None = None, proxy_command: str | None = None,
                 timeout: float | None = None) -> Transport:
        """The worker's transport: the one the connection agent holds (it dials when it holds none), else a
        connection of this process's own."""
        self.options.progress(f"connecting to {self.name}")

        def direct() -> Transport:
            conn = open_connection(self.record, self.options.connect, extra_keys=extra_keys,
                                   proxy_command=proxy_command, timeout=timeout)
            return SshTransport(self.name, conn)

        spec = DialSpec.of(self.record, self.options.connect, extra_keys=extra_keys, proxy_command=proxy_command,
                           timeout=timeout)
        held = agent.connect(spec, self.options.connect.notice, direct)
        return held if held is not None else direct()

    def _open_host(self, wake: bool) -> Transport:
        return self._connect()

    def ssh_proxy_command(self) -> str | None:
        """The ProxyCommand plain ssh needs for this worker, if any (%h and %p left for ssh to expand)."""
        return self.record.proxy_command

    def ssh_entry(self) -> SshEntry:
        r = self.record
        return SshEntry(name=r.name, host=r.host, port=r.port, user=r.user,
                        known_hosts=self.options.connect.known_hosts.path, proxy_command=self.ssh_proxy_command(),
                        container=r.container)

    def scan_host_key(self) -> str:
        return scan_host_key(self.record, self.options.connect)

    def trust_host_keys(self) -> list[str]:
        known = self.options.connect.known_hosts
        name = host_id(self.record.host, self.record.port)
        for key in self.record.host_keys:
            known.add(name, key)
        return known.lookup(name)
