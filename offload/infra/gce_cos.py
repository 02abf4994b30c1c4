"""`gce-cos`: Container-Optimized OS workers; jobs run in the `offload-worker` container on the data disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from offload.deploy import COS_BOOT_DISK_GB
from offload.infra.cloudinit import COS_WORKSPACE, IMAGE_ATTRIBUTE, WORKER_CONTAINER, cos_user_data
from offload.stackconfig import DEFAULT_WORKER_IMAGE, os_login_user
from offload.infra.gce import GceWorkers, GceWorkersArgs


@dataclass(frozen=True)
class GceCosArgs(GceWorkersArgs):
    """GCE worker args plus the worker container image."""

    image: str = DEFAULT_WORKER_IMAGE


class GceCosWorkers(GceWorkers):
    """COS VMs whose cloud-init mounts the data disk and keeps the worker container running on it."""

    TYPE = "offload:infra:GceCosWorkers"
    BOOT_IMAGE = "cos-cloud/cos-stable"
    # Images and the container's own layers live on the boot disk's stateful partition.
    BOOT_DISK_GB = COS_BOOT_DISK_GB

    args: GceCosArgs

    def worker_image(self) -> str | None:
        return self.args.image

    def boot_metadata(self) -> dict[str, str]:
        args = self.args
        return {"user-data": cos_user_data(image=args.image, idle_stop_minutes=args.idle_stop_minutes,
                                           docker_user=os_login_user(args.developer), owner=args.developer),
                # Read by the worker unit as it starts; changing it restarts the container, without a reboot.
                IMAGE_ATTRIBUTE: args.image,
                "google-logging-enabled": "true"}

    def record_fields(self) -> dict[str, Any]:
        return {"container": WORKER_CONTAINER, "workspace": COS_WORKSPACE, "image": self.args.image}
