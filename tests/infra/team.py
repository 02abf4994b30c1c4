"""A team in one project, simulated under Pulumi mocks: N developer stacks built in one program run.

Every stack's config goes through the real reader (`read_stack_config`, with its own stack name) and the real
components (`offload.infra.program.build`); the mocks record what each declared. From that record alone the
simulation counts what the project consumes against its default quotas, checks that no two stacks name a resource
alike, and walks every IAM binding the stacks declared to find what each developer may do to each instance: an
instance's owner is the `owner` label its own stack put on it, and a binding reaches an instance through the
instance itself, the service account the instance runs as, or the project.

`benchmarks/bench_team.py` prints the table for N = 10, 100 and 1,000; `tests/infra/test_team.py` checks N = 100.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from offload.infra.access import IAP_TUNNEL_ROLE, OS_ADMIN_LOGIN_ROLE, SERVICE_ACCOUNT_USER_ROLE
from offload.stackconfig import StackConfig, read_stack_config, worker_labels
from tests.infra.mocks import ACCOUNT, FIREWALL, INSTANCE, Declared, run_program

PROJECT = "team-project"
ZONE = "us-west1-a"
TEAM_NETWORK = f"projects/{PROJECT}/global/networks/offload-team"
TEAM_SUBNETWORK = f"projects/{PROJECT}/regions/us-west1/subnetworks/offload-team"

NETWORK = "gcp:compute/network:Network"
ROUTER = "gcp:compute/router:Router"
NAT = "gcp:compute/routerNat:RouterNat"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
INSTANCE_IAM = "gcp:compute/instanceIAMMember:InstanceIAMMember"
TUNNEL_IAM = "gcp:iap/tunnelInstanceIAMMember:TunnelInstanceIAMMember"
ACCOUNT_IAM = "gcp:serviceaccount/iAMMember:IAMMember"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"

# Typical defaults of a new project (regional ones for the workers' region); `gcloud compute project-info describe`
# and `gcloud compute regions describe REGION` show a project's own. Service accounts and custom roles are IAM's.
DEFAULT_QUOTAS = {"networks": 15, "firewall rules": 100, "routers": 10, "NAT addresses": 8,
                  "service accounts": 100, "custom roles": 300, "CPUs": 24}
# What one NAT address carries: 64,512 source ports, at Cloud NAT's default of 64 ports a VM.
VMS_PER_NAT_ADDRESS = 64512 // 64
# The permissions of the predefined roles the program grants to developers, as far as they act on an instance.
PREDEFINED = {IAP_TUNNEL_ROLE: {"iap.tunnelInstances.accessViaIAP"},
              OS_ADMIN_LOGIN_ROLE: {"compute.instances.osAdminLogin", "compute.instances.osLogin"},
              SERVICE_ACCOUNT_USER_ROLE: {"iam.serviceAccounts.actAs"}}
# Granted on the project and not about any one instance's content: listing names and following operations.
PROJECT_ONLY = {"compute.instances.list", "compute.zoneOperations.get"}


def developer(i: int) -> str:
    return f"dev{i:04d}@example.com"


def team_config(i: int, *, team: bool = True, provider: str = "gce-cos") -> StackConfig:
    """Developer I's stack, as its stack file would say it, read by the real reader under its own stack name."""
    values: dict[str, Any] = {"offload:provider": provider, "offload:developer": developer(i),
                              "gcp:project": PROJECT, "gcp:zone": ZONE}
    if team:
        values.update({"offload:team": "core", "offload:network": TEAM_NETWORK,
                       "offload:subnetwork": TEAM_SUBNETWORK})
    return read_stack_config(values, f"dev{i:04d}")


