"""Options shared by commands, and the one place that decides where the stack outputs come from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from offload.outputs import StackOutputs, local_outputs

StackOpt = Annotated[Optional[str], typer.Option("--stack", help="Pulumi stack whose outputs name the workers "
                                                 "(env OFFLOAD_STACK).", show_default=False)]
OutputsOpt = Annotated[Optional[Path], typer.Option("--outputs", help="Stack outputs JSON file "
                                                    "(env OFFLOAD_OUTPUTS).", show_default=False)]
WorkerOpt = Annotated[Optional[str], typer.Option("--worker", "-w", help="Worker name (default: picked for you).",
                                                  show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
IdentityOpt = Annotated[Optional[Path], typer.Option("--identity", "-i", help="SSH private key "
                                                     "(env OFFLOAD_SSH_KEY; else ssh-agent or ~/.ssh/config).",
                                                     show_default=False)]


def resolve_outputs(outputs: Path | None, stack: str | None) -> StackOutputs:
    """--outputs FILE, then OFFLOAD_OUTPUTS, then --stack/OFFLOAD_STACK, and last the built-in local worker."""
    path = outputs or (Path(os.environ["OFFLOAD_OUTPUTS"]) if os.environ.get("OFFLOAD_OUTPUTS") else None)
    if path is not None:
        return StackOutputs.load(path)
    name = stack or os.environ.get("OFFLOAD_STACK")
    if name:
        from offload.stack import stack_outputs

        return StackOutputs.from_dict(stack_outputs(name))
    return local_outputs()
