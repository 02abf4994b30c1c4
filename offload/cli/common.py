"""Options shared by commands, the one place that decides where the stack outputs come from, the job service
every job command goes through, and what a command tells the error boundary about its exit code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from offload.errors import UsageError
from offload.outputs import StackOutputs, local_outputs

if TYPE_CHECKING:
    from offload.jobs.fleet import Fleet, Meters
    from offload.jobs.service import JobService

StackOpt = Annotated[Optional[str], typer.Option("--stack", help="Stack whose outputs name the workers: its file "
                                                 "in ~/.config/offload/stacks (env OFFLOAD_STACK).",
                                                 show_default=False)]
OutputsOpt = Annotated[Optional[Path], typer.Option("--outputs", help="Stack outputs JSON file "
                                                    "(env OFFLOAD_OUTPUTS).", show_default=False)]
WorkerOpt = Annotated[Optional[str], typer.Option("--worker", "-w", help="Worker name (default: picked for you).",
                                                  show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
IdentityOpt = Annotated[Optional[Path], typer.Option("--identity", "-i", help="SSH private key "
                                                     "(env OFFLOAD_SSH_KEY; else ssh-agent or ~/.ssh/config).",
                                                     show_default=False)]
IapOpt = Annotated[bool, typer.Option("--iap", help="Reach GCE workers through an IAP tunnel.")]
StrictHostKeysOpt = Annotated[bool, typer.Option("--strict-host-keys", help="Refuse a worker whose host key nothing "
                                                 "vouches for, instead of trusting it on first use "
                                                 "(offload:strictHostKeys).")]


@dataclass
class Invocation:
    """One command line's state that the error boundary reads, handed to the commands as Typer's context object.

    EXITS_WITH_JOB: whether the exit code is the job's (`run --wait`), so that offload's own failures take other
    codes; None until the command has parsed its options and said.
    """

    exits_with_job: bool | None = None


def current_dir() -> Path:
    """The directory offload runs in; a usage error when it was removed under us."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        raise UsageError("the current directory no longer exists",
                         hint="cd into your repository and run the command again") from None


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


def open_service(stack: str | None, outputs: Path | None, worker: str | None, identity: Path | None = None,
                 iap: bool = False, progress: Callable[[str], None] | None = None,
                 meters: "Meters | None" = None, *, strict_host_keys: bool = False) -> "JobService":
    """The job service for the stack the options name (close it, or use it as a context manager). METERS show
    its transfers (default: a summary line for each over 1 MB, and progress on a terminal)."""
    from offload.cli.ui import TransferDisplay
    from offload.jobs.fleet import Reach, quiet
    from offload.jobs.service import JobService

    reach = Reach(identity=identity, via_iap=iap, progress=progress or quiet, meters=meters or TransferDisplay(),
                  strict_host_keys=strict_host_keys)
    return JobService(resolve_outputs(outputs, stack), reach, worker=worker)


def open_fleet(out: StackOutputs, worker: str | None, identity: Path | None = None, iap: bool = False,
               progress: Callable[[str], None] | None = None, *, strict_host_keys: bool = False) -> "Fleet":
    """The workers of OUT (only WORKER, when given), for commands about workers rather than jobs."""
    from offload.jobs.fleet import Fleet, Reach, quiet

    return Fleet(out, Reach(identity=identity, via_iap=iap, progress=progress or quiet,
                            strict_host_keys=strict_host_keys), only=worker)
