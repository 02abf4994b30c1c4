"""`offload outputs`: the stack outputs the other commands would use, as JSON, and the schema they follow."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from offload.cli.common import OutputsOpt, StackOpt, resolve_outputs
from offload.outputs import SCHEMA_PATH


app = typer.Typer()


@app.command("outputs", epilog="Exit codes: 0 ok, 2 the stack or outputs file is invalid, 6 the pulumi CLI is "
                                "missing (for a stack that needs it).")
def outputs(stack: StackOpt = None, outputs: OutputsOpt = None,
            schema: Annotated[bool, typer.Option("--schema", help="Print the JSON Schema of the stack outputs "
                                                 "instead.")] = False) -> None:
    """Print the stack outputs as JSON: from --outputs, OFFLOAD_OUTPUTS, --stack or OFFLOAD_STACK (an ssh or local
    stack straight from its stack file, without Pulumi), else the built-in local worker.

    The output is itself a valid --outputs file.
    """
    if schema:
        typer.echo(SCHEMA_PATH.read_text(), nl=False)
        return
    typer.echo(json.dumps(resolve_outputs(outputs, stack).to_dict(), indent=2))
