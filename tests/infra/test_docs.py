"""The README's "first `pulumi up` in a fresh project" names what the program really enables and grants."""

from __future__ import annotations

from offload.infra.access import INSTANCE_PERMISSIONS, PROJECT_PERMISSIONS
from offload.infra.project import WORKSTATION_APIS
from tests.infra.mocks import REPO


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:end if end != -1 else None]


def test_the_fresh_project_section_names_every_api_permission_and_quota() -> None:
    section = _section((REPO / "README.md").read_text(), "## The first `pulumi up` in a fresh project")
    for api in WORKSTATION_APIS:
        assert f"`{api.split('.', 1)[0]}`" in section, api
    for permission in (*INSTANCE_PERMISSIONS, *PROJECT_PERMISSIONS):
        assert permission.rsplit(".", 1)[-1] in section, permission
    for words in ("roles/iam.roleAdmin", "roles/serviceusage.serviceUsageAdmin", "CPUS", "NETWORKS",
                  "IN_USE_ADDRESSES", "### Shared VPC", "roles/compute.securityAdmin", "### Data disks",
                  "### The worker image", "sha256"):
        assert words in section, words
