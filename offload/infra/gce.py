"""What every GCE worker fleet shares: the network, a dedicated service account, per-worker data disks,
hardened instances and the developer's access. `gce_cos` and `gce_linux` differ only in image and boot.

The posture, the same for every worker: no external IP, Shielded VM, OS Login, a service account that can
only write logs and metrics and pull images, and a data disk that outlives the instance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import pulumi
import pulumi_gcp as gcp

from offload.errors import ConfigError
from offload.infra.access import DeveloperAccess, DeveloperAccessArgs
from offload.infra.cloudinit import DATA_DEVICE_NAME
from offload.stackconfig import (DEFAULT_DATA_DISK_GB, DEFAULT_IDLE_STOP_MINUTES, DEFAULT_MACHINE_TYPE,
                                  DEFAULT_SUBNET_CIDR, StackConfig, args_from, check_shape, os_login_user,
                                  parse_ssh_source_ranges, worker_labels)
from offload.infra.network import Network, NetworkArgs
from offload.outputs import IAP_RANGE, WorkerRecord
from offload.pricing import hourly_cost

WORKER_SA_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/artifactregistry.reader")
# Narrow scopes on top of the narrow roles: never cloud-platform. devstorage.read_only covers image pulls.
WORKER_SCOPES = ("https://www.googleapis.com/auth/logging.write",
                 "https://www.googleapis.com/auth/monitoring.write",
                 "https://www.googleapis.com/auth/devstorage.read_only")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")


@dataclass(frozen=True)
class GceWorkersArgs:
    """One developer's GCE workers; everything but project, zone and developer has a secure default."""

    project: str
    zone: str
    developer: str
    workers: int = 1
    machine_type: str = DEFAULT_MACHINE_TYPE
    data_disk_gb: int = DEFAULT_DATA_DISK_GB
    idle_stop_minutes: int = DEFAULT_IDLE_STOP_MINUTES
    ssh_source_ranges: tuple[str, ...] = (IAP_RANGE,)
    subnet_cidr: str = DEFAULT_SUBNET_CIDR
    network: str | None = None
    subnetwork: str | None = None
    protect_data_disk: bool = False

    def __post_init__(self) -> None:
        if not _ZONE.match(self.zone):
            raise ConfigError(f"zone must be a Compute Engine zone such as us-west1-a; got {self.zone!r}")
        check_shape(self.workers, self.idle_stop_minutes)
        if not 10 <= self.data_disk_gb <= 65536:
            raise ConfigError(f"data_disk_gb must be from 10 to 65536; got {self.data_disk_gb}")
        object.__setattr__(self, "ssh_source_ranges", parse_ssh_source_ranges(list(self.ssh_source_ranges)))

    @classmethod
    def from_config(cls, config: StackConfig) -> Self:
        return args_from(cls, config)

    @property
    def region(self) -> str:
        return self.zone.rsplit("-", 1)[0]

    @property
    def labels(self) -> dict[str, str]:
        return worker_labels(self.developer)


class WorkerServiceAccount(pulumi.ComponentResource):
    """A dedicated identity for workers: write logs and metrics, pull images; nothing else."""

    email: pulumi.Output[str]
    resource_id: pulumi.Output[str]

    def __init__(self, name: str, project: str, developer: str,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:WorkerServiceAccount", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = gcp.serviceaccount.Account(
            f"{name}-account", project=project, account_id=name[:30].rstrip("-"),
            display_name=f"offload workers of {developer}",
            description="Runs offload workers: logs, metrics and image pulls only", opts=child)
        # An account's email is fixed by its id and project; deriving it keeps previews and tests exact.
        self.email = pulumi.Output.format("{0}@{1}.iam.gserviceaccount.com", account.account_id, project)
        self.resource_id = pulumi.Output.format("projects/{0}/serviceAccounts/{1}", project, self.email)
        member = self.email.apply(lambda email: f"serviceAccount:{email}")
        for role in WORKER_SA_ROLES:
            suffix = role.removeprefix("roles/").replace(".", "-").lower()
            gcp.projects.IAMMember(f"{name}-{suffix}", project=project, role=role, member=member, opts=child)
        self.register_outputs({"email": self.email, "roles": list(WORKER_SA_ROLES)})


def first_network_ip(interfaces: Any) -> str | None:
    """network_interfaces[0].network_ip, whether the provider returned typed objects or plain dicts."""
    if not interfaces:
        return None
    nic = interfaces[0]
    if hasattr(nic, "network_ip"):
        return nic.network_ip
    return nic.get("networkIp") or nic.get("network_ip") if isinstance(nic, Mapping) else None


