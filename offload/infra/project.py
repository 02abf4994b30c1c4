"""The APIs a stack needs in its project, enabled before anything that uses them.

A fresh project has none of them on, and the first resource that needs one would fail. They are left enabled
when the stack is destroyed (`disable_on_destroy=False`): other stacks of the team, and anything else in the
project, may use them too.

Service Usage and Cloud Resource Manager are not among them: enabling any service goes through the first, and the
provider reads the project through the second before it enables anything, so they must be on before `pulumi up`
(step 0, `offload.deploy.BOOTSTRAP_APIS`, which `offload doctor` checks and prints the command for).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_gcp as gcp

from offload.deploy import BOOTSTRAP_APIS, GCE_APIS, WORKSTATION_APIS

__all__ = ["BOOTSTRAP_APIS", "GCE_APIS", "WORKSTATION_APIS", "ProjectServices", "depends_on_of"]


class ProjectServices(pulumi.ComponentResource):
    """One `gcp.projects.Service` per API; `resources` is what the rest of the stack depends on."""

    resources: list[pulumi.Resource]

    def __init__(self, name: str, project: str, apis: Sequence[str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:ProjectServices", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.resources = [
            gcp.projects.Service(f"{name}-{api.split('.', 1)[0]}", project=project, service=api,
                                 disable_on_destroy=False, disable_dependent_services=False, opts=child)
            for api in apis]
        self.register_outputs({"project": project, "services": list(apis)})


def depends_on_of(opts: pulumi.ResourceOptions | None) -> list[pulumi.Resource]:
    """The resources OPTS says to wait for, as a list its children can wait for too (a component's depends_on
    is not inherited by the resources it creates)."""
    found = opts.depends_on if opts is not None else None
    if found is None:
        return []
    return list(found) if isinstance(found, (list, tuple)) else [found]  # type: ignore[list-item]
