"""What deploying a GCP stack needs of its project: the APIs on before it (step 0) and the ones it enables, the
roles of whoever deploys it (each with the permissions that show it is held), the developer's permissions on their
instances, and the quotas it uses.

One table each, read by the Pulumi program (offload/infra), by `offload doctor`, and checked against the README by
tests. Plain data: this module imports neither pulumi nor any Google client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# Step 0. Enabling a service goes through Service Usage, and the Pulumi provider reads the project through Cloud
# Resource Manager first, so neither can be enabled by a resource of the stack: in a fresh project whose quota
# project is itself, that resource fails with "Cloud Resource Manager API has not been used ...".
BOOTSTRAP_APIS = ("serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com")

# Enabled by the stack itself. compute: VMs, disks, network; iam: the workers' service account and custom roles;
# iap: the SSH tunnel; oslogin: logins and the developer's key; logging and monitoring: the workers' account writes
# its logs and metrics there.
GCE_APIS = ("compute.googleapis.com", "iam.googleapis.com", "iap.googleapis.com", "oslogin.googleapis.com",
            "logging.googleapis.com", "monitoring.googleapis.com")
WORKSTATION_APIS = (*GCE_APIS, "workstations.googleapis.com")


def enable_command(apis: tuple[str, ...] | list[str], project: str) -> str:
    """The one gcloud line that turns APIS on in PROJECT."""
    return f"gcloud services enable {' '.join(apis)} --project {project}"


@dataclass(frozen=True)
class DeployRole:
    """A predefined role whoever runs `pulumi up` needs in the workers' project, what for, and permissions it
    holds that the stack uses (tested with `projects.testIamPermissions`)."""

    role: str
    purpose: str
    permissions: tuple[str, ...]
    workstation_only: bool = False


# Who runs `pulumi up`. Project Owner holds them all. The README lists these, in this order.
DEPLOY_ROLES = (
    DeployRole("roles/serviceusage.serviceUsageAdmin", "enable the APIs",
               ("serviceusage.services.enable", "serviceusage.services.get")),
    DeployRole("roles/compute.admin", "network, firewall, disks, instances and their IAM",
               ("compute.networks.create", "compute.subnetworks.create", "compute.routers.create",
                "compute.firewalls.create", "compute.disks.create", "compute.instances.create",
                "compute.instances.setIamPolicy")),
    DeployRole("roles/iam.serviceAccountAdmin", "the workers' service account",
               ("iam.serviceAccounts.create", "iam.serviceAccounts.setIamPolicy")),
    DeployRole("roles/iam.serviceAccountUser", "attach that account to the VMs", ("iam.serviceAccounts.actAs",)),
    DeployRole("roles/iam.roleAdmin", "the two custom roles", ("iam.roles.create", "iam.roles.update")),
    DeployRole("roles/resourcemanager.projectIamAdmin", "the project-level grants",
               ("resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy")),
    DeployRole("roles/iap.admin", "the tunnel grant on each instance",
               ("iap.tunnelInstances.getIamPolicy", "iap.tunnelInstances.setIamPolicy")),
    DeployRole("roles/workstations.admin", "the cluster, config and workstation of a `workstation` stack",
               ("workstations.workstationClusters.create", "workstations.workstationConfigs.create",
                "workstations.workstations.create"), workstation_only=True),
)

# A private image's repository: its IAM is set by the stack (reader for the workers' account). `repoAdmin` cannot
# set IAM on a repository; `admin` can, as can a custom role with these two permissions.
REGISTRY_ROLE = "roles/artifactregistry.admin"
REGISTRY_PERMISSIONS = ("artifactregistry.repositories.getIamPolicy", "artifactregistry.repositories.setIamPolicy")


def deploy_roles(workstation: bool) -> tuple[DeployRole, ...]:
    return tuple(r for r in DEPLOY_ROLES if workstation or not r.workstation_only)


# What the runtime and gcloud do on one instance: look it up (IAP's tunnel does, first), wake and stop it, and
# read the host keys and idle countdown it publishes in guest attributes. The stack grants them to the developer
# in a custom role on each instance.
INSTANCE_PERMISSIONS = ("compute.instances.get", "compute.instances.start", "compute.instances.stop",
                        "compute.instances.resume", "compute.instances.getGuestAttributes")
# Granted on the project because they exist nowhere else; neither reads nor changes any resource's content.
PROJECT_PERMISSIONS = ("compute.instances.list", "compute.zoneOperations.get")
# The predefined roles the stack grants on each instance: OS Login as admin (on the Compute instance), and the IAP
# tunnel (on IAP's own resource for the instance, where it is tested too).
OS_ADMIN_LOGIN_PERMISSION = "compute.instances.osAdminLogin"
DEVELOPER_INSTANCE_PERMISSIONS = (*INSTANCE_PERMISSIONS, OS_ADMIN_LOGIN_PERMISSION)
TUNNEL_PERMISSION = "iap.tunnelInstances.accessViaIAP"


class QuotaScope(str, Enum):
    """Where a quota counts: in the stack's region, or across the project."""

    REGION = "region"
    PROJECT = "project"


