"""The policy pack's rules: each flags what breaks the baseline, and the program's own resources pass them all."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pulumi_policy import PolicyPack, ResourceValidationPolicy
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from tests.infra.conftest import STACK_FILES
from tests.infra.mocks import FIREWALL, INSTANCE, REPO, run_program, stack_config

sys.path.insert(0, str(REPO / "policy"))
import offload_policies as rules  # noqa: E402  (the pack's directory is not a package)

WORKSTATION_CONFIG = "gcp:workstations/workstationConfig:WorkstationConfig"
GOOD_INSTANCE: dict[str, Any] = {
    "networkInterfaces": [{"subnetwork": "projects/p/regions/r/subnetworks/s"}],
    "shieldedInstanceConfig": {"enableSecureBoot": True, "enableVtpm": True, "enableIntegrityMonitoring": True},
    "metadata": {"enable-oslogin": "TRUE"},
    "serviceAccount": {"email": "offload-dev-sa@p.iam.gserviceaccount.com",
                       "scopes": ["https://www.googleapis.com/auth/logging.write"]},
    "attachedDisks": [{"source": "offload-dev-0-data", "deviceName": "offload-data"}],
    "bootDisk": {"autoDelete": True},
}
GOOD_FIREWALL: dict[str, Any] = {"direction": "INGRESS", "allows": [{"protocol": "tcp", "ports": ["22"]}],
                                 "sourceRanges": [rules.IAP_RANGE],
                                 "targetServiceAccounts": ["offload-dev-sa@p.iam.gserviceaccount.com"]}


def violations(resource_type: str, props: dict[str, Any], config: dict[str, Any] | None = None,
               only: str | None = None) -> list[str]:
    """Run every rule (or the one named ONLY) on a stand-in args object; return the messages."""
    found: list[str] = []
    args = SimpleNamespace(resource_type=resource_type, props=props, urn="urn:test", name="test",
                           get_config=lambda: config or {})
    for name, rule in rules.RULES.items():
        if only is None or name == only:
            rule(args, lambda message, urn=None, name=name: found.append(f"{name}: {message}"))
    return found


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def test_a_baseline_instance_and_firewall_pass() -> None:
    assert violations(INSTANCE, GOOD_INSTANCE) == []
    assert violations(FIREWALL, GOOD_FIREWALL) == []


def test_external_ip_is_a_violation() -> None:
    nics = [{"subnetwork": "s", "accessConfigs": [{"natIp": ""}]}]
    (message,) = violations(INSTANCE, with_changes(GOOD_INSTANCE, networkInterfaces=nics))
    assert message.startswith("offload-no-external-ip: networkInterfaces[0] has an access config")
    nics6 = [{"subnetwork": "s", "ipv6AccessConfigs": [{"networkTier": "PREMIUM"}]}]
    assert violations(INSTANCE, with_changes(GOOD_INSTANCE, networkInterfaces=nics6), only="offload-no-external-ip")


@pytest.mark.parametrize("shielded", [{}, {"enableSecureBoot": True, "enableVtpm": True},
                                      {"enableSecureBoot": False, "enableVtpm": True,
                                       "enableIntegrityMonitoring": True}])
def test_shielded_vm_must_be_fully_on(shielded: dict[str, bool]) -> None:
    (message,) = violations(INSTANCE, with_changes(GOOD_INSTANCE, shieldedInstanceConfig=shielded))
    assert message.startswith("offload-shielded-vm: shieldedInstanceConfig must turn on")


@pytest.mark.parametrize("metadata", [{}, {"enable-oslogin": "FALSE"}, {"enable-oslogin": True}])
def test_os_login_must_be_on(metadata: dict[str, Any]) -> None:
    (message,) = violations(INSTANCE, with_changes(GOOD_INSTANCE, metadata=metadata))
    assert message.startswith("offload-os-login: metadata enable-oslogin must be TRUE")
    assert violations(INSTANCE, with_changes(GOOD_INSTANCE, metadata={"enable-oslogin": "true"})) == []


def test_service_account_must_be_dedicated_and_narrow() -> None:
    default = {"email": "123-compute@developer.gserviceaccount.com", "scopes": []}
    (message,) = violations(INSTANCE, with_changes(GOOD_INSTANCE, serviceAccount=default))
    assert "is the default compute service account" in message
    broad = {"email": "w@p.iam.gserviceaccount.com", "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
    (message,) = violations(INSTANCE, with_changes(GOOD_INSTANCE, serviceAccount=broad))
    assert "must not include cloud-platform" in message
    missing = {k: v for k, v in GOOD_INSTANCE.items() if k != "serviceAccount"}
    (message,) = violations(INSTANCE, missing)
    assert message.startswith("offload-dedicated-service-account: the instance needs a dedicated serviceAccount")
    (message,) = violations(INSTANCE, with_changes(GOOD_INSTANCE, serviceAccount={"scopes": []}))
    assert "must name a dedicated service account" in message


def test_service_account_email_unknown_in_preview_is_not_a_violation() -> None:
    props = unknown_checking_proxy(with_changes(GOOD_INSTANCE, serviceAccount={
        "email": UNKNOWN_STRING_VALUE, "scopes": ["https://www.googleapis.com/auth/logging.write"]}))
    assert violations(INSTANCE, props) == []  # type: ignore[arg-type]


def test_data_disk_must_be_attached_and_kept() -> None:
    (message,) = violations(INSTANCE, with_changes(GOOD_INSTANCE, attachedDisks=[]))
    assert message.startswith("offload-data-disk-kept: the instance has no attached data disk")
    disks = [{"source": "d", "autoDelete": True}]
    (message,) = violations(INSTANCE, with_changes(GOOD_INSTANCE, attachedDisks=disks))
    assert "attachedDisks[0] is auto-deleted" in message


@pytest.mark.parametrize("allows", [
    [{"protocol": "tcp", "ports": ["22"]}],
    [{"protocol": "tcp", "ports": ["20-30"]}],
    [{"protocol": "tcp"}],
    [{"protocol": "all"}],
    [{"protocol": "udp", "ports": ["53"]}, {"protocol": "tcp", "ports": ["80", "22"]}],
])
def test_ssh_from_the_internet_is_a_violation(allows: list[dict[str, Any]]) -> None:
    props = with_changes(GOOD_FIREWALL, allows=allows, sourceRanges=["0.0.0.0/0"])
    (message,) = violations(FIREWALL, props)
    assert message == ("offload-ssh-only-from-allowed-ranges: tcp:22 is open from 0.0.0.0/0, outside the allowed "
                       "ranges 35.235.240.0/20")


def test_firewalls_that_do_not_open_ssh_are_left_alone() -> None:
    for props in (with_changes(GOOD_FIREWALL, allows=[{"protocol": "tcp", "ports": ["443", "8000-8080"]}],
                               sourceRanges=["0.0.0.0/0"]),
                  with_changes(GOOD_FIREWALL, direction="EGRESS", sourceRanges=["0.0.0.0/0"]),
                  with_changes(GOOD_FIREWALL, disabled=True, sourceRanges=["0.0.0.0/0"])):
        assert violations(FIREWALL, props) == []


def test_ssh_without_source_ranges_means_from_anywhere() -> None:
    props = {k: v for k, v in GOOD_FIREWALL.items() if k != "sourceRanges"}
    (message,) = violations(FIREWALL, props)
    assert "without sourceRanges" in message
    assert violations(FIREWALL, with_changes(props, sourceTags=["bastion"])) == []


def test_extra_ssh_ranges_pass_only_when_the_policy_config_allows_them() -> None:
    props = with_changes(GOOD_FIREWALL, sourceRanges=[rules.IAP_RANGE, "10.8.0.0/16"])
    (message,) = violations(FIREWALL, props)
    assert "10.8.0.0/16" in message
    config = {"allowedSshSourceRanges": [rules.IAP_RANGE, "10.0.0.0/8"]}
    assert violations(FIREWALL, props, config) == []
    assert violations(FIREWALL, with_changes(GOOD_FIREWALL, sourceRanges=["35.235.240.0/24"])) == []


def test_workstation_config_must_be_private_and_shielded() -> None:
    good = {"host": {"gceInstance": {"disablePublicIpAddresses": True, "shieldedInstanceConfig": {
        "enableSecureBoot": True, "enableVtpm": True, "enableIntegrityMonitoring": True}}}}
    assert violations(WORKSTATION_CONFIG, good) == []
    public = {"host": {"gceInstance": {**good["host"]["gceInstance"], "disablePublicIpAddresses": False}}}
    (message,) = violations(WORKSTATION_CONFIG, public)
    assert message == "offload-workstation-private: host.gceInstance.disablePublicIpAddresses must be true"


def test_rules_ignore_other_resource_types() -> None:
    assert violations("gcp:compute/disk:Disk", {"sourceRanges": ["0.0.0.0/0"]}) == []


def test_the_pack_declares_one_policy_per_rule() -> None:
    policies = rules.policies()
    assert [p.name for p in policies] == list(rules.RULES)
    assert all(isinstance(p, ResourceValidationPolicy) and p.description for p in policies)
    main = (REPO / "policy" / "__main__.py").read_text()
    assert "PolicyPack(" in main and PolicyPack  # the entry point builds the pack from these policies



def test_the_pack_brings_its_own_virtualenv() -> None:
    import yaml

    project = yaml.safe_load((REPO / "policy" / "PulumiPolicy.yaml").read_text())
    # `pulumi preview --policy-pack policy` makes this virtualenv from requirements.txt; without it the pack
    # would need pulumi-policy in whatever python is first on PATH.
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}
    assert "pulumi-policy" in (REPO / "policy" / "requirements.txt").read_text()
    assert "policy/venv/" in (REPO / ".gitignore").read_text().splitlines()


def policy_config(path: Path) -> dict[str, Any]:
    """The policy config of example stack PATH, as `--policy-pack-config policy/config/<stack>.json` passes it."""
    import json

    stack = path.name.split(".")[1]
    return json.loads((REPO / "policy" / "config" / f"{stack}.json").read_text())


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_example_stack_passes_the_pack_with_its_config_file(path: Path) -> None:
    config = stack_config(path)
    run = run_program(config)
    pack_config = policy_config(path)
    assert set(pack_config) <= set(rules.RULES)
    allowed = pack_config["offload-ssh-only-from-allowed-ranges"]
    assert allowed["allowedSshSourceRanges"] == [rules.IAP_RANGE, *config.get("offload:sshSourceRanges", [])]
    for declared in run.declared:
        assert violations(declared.typ, declared.inputs, allowed) == [], declared.name


def test_a_stack_with_extra_ssh_ranges_needs_them_in_the_policy_config() -> None:
    run = run_program({"offload:provider": "gce-linux", "offload:developer": "dev@example.com",
                       "gcp:project": "p-offload", "gcp:zone": "us-west1-a",
                       "offload:sshSourceRanges": ["10.8.0.0/16"]})
    firewall = run.one(FIREWALL)
    assert violations(FIREWALL, firewall.inputs) != []
