"""`offload run`: reproduce the working tree on a worker and start the job there in tmux."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from offload.cli.app import app
from offload.cli.common import IdentityOpt, OutputsOpt, StackOpt, WorkerOpt, resolve_outputs
from offload.errors import UsageError


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
             help="Run COMMAND (after `--`) or a playbook on a worker, in a fresh worktree of your working tree.\n\n"
                  "Prints the job id and returns at once; --wait streams the output and exits with the job's "
                  "exit code; --attach opens the job's tmux session.")
def run(
    command: Annotated[Optional[List[str]], typer.Argument(help="The command to run, after `--`.",
                                                           show_default=False)] = None,
    stack: StackOpt = None,
    outputs: OutputsOpt = None,
    worker: WorkerOpt = None,
    job: Annotated[Optional[str], typer.Option("--job", help="Job id (default: generated).",
                                               show_default=False)] = None,
    playbook: Annotated[Optional[str], typer.Option("--playbook", "-p", help="Playbook from offload.yaml.",
                                                    show_default=False)] = None,
    env: Annotated[Optional[List[str]], typer.Option("--env", "-e", help="Pass this local environment "
                                                     "variable to the job (name only; repeatable).",
                                                     show_default=False)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Stream the output; exit with the job's exit code.")] = False,
    attach: Annotated[bool, typer.Option("--attach", help="Attach to the job's tmux session.")] = False,
    identity: IdentityOpt = None,
    iap: Annotated[bool, typer.Option("--iap", help="Reach GCE workers through an IAP tunnel.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help='Print {"id": ..., "worker": ...} instead of the id '
                                           "(not with --wait or --attach).")] = False,
) -> None:
    from offload.jobs.fleet import Fleet
    from offload.jobs.layout import validate_id
    from offload.jobs.playbook import Playbook, get_playbook
    from offload.jobs.service import (JobService, command_text, in_subdirectory, new_job_id, repo_root_of,
                                      resolve_env)
    from offload.providers import ProviderOptions
    from offload.runtime.connection import ConnectOptions
    from offload.runtime.sync import take_snapshot
    from offload.cli.ui import Progress

    if wait and attach:
        raise UsageError("--wait and --attach exclude each other; pick one")
    if json_out and (wait or attach):
        raise UsageError("--json describes the started job; it does not go with --wait or --attach")
    if attach and not sys.stdin.isatty():
        raise UsageError("--attach needs a terminal", hint="use --wait to stream the output instead")
    if playbook and command:
        raise UsageError("give either a command after `--` or --playbook, not both")
    job_id = validate_id(job) if job else new_job_id()
    secrets_env = resolve_env(env or [], dict(os.environ))
    cwd = Path.cwd()
    if playbook:
        validate_id(playbook, "playbook name")
        plan = get_playbook(repo_root_of(cwd), playbook)
    else:
        plan = Playbook.single(in_subdirectory(cwd, command_text(command or [])))
    stack_outputs = resolve_outputs(outputs, stack)
    progress = Progress(json_mode=json_out)
    options = ProviderOptions(connect=ConnectOptions.from_env(identity), via_iap=iap, progress=progress.update)

    with Fleet(stack_outputs, options, only=worker) as fleet:
        with progress.activity("preparing"):
            def ready():
                chosen = fleet.pick()
                chosen.ensure_ready()
                return chosen

            with ThreadPoolExecutor(max_workers=1) as pool:
                connecting = pool.submit(ready)
                progress.update("snapshotting the working tree")
                snapshot = take_snapshot(cwd)
                provider = connecting.result()
            progress.update(f"syncing to {provider.name}")
            service = JobService(provider)
            started = service.start(snapshot, plan, job_id=job_id, env=secrets_env)

        # The spinner is gone: from here the job owns the terminal.
        if attach:
            raise typer.Exit(service.attach(job_id))
        if wait:
            out = sys.stdout.buffer

            def sink(chunk: bytes) -> None:
                out.write(chunk)
                out.flush()

            try:
                code = service.wait(job_id, sink, on_reconnect=progress.note)
            except KeyboardInterrupt:
                progress.note(f"stopped watching; job {job_id} goes on on {started.worker} "
                              f"(`offload logs {job_id} -f`, `offload clean {job_id}`)")
                raise typer.Exit(130) from None
            raise typer.Exit(code)
    if json_out:
        from offload.cli.ui import print_json

        print_json({"id": started.id, "worker": started.worker})
        return
    print(started.id)
    if sys.stderr.isatty():
        progress.note(f"job {started.id} runs on {started.worker}; follow it with `offload logs {started.id} -f`")
