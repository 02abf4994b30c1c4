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
                                  DEFAULT_SUBNET_CIDR, StackConfig, args_from, os_login_user, team_tag,
                                  worker_labels)
from offload.infra.network import Network, NetworkArgs
from offload.infra.project import GCE_APIS, ProjectServices, depends_on_of
from offload.outputs import IAP_RANGE, WorkerRecord
from offload.pricing import hourly_cost

# Project-wide, but only about the account itself writing its own logs and metrics. Image pulls are granted on
# the image's repository alone (see registry_repository).
WORKER_SA_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter")
REGISTRY_READER_ROLE = "roles/artifactregistry.reader"
# Narrow scopes on top of the narrow roles: never cloud-platform. devstorage.read_only covers image pulls.
WORKER_SCOPES = ("https://www.googleapis.com/auth/logging.write",
                 "https://www.googleapis.com/auth/monitoring.write",
                 "https://www.googleapis.com/auth/devstorage.read_only")
# Public images Google publishes; nobody outside Google can grant on these repositories, and nobody needs to.
PUBLIC_REGISTRY_PROJECTS = ("cloud-workstations-images",)
_ARTIFACT_REGISTRY = re.compile(r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/@:]+)/")
_GCR = re.compile(r"^(?P<host>(?:(?P<multi>us|eu|asia)\.)?gcr\.io)/(?P<project>[^/]+)/")
_GCR_LOCATIONS = {"us": "us", "eu": "europe", "asia": "asia", None: "us"}


@dataclass(frozen=True)
class GceWorkersArgs:
    """One developer's GCE workers; everything but project, zone and developer has a secure default. The values
    are the stack config's (`from_config`), which checked each one when it was read."""

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
    protect_data_disk: bool = True
    # offload:team: the stack adds no firewall rule of its own; its workers carry the team's network tag, which
    # the team's one SSH rule (IAP range only) targets. Who reaches which worker is per-instance IAM and OS Login.
    team: str | None = None

    @classmethod
    def from_config(cls, config: StackConfig) -> Self:
        return args_from(cls, config)

    @property
    def region(self) -> str:
        return self.zone.rsplit("-", 1)[0]

    @property
    def labels(self) -> dict[str, str]:
        return worker_labels(self.developer)


def registry_repository(image: str | None) -> tuple[str, str, str] | None:
    """(project, location, repository) of IMAGE's Artifact Registry repository (gcr.io included, which
    Artifact Registry serves now); None for other registries and Google's public images."""
    if not image:
        return None
    if m := _ARTIFACT_REGISTRY.match(image):
        found = (m["project"], m["location"], m["repo"])
    elif m := _GCR.match(image):
        found = (m["project"], _GCR_LOCATIONS[m["multi"]], m["host"])
    else:
        return None
    return None if found[0] in PUBLIC_REGISTRY_PROJECTS else found


class WorkerServiceAccount(pulumi.ComponentResource):
    """A dedicated identity for workers: write logs and metrics, pull its own image; nothing else.

    `bindings` are its grants: a worker that boots before them cannot pull its image, so instances wait on them.
    """

    email: pulumi.Output[str]
    resource_id: pulumi.Output[str]
    bindings: list[pulumi.Resource]

    def __init__(self, name: str, project: str, developer: str, image: str | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:WorkerServiceAccount", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on_of(opts))
        account = gcp.serviceaccount.Account(
            f"{name}-account", project=project, account_id=service_account_id(name),
            display_name=f"offload workers of {developer}"[:100],
            description="Runs offload workers: logs, metrics and image pulls only", opts=child)
        # An account's email is fixed by its id and project; deriving it keeps previews and tests exact.
        self.email = pulumi.Output.format("{0}@{1}.iam.gserviceaccount.com", account.account_id, project)
        self.resource_id = pulumi.Output.format("projects/{0}/serviceAccounts/{1}", project, self.email)
        member = self.email.apply(lambda email: f"serviceAccount:{email}")
        self.bindings = []
        for role in WORKER_SA_ROLES:
            suffix = role.removeprefix("roles/").replace(".", "-").lower()
            self.bindings.append(gcp.projects.IAMMember(f"{name}-{suffix}", project=project, role=role,
                                                        member=member, opts=child))
        repository = registry_repository(image)
        if repository:
            # The deployer needs to set IAM on that repository, which may live in another project.
            repo_project, location, repo = repository
            self.bindings.append(gcp.artifactregistry.RepositoryIamMember(
                f"{name}-image-reader", project=repo_project, location=location, repository=repo,
                role=REGISTRY_READER_ROLE, member=member, opts=child))
        self.register_outputs({"email": self.email, "roles": list(WORKER_SA_ROLES),
                               "image_repository": "/".join(repository) if repository else None})


def service_account_id(name: str) -> str:
    """A service-account id from a component name: 6-30 characters, a letter first, no trailing '-'."""
    text = re.sub(r"[^a-z0-9-]", "-", name.lower())[:30].rstrip("-")
    if len(text) < 6 or not text[0].isalpha():
        raise ConfigError(f"cannot make a service-account id (6-30 characters) from {name!r}; set offload:namePrefix")
    return text


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
        self.args = args
        apis = ProjectServices(f"{name}-apis", args.project, GCE_APIS, opts=pulumi.ResourceOptions(parent=self))
        # Everything below calls an API that a fresh project has only once these are enabled.
        child = pulumi.ResourceOptions(parent=self, depends_on=apis.resources)
        account = WorkerServiceAccount(f"{name}-sa", args.project, args.developer, self.worker_image(),
                                       opts=child)
        network = Network(f"{name}-network", NetworkArgs(
            project=args.project, region=args.region, ssh_source_ranges=args.ssh_source_ranges,
            subnet_cidr=args.subnet_cidr, existing_network=args.network, existing_subnetwork=args.subnetwork,
            ssh_target_service_account=None if args.team else account.email), opts=child)
        # A worker's first boot pulls its image and packages: through NAT, as the service account. Starting
        # before either is in place fails that boot, so instances wait for them.
        boot_needs = [*apis.resources, *network.ready, *account.bindings]
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
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect_data_disk,
                                            depends_on=apis.resources))
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
                tags=[team_tag(args.team)] if args.team else None,
                allow_stopping_for_update=True,
                deletion_protection=False,
                # The name is fixed (it is the worker's identity), so a replacement must delete first.
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True, depends_on=boot_needs))
            instances.append(instance)
            records.append(instance.network_interfaces.apply(
                lambda nics, worker=worker: self.record(worker, first_network_ip(nics)).to_dict()))
        DeveloperAccess(f"{name}-access", DeveloperAccessArgs(
            developer=args.developer, project=args.project, zone=args.zone,
            instances=[inst.name for inst in instances], service_account=account.resource_id,
            name_prefix=name), opts=child)
        self.workers = pulumi.Output.all(*records)
        self.register_outputs({"workers": self.workers, "service_account": account.email,
                               "network": network.network_id})

    def worker_image(self) -> str | None:
        """The container image the workers pull, if any: its repository is all they may read."""
        return None

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

