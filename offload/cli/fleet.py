"""`offload fleet`: deploy a stack with Pulumi; stop, start and list its workers through their providers."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar

import typer

from offload.cli.common import JsonOpt, OutputsOpt, StackOpt, open_fleet, resolve_outputs
from offload.errors import OffloadError, UsageError
from offload.outputs import ProviderType, StackOutputs

app = typer.Typer(
    name="fleet",
    help="Deploy your stack's workers (up, preview, destroy) and stop, start or list them.",
    no_args_is_help=True,
)

EXIT_CODES = "Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 6 the pulumi CLI is missing."
LIVE_EXIT_CODES = "Exit codes: 0 ok, 1 failure on some worker, 2 usage or configuration error."

DeployStackOpt = Annotated[Optional[str], typer.Option("--stack", help="Pulumi stack to deploy (env OFFLOAD_STACK).",
                                                       show_default=False)]
FleetWorkerOpt = Annotated[Optional[str], typer.Option("--worker", "-w", help="Only this worker (default: all).",
                                                       show_default=False)]

T = TypeVar("T")


# -- Pulumi: up, preview, destroy --------------------------------------------------------------------------------


@app.command(epilog=EXIT_CODES)
def up(stack: DeployStackOpt = None) -> None:
    """Create or update the stack's workers with `pulumi up` (the stack file comes from `offload init`).

    Run `offload fleet preview` first to see the changes.
    """
    name = _stack_name(stack, "up")
    st = _select(name, create=True, what=f"cannot deploy stack {name!r}")
    _check_names(st, name)
    result = _run_pulumi(lambda: st.up(on_output=_echo, color=_color()), f"pulumi up failed for stack {name!r}")
    workers = result.outputs.get("workers")
    count = len(workers.value) if workers is not None and isinstance(workers.value, list) else 0
    typer.echo(f"stack {name} is up with {count} worker{'s' if count != 1 else ''}; "
               f"next: offload run --stack {name} -- COMMAND")


@app.command(epilog=EXIT_CODES)
def preview(stack: DeployStackOpt = None) -> None:
    """Show what `fleet up` would change, without changing anything."""
    name = _stack_name(stack, "preview")
    st = _select(name, create=True, what=f"cannot preview stack {name!r}")
    _check_names(st, name)
    _run_pulumi(lambda: st.preview(on_output=_echo, color=_color()), f"cannot preview stack {name!r}")


@app.command(epilog=EXIT_CODES)
def destroy(stack: DeployStackOpt = None,
            yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False) -> None:
    """Delete every resource of the stack: workers, their disks and network. Asks first unless --yes."""
    name = _stack_name(stack, "destroy")
    st = _select(name, create=False, what=f"cannot destroy stack {name!r}")
    if not yes:
        typer.confirm(f"Destroy every resource of stack {name}, including the workers' data disks?", abort=True)
    _run_pulumi(lambda: st.destroy(on_output=_echo, color=_color()), f"pulumi destroy failed for stack {name!r}")
    typer.echo(f"stack {name} is destroyed")


def _stack_name(stack: str | None, verb: str) -> str:
    name = stack or os.environ.get("OFFLOAD_STACK")
    if not name:
        raise UsageError(f"fleet {verb} needs a stack: pass --stack NAME or set OFFLOAD_STACK")
    return name


def _select(name: str, *, create: bool, what: str) -> Any:
    from offload.stack import select_stack

    return select_stack(name, create=create, what=what)


def _check_names(st: Any, name: str) -> None:
    """Refuse an update that would rename every resource of a stack deployed under offload's older names."""
    from offload.stack import check_names_kept, stack_config

    config = stack_config(name)
    if config is None:
        return
    deployed = _run_pulumi(st.outputs, f"cannot read the outputs of stack {name!r}")
    check_names_kept(name, config, {k: v.value for k, v in deployed.items()})


def _run_pulumi(call: Callable[[], T], what: str) -> T:
    from offload.stack import command_error

    try:
        return call()
    except Exception as e:
        raise command_error(e, what, kind=OffloadError) from None


