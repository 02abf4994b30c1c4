"""What a GCP stack needs of its project (offload/deploy.py): vCPUs and quota metrics from a machine type, and the
quotas a stack uses with its own network or a shared one."""

from __future__ import annotations

import pytest

from offload.cli.doctor import project_plan
from offload.deploy import (BOOTSTRAP_APIS, DEPLOY_ROLES, GCE_APIS, WORKSTATION_APIS, QuotaNeed, QuotaScope,
                            cpu_metric, deploy_roles, enable_command, machine_vcpus, quota_needs)
from offload.stackconfig import read_stack_config


@pytest.mark.parametrize("machine_type,vcpus,metric", [
    ("e2-standard-4", 4, "CPUS"), ("e2-medium", 2, "CPUS"), ("n1-highmem-16", 16, "CPUS"),
    ("n2-standard-8", 8, "N2_CPUS"), ("n2d-highcpu-32", 32, "N2D_CPUS"), ("c3-standard-22-lssd", 22, "C3_CPUS"),
    ("e2-custom-6-16384", 6, "CPUS"), ("a3-megagpu", None, "A3_CPUS"),
])
def test_vcpus_and_the_regional_quota_they_count_against(machine_type: str, vcpus: int | None, metric: str) -> None:
    assert machine_vcpus(machine_type) == vcpus
    assert cpu_metric(machine_type) == metric


def test_a_stack_with_its_own_network_needs_a_network_an_address_and_a_firewall_rule() -> None:
    assert quota_needs(workers=3, vcpus=4, disk_gb=130, own_network=True) == (
        QuotaNeed("CPUS", QuotaScope.REGION, 12), QuotaNeed("CPUS_ALL_REGIONS", QuotaScope.PROJECT, 12),
        QuotaNeed("SSD_TOTAL_GB", QuotaScope.REGION, 390), QuotaNeed("NETWORKS", QuotaScope.PROJECT, 1),
        QuotaNeed("IN_USE_ADDRESSES", QuotaScope.REGION, 1), QuotaNeed("FIREWALLS", QuotaScope.PROJECT, 1))


def test_a_stack_on_a_shared_network_plans_its_own_firewall_rule_only() -> None:
    config = read_stack_config({"offload:provider": "gce-linux", "offload:developer": "dev@example.com",
                                "gcp:project": "p", "gcp:zone": "europe-west4-b", "offload:workers": 2,
                                "offload:machineType": "n2-standard-8", "offload:dataDiskGb": 200,
                                "offload:network": "shared", "offload:subnetwork": "shared-sub"})
    plan = project_plan(config)
    assert (plan.project, plan.region, plan.apis) == ("p", "europe-west4", GCE_APIS)
    assert plan.quotas == (QuotaNeed("N2_CPUS", QuotaScope.REGION, 16),
                           QuotaNeed("CPUS_ALL_REGIONS", QuotaScope.PROJECT, 16),
                           QuotaNeed("SSD_TOTAL_GB", QuotaScope.REGION, 2 * (20 + 200)),
                           QuotaNeed("FIREWALLS", QuotaScope.PROJECT, 1))
    assert plan.roles == tuple(r for r in DEPLOY_ROLES if not r.workstation_only)


def test_a_workstation_stack_needs_the_workstations_api_and_role() -> None:
    assert deploy_roles(True) == DEPLOY_ROLES and deploy_roles(True)[-1].role == "roles/workstations.admin"
    assert WORKSTATION_APIS[-1] == "workstations.googleapis.com"
    assert enable_command(BOOTSTRAP_APIS, "p") == (
        "gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com --project p")