class GceWorkers(pulumi.ComponentResource):
    """N hardened instances of one kind, each with its own data disk, in a private network."""

    TYPE: ClassVar[str]
    BOOT_IMAGE: ClassVar[str]
    BOOT_DISK_GB: ClassVar[int]

    workers: pulumi.Output[list[dict[str, Any]]]

    def __init__(self, name: str, args: GceWorkersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.args = args
        ssh_tag = f"{name}-ssh"
        network = Network(f"{name}-network", NetworkArgs(
            project=args.project, region=args.region, ssh_source_ranges=args.ssh_source_ranges,
            subnet_cidr=args.subnet_cidr, existing_network=args.network, existing_subnetwork=args.subnetwork,
            ssh_target_tag=ssh_tag), opts=child)
        account = WorkerServiceAccount(f"{name}-sa", args.project, args.developer, opts=child)
        metadata = {
            "enable-oslogin": "TRUE",
            "enable-guest-attributes": "TRUE",
            "block-project-ssh-keys": "TRUE",
            **self.boot_metadata(),
        }
        instances: list[gcp.compute.Instance] = []
        records: list[pulumi.Output[dict[str, Any]]] = []
        for i in range(args.workers):
            worker = f"{name}-{i}"
            # A separate disk, attached (attached disks are never auto-deleted): it outlives the instance.
            disk = gcp.compute.Disk(
                f"{worker}-data", name=f"{worker}-data", project=args.project, zone=args.zone,
                type="pd-balanced", size=args.data_disk_gb, labels=args.labels,
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect_data_disk))
            instance = gcp.compute.Instance(
                worker,
                name=worker,
                project=args.project,
                zone=args.zone,
                machine_type=args.machine_type,
                boot_disk=gcp.compute.InstanceBootDiskArgs(
                    auto_delete=True,
                    initialize_params=gcp.compute.InstanceBootDiskInitializeParamsArgs(
                        image=self.BOOT_IMAGE, size=self.BOOT_DISK_GB, type="pd-balanced")),
                attached_disks=[gcp.compute.InstanceAttachedDiskArgs(
                    source=disk.name, device_name=DATA_DEVICE_NAME, mode="READ_WRITE")],
                # No access_configs: the instance has no external IP.
                network_interfaces=[gcp.compute.InstanceNetworkInterfaceArgs(subnetwork=network.subnetwork_id)],
                service_account=gcp.compute.InstanceServiceAccountArgs(email=account.email,
                                                                       scopes=list(WORKER_SCOPES)),
                shielded_instance_config=gcp.compute.InstanceShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True),
                metadata=metadata,
                labels=args.labels,
                tags=[ssh_tag],
                allow_stopping_for_update=True,
                deletion_protection=False,
                # The name is fixed (it is the worker's identity), so a replacement must delete first.
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True))
            instances.append(instance)
            records.append(instance.network_interfaces.apply(
                lambda nics, worker=worker: self.record(worker, first_network_ip(nics)).to_dict()))
        DeveloperAccess(f"{name}-access", DeveloperAccessArgs(
            developer=args.developer, project=args.project, zone=args.zone,
            instances=[inst.name for inst in instances], service_account=account.resource_id), opts=child)
        self.workers = pulumi.Output.all(*records)
        self.register_outputs({"workers": self.workers, "service_account": account.email,
                               "network": network.network_id})

    def boot_metadata(self) -> dict[str, str]:
        """The instance metadata that makes this kind of worker: user-data or a startup script."""
        raise NotImplementedError

    def record_fields(self) -> dict[str, Any]:
        """This kind's fields of the worker record: container, workspace, image."""
        raise NotImplementedError

    def record(self, worker: str, network_ip: str | None) -> WorkerRecord:
        args = self.args
        # Before the address is known (a preview or a bare mock), the zonal DNS name reaches the same VM.
        host = network_ip or f"{worker}.{args.zone}.c.{args.project}.internal"
        return WorkerRecord(
            name=worker, host=host, port=22, user=os_login_user(args.developer), instance=worker,
            project=args.project, zone=args.zone, proxy_command=None, machine_type=args.machine_type,
            hourly_cost_usd=hourly_cost(args.machine_type), idle_stop_minutes=args.idle_stop_minutes,
            **self.record_fields())