def _echo(line: str) -> None:
    typer.echo(line, nl=not line.endswith("\n"))


def _color() -> str:
    return "auto" if sys.stdout.isatty() else "never"


# -- Live state: stop, start, list -------------------------------------------------------------------------------


@app.command(epilog=LIVE_EXIT_CODES)
def stop(stack: StackOpt = None, outputs: OutputsOpt = None, worker: FleetWorkerOpt = None) -> None:
    """Stop the stack's GCE instances or workstations and wait until they are off (disks and workspaces stay)."""
    _change_state(resolve_outputs(outputs, stack), worker, "stop")


@app.command(epilog=LIVE_EXIT_CODES)
def start(stack: StackOpt = None, outputs: OutputsOpt = None, worker: FleetWorkerOpt = None) -> None:
    """Start (or resume) the stack's GCE instances or workstations and wait until they run."""
    _change_state(resolve_outputs(outputs, stack), worker, "start")


@app.command("list", epilog=LIVE_EXIT_CODES)
def list_workers(stack: StackOpt = None, outputs: OutputsOpt = None, worker: FleetWorkerOpt = None,
                 as_json: JsonOpt = False) -> None:
    """List the stack's workers: provider, state, machine type and estimated hourly cost, without connecting.

    GCE states come from the Compute API and local-docker states from `docker inspect`.
    """
    from offload.cli.ui import Progress, print_json, print_table

    out = resolve_outputs(outputs, stack)
    progress = Progress(json_mode=as_json)
    with _fleet(out, worker, progress) as fleet, progress.activity("asking for the workers' state"):
        outcomes = fleet.each(lambda p: p.get_status())
    rows = [o.value.to_dict() if o.value is not None else
            {"name": o.provider.name, "provider": o.provider.kind.value, "state": "unknown",
             "machine_type": o.provider.record.machine_type, "hourly_cost_usd": o.provider.record.hourly_cost_usd,
             "error": o.error.line() if o.error else None} for o in outcomes]
    if as_json:
        print_json({"provider": out.provider.value, "workers": rows})
    else:
        print_table(None, ["NAME", "PROVIDER", "STATE", "MACHINE TYPE", "USD/HOUR"],
                    [[r["name"], r["provider"], r["state"], r["machine_type"],
                      None if r["hourly_cost_usd"] is None else f"{r['hourly_cost_usd']:.4f}"] for r in rows])
    failed = [r for r in rows if r.get("error")]
    for r in failed:
        print(f"offload: {r['name']}: {r['error']}", file=sys.stderr)
    if failed:
        raise typer.Exit(1)


def _fleet(out: StackOutputs, worker: str | None, progress: Any) -> Any:
    return open_fleet(out, worker, progress=progress.update)


def _change_state(out: StackOutputs, worker: str | None, verb: str) -> None:
    """Stop or start every selected worker at once; report each, and fail when any failed (one error as is)."""
    from offload.cli.ui import Progress

    if not (out.provider.is_gce or out.provider is ProviderType.WORKSTATION):
        hint = " (pass --stack NAME or --outputs FILE)" if out.provider is ProviderType.LOCAL else ""
        raise UsageError(f"fleet {verb} applies to GCE workers and workstations (gce-cos, gce-linux, workstation) "
                         f"only; this stack's provider is {out.provider.value}{hint}")
    progress = Progress()
    doing = {"stop": "stopping", "start": "starting"}[verb]
    with _fleet(out, worker, progress) as fleet, progress.activity(f"{doing} workers"):
        outcomes = fleet.each(lambda p: p.stop() if verb == "stop" else p.start())
    errors = [o.error for o in outcomes if o.error is not None]
    if len(outcomes) == 1 and errors:
        raise errors[0]
    for o in outcomes:
        if o.error is not None:
            print(f"offload: {o.provider.name}: {o.error.line()}", file=sys.stderr)
        else:
            typer.echo(f"{o.provider.name}: {'stopped' if verb == 'stop' else 'running'}")
    if errors:
        raise OffloadError(f"could not {verb} {len(errors)} of {len(outcomes)} workers")
