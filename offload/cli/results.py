"""Bringing a job's work home: pull, diff and apply its changes, and get its files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from offload.cli.common import (IapOpt, IdentityOpt, JsonOpt, OutputsOpt, StackOpt, WorkerOpt, current_dir,
                                open_service, StrictHostKeysOpt)
from offload.worker.layout import pulled_ref

app = typer.Typer()

JobArg = Annotated[str, typer.Argument(help="Job id, as `offload run` printed it.", show_default=False)]
UnverifiedOpt = Annotated[bool, typer.Option(
    "--unverified", help="Take a result that cannot be proved to be its runner's own record (a job started "
    "elsewhere, a runner that died, or a record something on the worker changed).")]


@app.command(help=f"Fetch a job's result into the ref {pulled_ref('JOB')} of this repository and print its "
                  "diffstat.\n\n"
                  "Only the objects this repository lacks travel; nothing else is written locally.")
def pull(job: JobArg, stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None,
         json: JsonOpt = False, identity: IdentityOpt = None, iap: IapOpt = False,
         strict_host_keys: StrictHostKeysOpt = False,
         unverified: UnverifiedOpt = False) -> None:
    from offload.cli.ui import TransferDisplay, print_json

    cwd = current_dir()
    meters = TransferDisplay(live=sys.stderr.isatty() and not json)
    with open_service(stack, outputs, worker, identity, iap, meters=meters,
                      strict_host_keys=strict_host_keys) as service:
        pulled = service.pull(job, cwd, unverified=unverified)
    if json:
        print_json(pulled.to_dict())
        return
    print(f"{pulled.ref} -> {pulled.result[:12]} ({pulled.pack_bytes} bytes received)")
    sys.stdout.write(pulled.stat or " no changes\n")


@app.command(help="Print a job's changes against its snapshot, as a git diff (pulls first when needed).")
def diff(job: JobArg, stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None,
         identity: IdentityOpt = None, iap: IapOpt = False,
         strict_host_keys: StrictHostKeysOpt = False, unverified: UnverifiedOpt = False) -> None:
    from offload.cli.ui import OutputClosed, write_out

    cwd = current_dir()
    with open_service(stack, outputs, worker, identity, iap, strict_host_keys=strict_host_keys) as service:
        text = service.diff(job, cwd, unverified=unverified)
    try:
        write_out(text)
    except OutputClosed:
        raise typer.Exit(141) from None


@app.command(help="Apply a job's changes to the working tree with a three-way merge (pulls first when needed).\n\n"
                  "Your own uncommitted changes are kept; on any conflict nothing is written and the files are "
                  "named. A file git does not track here is never overwritten or removed, and a path git would refuse "
                  "to check out is never written. The index, HEAD and files this repository ignores (by any rule of "
                  "this machine) are never touched. What the apply replaces is kept under refs/offload/backup/JOB: "
                  "`--undo` puts it back.")
def apply(job: JobArg, stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None,
          json: JsonOpt = False, identity: IdentityOpt = None, iap: IapOpt = False,
          strict_host_keys: StrictHostKeysOpt = False,
          undo: Annotated[bool, typer.Option("--undo", help="Put back what the last apply of JOB changed, where it "
                                             "is still as the apply left it.")] = False,
          unverified: UnverifiedOpt = False,
          unrelated: Annotated[bool, typer.Option("--unrelated", help="Apply a result that does not build on the "
                                                  "snapshot the job ran on.")] = False,
          allow_filters: Annotated[bool, typer.Option("--allow-filters", help="Apply a change to .gitmodules, or to "
                                                      ".gitattributes that names a filter, diff or merge driver "
                                                      "(git runs those here later).")] = False) -> None:
    from offload.cli.ui import print_json

    cwd = current_dir()
    if undo:
        from offload.jobs.service import JobService

        applied = JobService.undo_apply(job, cwd)
        if json:
            print_json(applied.to_dict())
            return
        for name in applied.files:
            print(name)
        if not applied.files:
            print(f"nothing to put back: the files job {job} changed are as they were", file=sys.stderr)
        return
    with open_service(stack, outputs, worker, identity, iap, strict_host_keys=strict_host_keys) as service:
        applied = service.apply(job, cwd, unverified=unverified, unrelated=unrelated, allow_filters=allow_filters)
    if json:
        print_json(applied.to_dict())
        return
    for name in applied.files:
        print(name)
    if applied.skipped:
        shown = ", ".join(applied.skipped[:8]) + (f" and {len(applied.skipped) - 8} more"
                                                  if len(applied.skipped) > 8 else "")
        print(f"offload: left out what this repository ignores here: {shown} (copy it with `offload get {job}`)",
              file=sys.stderr)
    if not applied.files and not applied.skipped:
        print("nothing to apply: the working tree has the job's changes already", file=sys.stderr)
    elif applied.files:
        print(f"offload: `offload apply --undo {job}` puts back what this changed", file=sys.stderr)


@app.command(help="Copy files or directories from a job's worktree, ignored build outputs included, into "
                  ".offload/JOB/ of this repository (or --to DIR).\n\n"
                  "A path that leaves the worktree (absolute, .., or through a symlink) is refused and nothing is "
                  "written. Nothing is written through a symlink here either. Outside .offload/, a file that is "
                  "already there is replaced only with --force.")
def get(job: JobArg,
        paths: Annotated[List[str], typer.Argument(help="Paths (or globs) relative to the job's worktree.",
                                                   show_default=False)],
        to: Annotated[Optional[Path], typer.Option("--to", help="Where to put them (default: .offload/JOB/).",
                                                   show_default=False)] = None,
        force: Annotated[bool, typer.Option("--force", help="Replace files already in --to DIR (in .offload/ "
                                                             "they always are).")] = False,
        stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None, json: JsonOpt = False,
        identity: IdentityOpt = None, iap: IapOpt = False, strict_host_keys: StrictHostKeysOpt = False) -> None:
    from offload.cli.ui import TransferDisplay, print_json

    cwd = current_dir()
    meters = TransferDisplay(live=sys.stderr.isatty() and not json)
    with open_service(stack, outputs, worker, identity, iap, meters=meters,
                      strict_host_keys=strict_host_keys) as service:
        fetched = service.get(job, paths, cwd, to, force=force)
    if json:
        print_json(fetched.to_dict())
        return
    replaced = ""
    if fetched.replaced:
        names = [n if n.isprintable() else repr(n) for n in fetched.replaced]  # a job chose them
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        replaced = f", replacing {len(fetched.replaced)}: {shown}"
    print(f"{len(fetched.files)} entries into {fetched.dest}{replaced}")
