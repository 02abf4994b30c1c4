"""Per-developer access: the stack's developer, and no one else, is granted reach to their own workers.

Every grant is on one instance, one workstation or the workers' service account; none is project-wide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from offload.errors import ConfigError

IAP_TUNNEL_ROLE = "roles/iap.tunnelResourceAccessor"
OS_ADMIN_LOGIN_ROLE = "roles/compute.osAdminLogin"
# OS Login on an instance that runs as a service account requires actAs on that account.
SERVICE_ACCOUNT_USER_ROLE = "roles/iam.serviceAccountUser"
WORKSTATION_USER_ROLE = "roles/workstations.user"


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


class DeveloperAccess(pulumi.ComponentResource):
    """IAP tunnel and OS Login (admin) on each instance; actAs on the workers' service account."""

    def __init__(self, name: str, args: DeveloperAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:DeveloperAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        member = user_member(args.developer)
        for i, instance in enumerate(args.instances):
            gcp.iap.TunnelInstanceIAMMember(f"{name}-{i}-iap-tunnel", project=args.project, zone=args.zone,
                                            instance=instance, role=IAP_TUNNEL_ROLE, member=member, opts=child)
            gcp.compute.InstanceIAMMember(f"{name}-{i}-os-admin-login", project=args.project, zone=args.zone,
                                          instance_name=instance, role=OS_ADMIN_LOGIN_ROLE, member=member,
                                          opts=child)
        gcp.serviceaccount.IAMMember(f"{name}-sa-user", service_account_id=args.service_account,
                                     role=SERVICE_ACCOUNT_USER_ROLE, member=member, opts=child)
        self.register_outputs({"member": member, "instances": list(args.instances)})


@dataclass(frozen=True)
class WorkstationAccessArgs:
    """The developer and the workstations (ids, under one cluster and config) that are theirs."""

    developer: str
    project: str
    region: str
    cluster: pulumi.Input[str]
    config: pulumi.Input[str]
    workstations: Sequence[pulumi.Input[str]]


class WorkstationAccess(pulumi.ComponentResource):
    """Cloud Workstations User on each of the developer's workstations: start, stop and tunnel to it."""

    def __init__(self, name: str, args: WorkstationAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:WorkstationAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        member = user_member(args.developer)
        for i, workstation in enumerate(args.workstations):
            gcp.workstations.WorkstationIamMember(
                f"{name}-{i}-user", project=args.project, location=args.region,
                workstation_cluster_id=args.cluster, workstation_config_id=args.config,
                workstation_id=workstation, role=WORKSTATION_USER_ROLE, member=member, opts=child)
        self.register_outputs({"member": member, "workstations": list(args.workstations)})
