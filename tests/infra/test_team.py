"""A team of 100 in one project, under Pulumi mocks: names apart, one network and one SSH rule, and no grant that
reaches another developer's instance (found by walking the declared bindings; tests/infra/team.py)."""

from __future__ import annotations

import pulumi_gcp as gcp
import pytest

from offload.infra.access import OS_ADMIN_LOGIN_ROLE
from offload.stackconfig import StackConfig
from tests.infra.mocks import INSTANCE
from tests.infra.team import DEFAULT_QUOTAS, PROJECT, ZONE, Simulation, simulate


@pytest.fixture(scope="module")
def team() -> Simulation:
    return simulate(100)


def test_a_hundred_stacks_name_nothing_alike(team: Simulation) -> None:
    assert team.duplicate_names() == {}
    assert len({d.inputs["name"] for d in team.of_type(INSTANCE)}) == 100


def test_a_team_uses_one_network_router_nat_address_and_ssh_rule(team: Simulation) -> None:
    used = team.consumption()
    assert {k: used[k] for k in ("networks", "firewall rules", "routers", "NAT addresses")} == {
        "networks": 1, "firewall rules": 1, "routers": 1, "NAT addresses": 1}
    assert (used["service accounts"], used["custom roles"], used["CPUs"]) == (100, 200, 400)
    # What a team of 100 still has to ask for, against a new project's defaults.
    assert [k for k in DEFAULT_QUOTAS if used[k] > DEFAULT_QUOTAS[k]] == ["CPUs"]


def test_no_binding_gives_a_developer_anything_on_another_developers_instance(team: Simulation) -> None:
    reach = team.reach()
    assert team.problems == []
    assert team.cross_grants() == []
    # The walk does find each developer's own reach: tunnel, OS Login, the worker role and actAs.
    own = reach[("user:dev0042@example.com", f"{team.configs[42].name_prefix}-0")]
    assert {"iap.tunnelInstances.accessViaIAP", "compute.instances.osAdminLogin", "compute.instances.start",
            "compute.instances.getGuestAttributes", "iam.serviceAccounts.actAs"} <= own
    # What every developer holds on the project as a whole: listing instances and following operations.
    assert team.project_wide() == {"compute.instances.list", "compute.zoneOperations.get"}


def test_the_walk_catches_a_binding_that_reaches_another_developers_instance() -> None:
    def rogue(configs: list[StackConfig]) -> None:
        gcp.compute.InstanceIAMMember("rogue-login", project=PROJECT, zone=ZONE,
                                      instance_name=f"{configs[0].name_prefix}-0", role=OS_ADMIN_LOGIN_ROLE,
                                      member="user:dev0001@example.com")
        gcp.projects.IAMMember("rogue-admin", project=PROJECT, role="roles/compute.instanceAdmin.v1",
                               member="user:dev0002@example.com")

    sim = simulate(3, extra=rogue)
    crossing = sim.cross_grants()
    assert (f"user:dev0001@example.com has compute.instances.osAdminLogin on {sim.configs[0].name_prefix}-0 "
            "(owner dev0000_example_com)") in crossing
    assert sum("user:dev0002@example.com has roles/compute.instanceAdmin.v1" in c for c in crossing) == 2
    assert sim.problems and "roles/compute.instanceAdmin.v1" in sim.problems[0]


def test_without_a_team_every_stack_makes_its_own_network() -> None:
    alone = simulate(3, team=False)
    used = alone.consumption()
    assert (used["networks"], used["firewall rules"], used["routers"], used["NAT addresses"]) == (3, 3, 3, 3)
    assert alone.cross_grants() == [] and alone.duplicate_names() == {}
