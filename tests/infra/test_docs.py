"""The README's "first `pulumi up` in a fresh project" names what the program really enables and grants, and what
`offload doctor` checks: one table each in offload/deploy.py."""

from __future__ import annotations

import re

from offload.deploy import (BOOTSTRAP_APIS, DEPLOY_ROLES, REGISTRY_PERMISSIONS, REGISTRY_ROLE, enable_command,
                            quota_needs)
from offload.infra.access import INSTANCE_PERMISSIONS, PROJECT_PERMISSIONS
from offload.infra.project import GCE_APIS, WORKSTATION_APIS
from tests.infra.mocks import REPO


def _section(text: str, title: str) -> str:
    """The section under heading TITLE, up to the next `## ` heading, with its whitespace runs made one space."""
    start = text.index(f"\n{title}\n")
    end = text.find("\n## ", start + len(title) + 2)
    return " ".join(text[start:end if end != -1 else None].split())


def _quoted(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


README = (REPO / "README.md").read_text()
SECTION = _section(README, "## The first `pulumi up` in a fresh project")


def test_the_section_lists_the_apis_the_program_enables() -> None:
    gce = [api.split(".", 1)[0] for api in GCE_APIS]
    (workstation,) = [api.split(".", 1)[0] for api in WORKSTATION_APIS if api not in GCE_APIS]
    assert f"{_quoted(gce)}, and `{workstation}` for a `workstation` stack" in SECTION


def test_the_section_lists_the_permissions_of_the_two_custom_roles() -> None:
    # The instance role's permissions share their prefix: the first is written whole, the others by their last part.
    first, *rest = INSTANCE_PERMISSIONS
    instance = _quoted([first, *(p.rsplit(".", 1)[-1] for p in rest)])
    assert f"`<prefix>_worker` role ({instance}) on each of their instances" in SECTION
    assert f"`<prefix>_fleet` role ({_quoted(list(PROJECT_PERMISSIONS))}) on the project" in SECTION


def test_the_section_names_the_deployers_roles_the_quotas_and_its_subsections() -> None:
    for role in ("roles/serviceusage.serviceUsageAdmin", "roles/compute.admin", "roles/iam.roleAdmin",
                 "roles/resourcemanager.projectIamAdmin", "roles/iap.admin", "roles/compute.securityAdmin"):
        assert f"`{role}`" in SECTION, role
    for need in quota_needs(workers=1, vcpus=4, disk_gb=130, own_network=True):
        assert f"`{need.metric}`" in SECTION, need.metric
    for heading in ("### Many developers, one network", "### Shared VPC", "### Data disks", "### The worker image"):
        assert f" {heading} " in SECTION, heading
    assert "pin it by digest in the stack (`.../offload-worker@sha256:...`" in SECTION


def test_step_0_is_the_command_doctor_prints_and_the_stack_enables_neither_api() -> None:
    assert enable_command(BOOTSTRAP_APIS, "PROJECT") in SECTION
    assert not set(BOOTSTRAP_APIS) & set(WORKSTATION_APIS)


def test_the_deployers_roles_are_the_table_doctor_checks() -> None:
    """The bulleted list under "Who runs `pulumi up`" is DEPLOY_ROLES, in order, each with its purpose."""
    start = README.index("**Who runs `pulumi up`**")
    listed = re.findall(r"^- `(roles/[^`]+)`: (.+)$", README[start:README.index("\n\n", README.index("\n- ", start))
                                                              ], re.M)
    assert listed == [(r.role, r.purpose) for r in DEPLOY_ROLES]


def test_the_registry_role_is_one_that_can_set_iam() -> None:
    assert f"`{REGISTRY_ROLE}` on its repository" in SECTION
    assert all(f"`{p}`" in SECTION for p in REGISTRY_PERMISSIONS)
    assert "`roles/artifactregistry.repoAdmin` on its repository" not in SECTION
