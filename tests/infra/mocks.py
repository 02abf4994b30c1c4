"""Run the real Pulumi program (`__main__.py`) under Pulumi mocks and collect what it declared and exported.

One Mocks class, keyed on resource type, fills in what the cloud would compute (internal IPs, emails);
everything else echoes the inputs. The inputs keep the engine's camelCase property names.
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.mocks import MockMonitor

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "__main__.py"
STACKS = REPO / "stacks"

INSTANCE = "gcp:compute/instance:Instance"
FIREWALL = "gcp:compute/firewall:Firewall"
DISK = "gcp:compute/disk:Disk"
ACCOUNT = "gcp:serviceaccount/account:Account"


@dataclass
class Declared:
    """One resource the program registered: type, logical name, inputs, and the options the engine saw."""

    typ: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    parent: str = ""
    protect: bool = False
    delete_before_replace: bool = False
    # URNs of the resources this one waits for (its depends_on, as the engine received them).
    dependencies: list[str] = field(default_factory=list)

    @property
    def parent_type(self) -> str:
        """The type of the parent resource, read from its URN (the last '$'-separated segment)."""
        return self.parent.split("::")[2].split("$")[-1] if self.parent.count("::") >= 3 else ""


class Mocks(pulumi.runtime.Mocks):
    """Echo inputs, plus the outputs the cloud computes, keyed on resource type."""

    def __init__(self, *, echo_only: bool = False) -> None:
        self.echo_only = echo_only
        self.declared: list[Declared] = []
        self.calls: list[str] = []
        self._ips = 1

    def _instance(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self._ips += 1
        nics = [dict(n) for n in inputs.get("networkInterfaces", [])]
        nics[0]["networkIp"] = f"10.10.0.{self._ips}"
        return {"networkInterfaces": nics,
                "selfLink": f"projects/{inputs.get('project')}/zones/{inputs.get('zone')}/instances/{inputs['name']}"}

    def _account(self, inputs: dict[str, Any]) -> dict[str, Any]:
        email = f"{inputs['accountId']}@{inputs['project']}.iam.gserviceaccount.com"
        return {"email": email, "name": f"projects/{inputs['project']}/serviceAccounts/{email}"}

    COMPUTED: Mapping[str, Callable[["Mocks", dict[str, Any]], dict[str, Any]]] = {
        INSTANCE: _instance,
        ACCOUNT: _account,
    }

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        self.declared.append(Declared(args.typ, args.name, inputs, bool(args.custom)))
        state = dict(inputs)
        compute = None if self.echo_only else self.COMPUTED.get(args.typ)
        if compute:
            state.update(compute(self, inputs))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        # The program must work without provider calls (previews, and tests like these); record any.
        self.calls.append(args.token)
        return {}, None


class RecordingMonitor(MockMonitor):
    """The mock monitor, also noting each resource's parent, protect and deleteBeforeReplace options."""

    def __init__(self, mocks: "Mocks") -> None:
        super().__init__(mocks)
        self.recording = mocks

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (the gRPC method name)
        response = super().RegisterResource(request)
        for declared in reversed(self.recording.declared):
            if declared.typ == request.type and declared.name == request.name:
                declared.parent = request.parent
                declared.protect = bool(request.protect)
                declared.delete_before_replace = bool(request.deleteBeforeReplace)
                declared.dependencies = list(request.dependencies)
                break
        return response


@dataclass
class Run:
    """What one program run declared and exported."""

    outputs: dict[str, Any]
    mocks: Mocks
    declared: list[Declared] = field(default_factory=list)

    def of_type(self, typ: str) -> list[Declared]:
        return [d for d in self.declared if d.typ == typ]

    def one(self, typ: str) -> Declared:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[d.name for d in found]}"
        return found[0]

    @property
    def types(self) -> set[str]:
        return {d.typ for d in self.declared}

    def waits_for(self, resource: Declared) -> set[str]:
        """The types and names of what RESOURCE depends on, as 'type::name' strings."""
        return {"::".join(urn.split("::")[-2:]).rsplit("$", 1)[-1] for urn in resource.dependencies}


def pulumi_config(values: Mapping[str, Any]) -> dict[str, str]:
    """Config as the engine hands it to a program: strings, with structured values JSON-encoded."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def stack_config(stack_file: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(stack_file.read_text())["config"])


def run_program(config: Mapping[str, Any], *, stack: str = "test", preview: bool = False,
                echo_only: bool = False, inline: Callable[[], None] | None = None) -> Run:
    """Run __main__.py (or INLINE, a program function as the Automation API runs it) with CONFIG under fresh
    mocks; returns the resolved exports and declared resources."""
    set_all_config(pulumi_config(config))
    settings.set_root_resource(None)  # type: ignore[arg-type]
    mocks = Mocks(echo_only=echo_only)
    pulumi.runtime.set_mocks(mocks, project="offload", stack=stack, preview=preview,
                             monitor=RecordingMonitor(mocks))  # type: ignore[arg-type]
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        if inline is not None:
            inline()
        else:
            runpy.run_path(str(PROGRAM), run_name="__main__")
        root = settings.get_root_resource()
        return pulumi.Output.all(**root.outputs).apply(outputs.update)  # type: ignore[union-attr]

    program()
    return Run(outputs, mocks, mocks.declared)
