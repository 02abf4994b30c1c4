"""Per-developer access: the stack's developer, and no one else, is granted reach to their own workers.

Every grant is on one instance, one workstation or the workers' service account, except one project-level
custom role holding the two permissions that exist only at project level: listing instances (`fleet list`)
and reading the zone operation a start or stop returns (waking a worker).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from offload.deploy import INSTANCE_PERMISSIONS, PROJECT_PERMISSIONS
from offload.errors import ConfigError
from offload.infra.project import depends_on_of

IAP_TUNNEL_ROLE = "roles/iap.tunnelResourceAccessor"
OS_ADMIN_LOGIN_ROLE = "roles/compute.osAdminLogin"
# OS Login on an instance that runs as a service account requires actAs on that account.
SERVICE_ACCOUNT_USER_ROLE = "roles/iam.serviceAccountUser"
WORKSTATION_USER_ROLE = "roles/workstations.user"
# The custom roles' permissions: the instance role's, and the project role's that exist nowhere else.
__all__ = ["INSTANCE_PERMISSIONS", "PROJECT_PERMISSIONS", "DeveloperAccess", "DeveloperAccessArgs",
           "WorkstationAccess", "WorkstationAccessArgs", "custom_role_id", "user_member"]


def custom_role_id(name_prefix: str, suffix: str) -> str:
    """A project-unique custom role id (letters, digits, '_' and '.', 3-64) for this stack's developer."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", f"{name_prefix}_{suffix}")[:64]


def user_member(developer: str) -> str:
    if "@" not in developer or developer.startswith(("user:", "group:", "serviceAccount:", "domain:")):
        raise ConfigError(f"the developer must be a plain email address; got {developer!r}")
    return f"user:{developer}"


@dataclass(frozen=True)
class DeveloperAccessArgs:
    """The developer and the instances (names, in one project and zone) that are theirs."""

    developer: str
    project: str
    zone: str
    instances: Sequence[pulumi.Input[str]]
    # The workers' service account, as projects/PROJECT/serviceAccounts/EMAIL.
    service_account: pulumi.Input[str]
    # The stack's name prefix: it makes the custom role ids unique to this developer in the project.
    name_prefix: str = "offload"


class DeveloperAccess(pulumi.ComponentResource):
    """IAP tunnel, OS Login (admin) and the worker role on each instance; the fleet role on the project; actAs
    on the workers' service account."""

    worker_role: pulumi.Output[str]
    fleet_role: pulumi.Output[str]

    def __init__(self, name: str, args: DeveloperAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:DeveloperAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on_of(opts))
        member = user_member(args.developer)
        worker_role = gcp.projects.IAMCustomRole(
            f"{name}-worker-role", project=args.project, role_id=custom_role_id(args.name_prefix, "worker"),
            title=f"offload worker user ({args.name_prefix})"[:100], permissions=list(INSTANCE_PERMISSIONS),
            description=f"Reach, wake and stop the offload workers of {args.developer}"[:256], opts=child)
        fleet_role = gcp.projects.IAMCustomRole(
            f"{name}-fleet-role", project=args.project, role_id=custom_role_id(args.name_prefix, "fleet"),
            title=f"offload fleet reader ({args.name_prefix})"[:100], permissions=list(PROJECT_PERMISSIONS),
            description="List instances and follow zone operations: what only exists at project level"[:256],
            opts=child)
        # A custom role's name is fixed by its project and id; deriving it keeps previews and tests exact.
        self.worker_role = pulumi.Output.format("projects/{0}/roles/{1}", args.project, worker_role.role_id)
        self.fleet_role = pulumi.Output.format("projects/{0}/roles/{1}", args.project, fleet_role.role_id)
        for i, instance in enumerate(args.instances):
            gcp.iap.TunnelInstanceIAMMember(f"{name}-{i}-iap-tunnel", project=args.project, zone=args.zone,
                                            instance=instance, role=IAP_TUNNEL_ROLE, member=member, opts=child)
            gcp.compute.InstanceIAMMember(f"{name}-{i}-os-admin-login", project=args.project, zone=args.zone,
                                          instance_name=instance, role=OS_ADMIN_LOGIN_ROLE, member=member,
                                          opts=child)
            gcp.compute.InstanceIAMMember(f"{name}-{i}-worker-user", project=args.project, zone=args.zone,
                                          instance_name=instance, role=self.worker_role, member=member,
                                          opts=child)
        gcp.projects.IAMMember(f"{name}-fleet-reader", project=args.project, role=self.fleet_role, member=member,
                               opts=child)
        gcp.serviceaccount.IAMMember(f"{name}-sa-user", service_account_id=args.service_account,
                                     role=SERVICE_ACCOUNT_USER_ROLE, member=member, opts=child)
        self.register_outputs({"member": member, "instances": list(args.instances),
                               "worker_role": self.worker_role, "fleet_role": self.fleet_role})


@dataclass(frozen=True)
class WorkstationAccessArgs:
    """The developer and the workstations (ids, under one cluster and config) that are theirs."""

    developer: str
    project: str
    region: str
    cluster: pulumi.Input[str]
    config: pulumi.Input[str]
    workstations: Sequence[pulumi.Input[str]]
    # The config's service account, as projects/PROJECT/serviceAccounts/EMAIL: starting a workstation that runs
    # as it needs iam.serviceAccounts.actAs on it.
    service_account: pulumi.Input[str] | None = None


class WorkstationAccess(pulumi.ComponentResource):
    """Cloud Workstations User on each of the developer's workstations (start, stop and tunnel to it), and
    actAs on the service account they run as."""

    def __init__(self, name: str, args: WorkstationAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:WorkstationAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on_of(opts))
        member = user_member(args.developer)
        for i, workstation in enumerate(args.workstations):
            gcp.workstations.WorkstationIamMember(
                f"{name}-{i}-user", project=args.project, location=args.region,
                workstation_cluster_id=args.cluster, workstation_config_id=args.config,
                workstation_id=workstation, role=WORKSTATION_USER_ROLE, member=member, opts=child)
        if args.service_account is not None:
            gcp.serviceaccount.IAMMember(f"{name}-sa-user", service_account_id=args.service_account,
                                         role=SERVICE_ACCOUNT_USER_ROLE, member=member, opts=child)
        self.register_outputs({"member": member, "workstations": list(args.workstations)})
