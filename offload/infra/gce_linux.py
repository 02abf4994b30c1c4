"""`gce-linux`: Debian 12 workers; jobs run on the host, in a workspace on the data disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from offload.deploy import LINUX_BOOT_DISK_GB
from offload.infra.cloudinit import LINUX_WORKSPACE, linux_metadata
from offload.stackconfig import os_login_user
from offload.infra.gce import GceWorkers, GceWorkersArgs


@dataclass(frozen=True)
class GceLinuxArgs(GceWorkersArgs):
    """GCE worker args; the Debian worker needs nothing more."""


class GceLinuxWorkers(GceWorkers):
    """Debian VMs with tmux and git whose data disk is mounted as the workspace, owned by the developer."""

    TYPE = "offload:infra:GceLinuxWorkers"
    BOOT_IMAGE = "debian-cloud/debian-12"
    BOOT_DISK_GB = LINUX_BOOT_DISK_GB

    def boot_metadata(self) -> dict[str, str]:
        return linux_metadata(idle_stop_minutes=self.args.idle_stop_minutes,
                              owner=os_login_user(self.args.developer))

    def record_fields(self) -> dict[str, Any]:
        return {"container": None, "workspace": LINUX_WORKSPACE, "image": None}
