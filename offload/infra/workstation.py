"""`workstation`: Cloud Workstations for the developer: a cluster, a config (image, idle timeout, no public IPs)
and one workstation per worker. The outputs say which workstation, cluster, config and region; how to reach it
(SSH through the workstation's TCP tunnel) is the runtime's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_gcp import workstations as ws

from offload.infra.access import WorkstationAccess, WorkstationAccessArgs
from offload.stackconfig import (DEFAULT_DATA_DISK_GB, DEFAULT_IDLE_STOP_MINUTES, DEFAULT_MACHINE_TYPE,
                                  DEFAULT_SUBNET_CIDR, DEFAULT_WORKSTATION_IMAGE, StackConfig, args_from,
                                  worker_labels)
from offload.infra.gce import WORKER_SCOPES, WorkerServiceAccount
from offload.infra.network import Network, NetworkArgs
from offload.infra.project import WORKSTATION_APIS, ProjectServices
from offload.outputs import WorkerRecord
from offload.pricing import hourly_cost

# Cloud Workstations images log in as `user`, whose home is the persistent disk.
WORKSTATION_USER = "user"
WORKSTATION_HOME = "/home"
WORKSTATION_WORKSPACE = f"{WORKSTATION_HOME}/{WORKSTATION_USER}/offload"


@dataclass(frozen=True)
class WorkstationArgs:
    """One developer's workstations; the home disk (dataDiskGb) holds the workspace. The values are the stack
    config's (`from_config`), which checked each one when it was read."""

    project: str
    region: str
    developer: str
    workers: int = 1
    machine_type: str = DEFAULT_MACHINE_TYPE
    data_disk_gb: int = DEFAULT_DATA_DISK_GB
    image: str = DEFAULT_WORKSTATION_IMAGE
    idle_stop_minutes: int = DEFAULT_IDLE_STOP_MINUTES
    subnet_cidr: str = DEFAULT_SUBNET_CIDR
    network: str | None = None
    subnetwork: str | None = None
    protect_data_disk: bool = True
    # Cloud Workstations stops a workstation this long after it started, busy or not (its own default is 12
    # hours, which kills long jobs); 0 means never.
    running_timeout_minutes: int = 0

    @classmethod
    def from_config(cls, config: StackConfig) -> "WorkstationArgs":
        return args_from(cls, config)

    @property
    def labels(self) -> dict[str, str]:
        return worker_labels(self.developer)


class WorkstationWorkers(pulumi.ComponentResource):
    """A private cluster and config, and the developer's workstations, reachable only through their tunnel."""

    workers: pulumi.Output[list[dict[str, Any]]]

    def __init__(self, name: str, args: WorkstationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:WorkstationWorkers", name, None, opts)
        apis = ProjectServices(f"{name}-apis", args.project, WORKSTATION_APIS,
                               opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, depends_on=apis.resources)
        network = Network(f"{name}-network", NetworkArgs(
            project=args.project, region=args.region, subnet_cidr=args.subnet_cidr,
            existing_network=args.network, existing_subnetwork=args.subnetwork), opts=child)
        account = WorkerServiceAccount(f"{name}-sa", args.project, args.developer, args.image, opts=child)
        cluster_id, config_id = f"{name}-cluster", f"{name}-config"
        cluster = ws.WorkstationCluster(
            cluster_id, workstation_cluster_id=cluster_id, project=args.project, location=args.region,
            network=network.network_id, subnetwork=network.subnetwork_id, labels=args.labels, opts=child)
        config = ws.WorkstationConfig(
            config_id, workstation_config_id=config_id, workstation_cluster_id=cluster.workstation_cluster_id,
            project=args.project, location=args.region, labels=args.labels,
            # 0 minutes means never stop, which Cloud Workstations spells "0s".
            idle_timeout=f"{args.idle_stop_minutes * 60}s",
            running_timeout=f"{args.running_timeout_minutes * 60}s",
            host=ws.WorkstationConfigHostArgs(
                gce_instance=ws.WorkstationConfigHostGceInstanceArgs(
                    machine_type=args.machine_type,
                    boot_disk_size_gb=50,
                    disable_public_ip_addresses=True,
                    service_account=account.email,
                    service_account_scopes=list(WORKER_SCOPES),
                    shielded_instance_config=ws.WorkstationConfigHostGceInstanceShieldedInstanceConfigArgs(
                        enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True))),
            container=ws.WorkstationConfigContainerArgs(image=args.image),
            persistent_directories=[ws.WorkstationConfigPersistentDirectoryArgs(
                mount_path=WORKSTATION_HOME,
                gce_pd=ws.WorkstationConfigPersistentDirectoryGcePdArgs(
                    size_gb=args.data_disk_gb, disk_type="pd-balanced", fs_type="ext4",
                    reclaim_policy="RETAIN" if args.protect_data_disk else "DELETE"))],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*apis.resources, *network.ready,
                                                                 *account.bindings]))
        names: list[pulumi.Output[str]] = []
        records: list[dict[str, Any]] = []
        for i in range(args.workers):
            worker = f"{name}-{i}"
            workstation = ws.Workstation(
                worker, workstation_id=worker, workstation_config_id=config.workstation_config_id,
                workstation_cluster_id=cluster.workstation_cluster_id, project=args.project,
                location=args.region, labels=args.labels, opts=child)
            names.append(workstation.workstation_id)
            records.append(WorkerRecord(
                name=worker, host=worker, port=22, user=WORKSTATION_USER, container=None,
                workspace=WORKSTATION_WORKSPACE, instance=worker, project=args.project, region=args.region,
                workstation_cluster=cluster_id, workstation_config=config_id, image=args.image,
                machine_type=args.machine_type, hourly_cost_usd=hourly_cost(args.machine_type),
                idle_stop_minutes=args.idle_stop_minutes).to_dict())
        WorkstationAccess(f"{name}-access", WorkstationAccessArgs(
            developer=args.developer, project=args.project, region=args.region,
            cluster=cluster.workstation_cluster_id, config=config.workstation_config_id, workstations=names,
            service_account=account.resource_id), opts=child)
        # The records are known up front; waiting on the workstations keeps them from appearing before those.
        self.workers = pulumi.Output.all(*names).apply(lambda _: records)
        self.register_outputs({"workers": self.workers, "cluster": cluster.workstation_cluster_id,
                               "config": config.workstation_config_id})