@dataclass(frozen=True)
class QuotaNeed:
    """A Compute Engine quota metric a stack uses, and how much of it."""

    metric: str
    scope: QuotaScope
    amount: float


# Each worker's boot disk (pd-balanced), by provider type.
COS_BOOT_DISK_GB = 30
LINUX_BOOT_DISK_GB = 20
# What a stack that makes its own network creates once: a VPC, a NAT address, an SSH firewall rule.
NETWORKS_PER_STACK = 1
ADDRESSES_PER_STACK = 1
FIREWALLS_PER_STACK = 1
# Shared-core machine types, by their vCPUs as the CPUS quota counts them.
_SHARED_CORE_VCPUS = {"e2-micro": 2, "e2-small": 2, "e2-medium": 2, "f1-micro": 1, "g1-small": 1}
_VCPUS = re.compile(r"[a-z0-9]+-(?:standard|highmem|highcpu|highgpu|megamem|ultramem|custom)-(?P<vcpus>\d{1,3})"
                    r"(?:-\d+)?(?:-lssd)?")


def machine_vcpus(machine_type: str) -> int | None:
    """The vCPUs of MACHINE_TYPE, from its name; None for a name that does not say."""
    if machine_type in _SHARED_CORE_VCPUS:
        return _SHARED_CORE_VCPUS[machine_type]
    m = _VCPUS.fullmatch(machine_type)
    return int(m["vcpus"]) if m else None


# Machine families whose vCPUs count against the regional `CPUS` quota; every other family has its own
# (`N2_CPUS`, `C3_CPUS`, ...).
_GENERIC_CPU_FAMILIES = ("e2", "n1", "f1", "g1")


def cpu_metric(machine_type: str) -> str:
    """The regional quota metric MACHINE_TYPE's vCPUs count against."""
    family = machine_type.split("-", 1)[0]
    return "CPUS" if family in _GENERIC_CPU_FAMILIES else f"{family.upper()}_CPUS"


def quota_needs(*, workers: int, vcpus: int, disk_gb: int, own_network: bool,
                cpu: str = "CPUS") -> tuple[QuotaNeed, ...]:
    """The quotas a GCE stack of WORKERS workers uses: VCPUS (against the regional quota CPU, see cpu_metric, and
    the project's CPUS_ALL_REGIONS) and DISK_GB (boot plus data, pd-balanced, which counts as SSD) each, and, when
    it makes its own network, one VPC, one NAT address and one firewall rule."""
    needs = [QuotaNeed(cpu, QuotaScope.REGION, workers * vcpus),
             QuotaNeed("CPUS_ALL_REGIONS", QuotaScope.PROJECT, workers * vcpus),
             QuotaNeed("SSD_TOTAL_GB", QuotaScope.REGION, workers * disk_gb)]
    if own_network:
        needs += [QuotaNeed("NETWORKS", QuotaScope.PROJECT, NETWORKS_PER_STACK),
                  QuotaNeed("IN_USE_ADDRESSES", QuotaScope.REGION, ADDRESSES_PER_STACK)]
    needs.append(QuotaNeed("FIREWALLS", QuotaScope.PROJECT, FIREWALLS_PER_STACK))
    return tuple(needs)


def quota_fix(metric: str, project: str, region: str | None) -> str:
    """Where to ask for more of METRIC."""
    where = f" in {region}" if region and metric not in ("CPUS_ALL_REGIONS", "NETWORKS", "FIREWALLS") else ""
    return (f"ask for more {metric}{where}: https://console.cloud.google.com/iam-admin/quotas?project={project} "
            "(or fewer offload:workers, a smaller offload:machineType or offload:dataDiskGb)")
