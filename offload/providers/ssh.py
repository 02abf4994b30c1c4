"""`ssh`: a host you already own, over one SSH connection; jobs run in `container` when one is named."""

from __future__ import annotations

from offload.outputs import ProviderType, StackOutputs, WorkerRecord
from offload.providers.base import ProviderOptions, SshEntry, WorkerProvider
from offload.runtime import agent, user_ssh_config
from offload.runtime.agent import DialSpec
from offload.runtime.connection import check_identity, open_connection, scan_host_key
from offload.runtime.transport import SshTransport, Transport


class SshProvider(WorkerProvider):
    kind = ProviderType.SSH

    def __init__(self, record: WorkerRecord, outputs: StackOutputs, options: ProviderOptions | None = None) -> None:
        # A null port or user is the user's ~/.ssh/config's (else 22 and the local user), for every verb alike;
        # the connection agent parses the file.
        super().__init__(user_ssh_config.resolve(record, agent.host_config), outputs, options)

    def _connect(self, *, extra_keys: list[str] | None = None, proxy_command: str | None = None,
                 timeout: float | None = None) -> Transport:
        """The worker's transport: the one the connection agent holds (it dials when it holds none), else a
        connection of this process's own."""
        self.options.progress(f"connecting to {self.name}")
        if self.options.connect.identity:
            check_identity(self.options.connect.identity)  # said here, not as a failed dial

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
        """The record's address as plain ssh needs it: an alias of ~/.ssh/config resolved to its HostName (ssh does
        not look the HostName of one Host entry up again), with the alias's keys and ProxyCommand."""
        r = self.record
        alias = user_ssh_config.lookup(r.host)
        return SshEntry(name=r.name, host=alias.hostname, port=r.port or user_ssh_config.DEFAULT_PORT, user=r.user,
                        known_hosts=self.options.connect.known_hosts.path,
                        proxy_command=self.ssh_proxy_command() or alias.proxy_command, container=r.container,
                        identity_files=alias.identity_files)

    def scan_host_key(self) -> str:
        return scan_host_key(self.record, self.options.connect)

    def trust_host_keys(self) -> list[str]:
        """With keys pinned in the outputs, exactly those: an older key of the host is forgotten, so that plain ssh
        refuses it as offload does. Without, the key remembered from offload's first connection, if any."""
        known = self.options.connect.known_hosts
        name = user_ssh_config.known_name(self.record)
        pinned = list(dict.fromkeys(self.record.host_keys))
        if pinned and sorted(known.lookup(name)) != sorted(pinned):
            known.replace(name, pinned)
        return known.lookup(name)
