"""offload's security baseline as Pulumi policies, one plain validation function per rule.

Each rule is `(args, report_violation)`: `args.props` are the resource's inputs as the engine sends them
(camelCase keys), `args.get_config()` the policy's config. The functions do not depend on the engine, so
tests call them with simple stand-in args.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation, ResourceValidationArgs,
                           ResourceValidationPolicy)
from pulumi_policy.proxy import UnknownValueError

IAP_RANGE = "35.235.240.0/20"
INSTANCE = "gcp:compute/instance:Instance"
FIREWALL = "gcp:compute/firewall:Firewall"
WORKSTATION_CONFIG = "gcp:workstations/workstationConfig:WorkstationConfig"
DEFAULT_COMPUTE_SA_SUFFIX = "-compute@developer.gserviceaccount.com"
BROAD_SCOPES = ("https://www.googleapis.com/auth/cloud-platform", "cloud-platform")
SHIELDED_KEYS = ("enableSecureBoot", "enableVtpm", "enableIntegrityMonitoring")

Validation = Callable[[ResourceValidationArgs, ReportViolation], None]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def _only(resource_type: str) -> Callable[[Validation], Validation]:
    """Run the rule only for RESOURCE_TYPE."""

    def wrap(rule: Validation) -> Validation:
        def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
            if args.resource_type == resource_type:
                rule(args, report_violation)

        validate.__name__ = rule.__name__
        validate.__doc__ = rule.__doc__
        return validate

    return wrap


@_only(INSTANCE)
def no_external_ip(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Compute instances have no external address: no accessConfigs on any interface."""
    for i, nic in enumerate(_list(args.props.get("networkInterfaces"))):
        nic = _map(nic)
        if _list(nic.get("accessConfigs")) or _list(nic.get("ipv6AccessConfigs")):
            report_violation(f"networkInterfaces[{i}] has an access config, which gives the instance an external "
                             "IP; reach workers through IAP instead", None)


