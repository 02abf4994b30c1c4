"""`workstation`: a Cloud Workstation, reached over SSH through its TCP tunnel as a proxy command.

gcloud's workstation tunnel only listens on a local port, so the proxy command is offload's own relay
(`python -m offload.runtime.tunnel`), which starts that tunnel and speaks SSH on stdin and stdout.
"""

from __future__ import annotations

from offload.errors import ConfigError, WorkerUnreachable
from offload.outputs import ProviderType
from offload.providers.ssh import SshProvider
from offload.runtime.transport import Transport


class WorkstationProvider(SshProvider):
    kind = ProviderType.WORKSTATION

    def ssh_proxy_command(self) -> str:
        from offload.runtime.tunnel import workstation_proxy_command

        r = self.record
        if r.proxy_command:
            return r.proxy_command
        if not (r.project and r.region and r.workstation_cluster and r.workstation_config):
            raise ConfigError(f"worker {self.name} is a workstation but its outputs lack project, region, "
                              "workstation_cluster or workstation_config", hint="run `offload fleet up` to refresh the stack outputs")
        return workstation_proxy_command(r.project, r.region, r.workstation_cluster, r.workstation_config)

    def _open_host(self, wake: bool) -> Transport:
        try:
            return self._connect(proxy_command=self.ssh_proxy_command())
        except WorkerUnreachable as e:
            if e.hint is None or "proxy" in e.message:
                e.hint = (f"start it with `gcloud workstations start {self.record.instance or self.name}` "
                          "and check `gcloud auth login`")
            raise