@dataclass
class Simulation:
    """What N stacks declared, and what follows from it."""

    n: int
    team: bool
    declared: list[Declared]
    configs: list[StackConfig]
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def of_type(self, typ: str) -> list[Declared]:
        return [d for d in self.declared if d.typ == typ]

    # -- counts ----------------------------------------------------------------------------------------------

    @property
    def per_stack(self) -> float:
        return sum(1 for d in self.declared if d.custom) / self.n

    def consumption(self) -> dict[str, int]:
        """What the project uses of each default quota. A team's shared network, router, NAT and one SSH rule are
        made once, outside the stacks (README, "A team in one project"), and counted here as such."""
        instances = self.of_type(INSTANCE)
        shared = 1 if self.team else 0
        # A stack's own NAT serves its few VMs with one address; the team's serves all of them.
        nat = math.ceil(len(instances) / VMS_PER_NAT_ADDRESS) if self.team else len(self.of_type(NAT))
        return {"networks": len(self.of_type(NETWORK)) + shared,
                "firewall rules": len(self.of_type(FIREWALL)) + shared,
                "routers": len(self.of_type(ROUTER)) + shared,
                "NAT addresses": nat,
                "service accounts": len(self.of_type(ACCOUNT)),
                "custom roles": len(self.of_type(CUSTOM_ROLE)),
                "CPUs": sum(_cpus(d.inputs.get("machineType", "")) for d in instances)}

    # -- names -----------------------------------------------------------------------------------------------

    def duplicate_names(self) -> dict[str, list[str]]:
        """Names given twice, by kind: GCE names of instances, disks, networks and firewall rules, account ids,
        role ids, workstation ids, and the logical names (URNs) of everything."""
        kinds: dict[str, Counter[str]] = defaultdict(Counter)
        for d in self.declared:
            kinds["logical " + d.typ][d.name] += 1
            if not d.custom:
                continue
            for key in ("name", "accountId", "roleId", "workstationId", "workstationClusterId",
                        "workstationConfigId"):
                value = d.inputs.get(key)
                if isinstance(value, str) and d.typ not in (PROJECT_IAM, ACCOUNT_IAM):
                    kinds[f"{d.typ} {key}"][value] += 1
        return {kind: sorted(n for n, c in counts.items() if c > 1) for kind, counts in kinds.items()
                if any(c > 1 for c in counts.values())}

    # -- IAM -------------------------------------------------------------------------------------------------

    def reach(self) -> dict[tuple[str, str], set[str]]:
        """(member, instance) -> the instance-acting permissions the declared bindings give MEMBER on INSTANCE."""
        roles = {f"projects/{d.inputs['project']}/roles/{d.inputs['roleId']}": set(d.inputs["permissions"])
                 for d in self.of_type(CUSTOM_ROLE)}
        instances = {d.inputs["name"]: d for d in self.of_type(INSTANCE)}
        runs_as = defaultdict(set)
        for name, inst in instances.items():
            runs_as[f"projects/{inst.inputs['project']}/serviceAccounts/{inst.inputs['serviceAccount']['email']}"].add(name)
        found: dict[tuple[str, str], set[str]] = defaultdict(set)

        def permissions(role: str, where: str) -> set[str]:
            if role in roles:
                return roles[role]
            if role in PREDEFINED:
                return PREDEFINED[role]
            self.problems.append(f"{where}: role {role} is neither declared nor known to the walk")
            return {role}

        for d in self.of_type(INSTANCE_IAM):
            found[(d.inputs["member"], d.inputs["instanceName"])] |= permissions(d.inputs["role"], d.name)
        for d in self.of_type(TUNNEL_IAM):
            found[(d.inputs["member"], d.inputs["instance"])] |= permissions(d.inputs["role"], d.name)
        for d in self.of_type(ACCOUNT_IAM):
            for name in runs_as.get(d.inputs["serviceAccountId"], ()):
                found[(d.inputs["member"], name)] |= permissions(d.inputs["role"], d.name)
        for d in self.of_type(PROJECT_IAM):
            if not d.inputs["member"].startswith("user:"):
                continue  # the workers' own accounts: log and metric writers
            acting = permissions(d.inputs["role"], d.name) - PROJECT_ONLY
            for name in instances:
                found[(d.inputs["member"], name)] |= acting
        return {k: v for k, v in found.items() if v}

    def cross_grants(self) -> list[str]:
        """Every (developer, permission, instance) where the instance is another developer's."""
        owners = {d.inputs["name"]: d.inputs["labels"]["owner"] for d in self.of_type(INSTANCE)}
        label_of = {c.developer: worker_labels(c.developer)["owner"] for c in self.configs}
        out = []
        for (member, instance), perms in sorted(self.reach().items()):
            who = member.removeprefix("user:")
            if label_of.get(who) != owners[instance]:
                out += [f"{member} has {p} on {instance} (owner {owners[instance]})" for p in sorted(perms)]
        return out

    def project_wide(self) -> set[str]:
        """Permissions each developer holds on the project as a whole (and so over every instance's listing)."""
        roles = {f"projects/{d.inputs['project']}/roles/{d.inputs['roleId']}": set(d.inputs["permissions"])
                 for d in self.of_type(CUSTOM_ROLE)}
        return {p for d in self.of_type(PROJECT_IAM) if d.inputs["member"].startswith("user:")
                for p in roles.get(d.inputs["role"], {d.inputs["role"]})}


def _cpus(machine_type: str) -> int:
    """vCPUs of a predefined machine type (`e2-standard-4` -> 4; shared-core e2-micro/small/medium -> 2)."""
    last = machine_type.rsplit("-", 1)[-1]
    return int(last) if last.isdigit() else 2


def simulate(n: int, *, team: bool = True, provider: str = "gce-linux",
             extra: Callable[[list[StackConfig]], None] | None = None) -> Simulation:
    """Build N developers' stacks in one program run under the mocks (and EXTRA's resources, a test's own).
    `gce-linux` and `gce-cos` declare the same resources and grants; gce-cos only renders more user-data per stack,
    which makes the simulation slower, not different."""
    import time

    from offload.infra.program import build

    configs = [team_config(i, team=team, provider=provider) for i in range(n)]

    def program() -> None:
        for config in configs:
            build(config)
        if extra is not None:
            extra(configs)

    started = time.perf_counter()
    # The config the engine holds is only read by load_stack_config, which `build` does not call.
    run = run_program({"offload:provider": provider, "offload:developer": developer(0), "gcp:project": PROJECT,
                       "gcp:zone": ZONE}, inline=program)
    return Simulation(n, team, run.declared, configs, time.perf_counter() - started)