@_only(INSTANCE)
def shielded_vm(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Compute instances are Shielded VMs: secure boot, vTPM and integrity monitoring all on."""
    config = _map(args.props.get("shieldedInstanceConfig"))
    off = [key for key in SHIELDED_KEYS if config.get(key) is not True]
    if off:
        report_violation(f"shieldedInstanceConfig must turn on {', '.join(off)}", None)


@_only(INSTANCE)
def os_login(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Compute instances use OS Login (metadata enable-oslogin=TRUE), so IAM decides who may log in."""
    value = _map(args.props.get("metadata")).get("enable-oslogin")
    if not isinstance(value, str) or value.strip().upper() != "TRUE":
        report_violation(f"metadata enable-oslogin must be TRUE; got {value!r}", None)


@_only(INSTANCE)
def dedicated_service_account(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Compute instances run as a dedicated service account, not the default compute one, with narrow scopes."""
    account = args.props.get("serviceAccount")
    if not isinstance(account, Mapping):
        report_violation("the instance needs a dedicated serviceAccount (logs, metrics and image pulls only)", None)
        return
    try:
        email = account.get("email")
    except UnknownValueError:
        email = "(created by this stack)"  # unknown in preview: it comes from a service account resource
    if not isinstance(email, str) or not email:
        report_violation("serviceAccount.email must name a dedicated service account; the default compute "
                         "account would be used", None)
    elif email.endswith(DEFAULT_COMPUTE_SA_SUFFIX):
        report_violation(f"serviceAccount.email {email} is the default compute service account; use a dedicated "
                         "one", None)
    broad = [s for s in _list(account.get("scopes")) if s in BROAD_SCOPES]
    if broad:
        report_violation("serviceAccount.scopes must not include cloud-platform; grant narrow scopes", None)


@_only(INSTANCE)
def data_disk_kept(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Compute instances keep their data on an attached disk that is not deleted with the instance."""
    disks = _list(args.props.get("attachedDisks"))
    if not disks:
        report_violation("the instance has no attached data disk; the workspace would live on the boot disk and "
                         "be lost when the instance is replaced", None)
    for i, disk in enumerate(disks):
        if _map(disk).get("autoDelete") is True:
            report_violation(f"attachedDisks[{i}] is auto-deleted with the instance", None)


def _covers_ssh(allow: Mapping[str, Any]) -> bool:
    protocol = str(allow.get("protocol", "")).lower()
    if protocol not in ("tcp", "6", "all"):
        return False
    ports = _list(allow.get("ports"))
    if not ports:
        return True
    for spec in ports:
        low, _, high = str(spec).partition("-")
        try:
            if int(low) <= 22 <= int(high or low):
                return True
        except ValueError:
            return True  # an unreadable port spec is treated as open
    return False


@_only(FIREWALL)
def ssh_only_from_allowed_ranges(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Firewall rules open tcp:22 only from allowed ranges (by default Google's IAP range only)."""
    props = args.props
    if str(props.get("direction") or "INGRESS").upper() != "INGRESS" or props.get("disabled") is True:
        return
    if not any(_covers_ssh(_map(a)) for a in _list(props.get("allows"))):
        return
    allowed_config = _list(args.get_config().get("allowedSshSourceRanges")) or [IAP_RANGE]
    allowed = [ipaddress.ip_network(str(r), strict=False) for r in allowed_config]
    ranges = _list(props.get("sourceRanges"))
    if not ranges:
        if not (_list(props.get("sourceTags")) or _list(props.get("sourceServiceAccounts"))):
            report_violation("the rule opens tcp:22 without sourceRanges, which means from anywhere", None)
        return
    for source in ranges:
        try:
            net = ipaddress.ip_network(str(source), strict=False)
        except ValueError:
            report_violation(f"sourceRanges entry {source!r} is not a CIDR range", None)
            continue
        if not any(net.version == a.version and net.subnet_of(a) for a in allowed):  # type: ignore[arg-type]
            report_violation(f"tcp:22 is open from {source}, outside the allowed ranges "
                             f"{', '.join(map(str, allowed))}", None)


@_only(WORKSTATION_CONFIG)
def workstation_private(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Workstation VMs have no public IP and are Shielded VMs."""
    gce = _map(_map(args.props.get("host")).get("gceInstance"))
    if gce.get("disablePublicIpAddresses") is not True:
        report_violation("host.gceInstance.disablePublicIpAddresses must be true", None)
    shielded = _map(gce.get("shieldedInstanceConfig"))
    off = [key for key in SHIELDED_KEYS if shielded.get(key) is not True]
    if off:
        report_violation(f"host.gceInstance.shieldedInstanceConfig must turn on {', '.join(off)}", None)


RULES: dict[str, Validation] = {
    "offload-no-external-ip": no_external_ip,
    "offload-ssh-only-from-allowed-ranges": ssh_only_from_allowed_ranges,
    "offload-shielded-vm": shielded_vm,
    "offload-os-login": os_login,
    "offload-dedicated-service-account": dedicated_service_account,
    "offload-data-disk-kept": data_disk_kept,
    "offload-workstation-private": workstation_private,
}

SSH_RANGES_SCHEMA = PolicyConfigSchema(properties={"allowedSshSourceRanges": {
    "type": "array", "items": {"type": "string"},
    "description": "CIDR ranges tcp:22 may be opened from. Default: [35.235.240.0/20], Google's IAP range. "
                   "A stack with offload:sshSourceRanges lists those ranges here too.",
}})


def policies(enforcement_level: EnforcementLevel = EnforcementLevel.MANDATORY) -> list[ResourceValidationPolicy]:
    """The pack's policies, one per rule."""
    return [ResourceValidationPolicy(name=name, description=rule.__doc__ or name, validate=rule,
                                     enforcement_level=enforcement_level,
                                     config_schema=SSH_RANGES_SCHEMA if rule is ssh_only_from_allowed_ranges
                                     else None)
            for name, rule in RULES.items()]
