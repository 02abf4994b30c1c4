"""`offload run`: reproduce the working tree on a worker and start the job there in tmux."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

from offload.cli.common import (IapOpt, IdentityOpt, Invocation, OutputsOpt, StackOpt, WorkerOpt, current_dir,
                                open_service, StrictHostKeysOpt)
from offload.errors import OffloadError, UsageError

if TYPE_CHECKING:
    from offload.cli.ui import Progress
    from offload.jobs.service import JobService, Submitted


app = typer.Typer()


@app.command(context_settings={"allow_interspersed_args": False},
             help="Run COMMAND (after `--`) or a playbook on a worker, in a warm worktree moved to your working "
                  "tree (or to --ref).\n\n"
                  "Prints the job id and returns at once; --wait prints the job id on stderr, streams the output "
                  "and exits with the job's exit code (offload's own failures then exit with 200 plus their usual "
                  "code); --attach opens the job's tmux session.")
def run(
    ctx: typer.Context,
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
    iap: IapOpt = False,
    strict_host_keys: StrictHostKeysOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help='Print {"id": ..., "worker": ...} instead of the id '
                                           "(not with --wait or --attach).")] = False,
    ref: Annotated[Optional[str], typer.Option("--ref", help="Run this commit of the repository (a branch, a tag, "
                                               "a fetched pull-request head) instead of the working tree.",
                                               show_default=False)] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start from a clean worktree: no ignored files (build "
                                        "outputs, caches) of earlier jobs.")] = False,
    keep_jobs: Annotated[Optional[int], typer.Option("--keep-jobs", help="Finished jobs the worker keeps once this "
                                                     "one ends (default: offload:keepJobs, else 20).",
                                                     show_default=False)] = None,
    depth: Annotated[Optional[str], typer.Option("--depth", metavar="N|full",
                                                 help="Commits of history the worker gets where it lacks them: "
                                                 "a number (counted from HEAD), or full (default: the "
                                                 "playbook's history, offload:historyDepth, else 1).",
                                                 show_default=False)] = None,
    warm_worktrees: Annotated[Optional[int], typer.Option("--warm-worktrees", help="Idle warm worktrees per "
                                                          "repository the worker keeps (default: "
                                                          "offload:warmWorktrees, else 4).",
                                                          show_default=False)] = None,
) -> None:
    from offload.cli.ui import Progress, TransferDisplay
    from offload.jobs.service import JobService, RunRequest

    ctx.ensure_object(Invocation).exits_with_job = wait
    _check_options(command, playbook, wait=wait, attach=attach, json_out=json_out)
    request = RunRequest(cwd=current_dir(), command=command or (), playbook=playbook, env=env or (), job_id=job,
                         ref=ref, fresh=fresh, keep_jobs=keep_jobs, warm_worktrees=warm_worktrees,
                         depth=depth)
    plan, _ = JobService.plan(request)  # a bad command or playbook fails before any worker is dialled
    progress = Progress(json_mode=json_out)

    with open_service(stack, outputs, worker, identity, iap, progress.update,
                      meters=TransferDisplay(progress, live=sys.stderr.isatty() and not json_out),
                      strict_host_keys=strict_host_keys) as service:
        with progress.activity("preparing"):
            started = service.submit(request)
        # The spinner is gone: from here the job owns the terminal.
        if attach:
            raise typer.Exit(_attach(service, started, progress))
        if wait:
            code = _wait(service, started, progress)
            if plan.artifacts:
                _copy_artifacts(service, started, plan.artifacts, request.cwd, progress)
            raise typer.Exit(code)
    _report_started(started, json_out, progress)


def _check_options(command: list[str] | None, playbook: str | None, *, wait: bool, attach: bool,
                   json_out: bool) -> None:
    """The combinations of options that cannot work, refused before anything else happens."""
    if wait and attach:
        raise UsageError("--wait and --attach exclude each other; pick one")
    if json_out and (wait or attach):
        raise UsageError("--json describes the started job; it does not go with --wait or --attach")
    if attach and not sys.stdin.isatty():
        raise UsageError("--attach needs a terminal", hint="use --wait to stream the output instead")
    if playbook and command:
        raise UsageError("give either a command after `--` or --playbook, not both")


def _attach(service: JobService, started: Submitted, progress: Progress) -> int:
    """Attach to the started job's tmux session; tmux's exit code."""
    from offload.cli.ui import attach_note

    return service.attach(started.id, on_attach=lambda: progress.note(attach_note(started.id)))


def _wait(service: JobService, started: Submitted, progress: Progress) -> int:
    """Stream the started job's output to its end; its exit code. Stopping to watch (Ctrl-C, a closed output)
    exits at once, and the job goes on."""
    from offload.cli.ui import OutputClosed, write_out

    # On stderr: stdout is the job's output, as is.
    progress.note(f"job {started.id} runs on {started.worker}")
    try:
        code = service.wait(started.id, write_out, on_reconnect=progress.note)
    except (KeyboardInterrupt, OutputClosed) as stopped:
        why = "the output was closed; " if isinstance(stopped, OutputClosed) else ""
        progress.note(f"stopped watching: {why}job {started.id} goes on on {started.worker} "
                      f"(`offload logs {started.id} -f`, `offload clean {started.id}`)")
        raise typer.Exit(141 if why else 130) from None
    if code != 0:
        try:
            note = service.check(started.id).note
        except OffloadError:
            note = None  # the job's own exit code is what matters here
        if note:
            progress.note(note)
    return code


def _copy_artifacts(service: JobService, started: Submitted, artifacts: Sequence[str], cwd: Path,
                    progress: Progress) -> None:
    """The playbook's artifacts into the repository, once the job has ended; a failure is a note, since the exit
    code stays the job's."""
    try:
        got = service.get(started.id, artifacts, cwd, missing_ok=True)
        progress.note(f"{len(got.files)} artifact entries of job {started.id} in {got.dest}")
    except OffloadError as e:
        progress.note(f"the artifacts of job {started.id} could not be copied: {e.line()}")


def _report_started(started: Submitted, json_out: bool, progress: Progress) -> None:
    """The started job's id on stdout (or the job as JSON), and where to follow it when on a terminal."""
    if json_out:
        from offload.cli.ui import print_json

        print_json(started.to_dict())
        return
    print(started.id)
    if sys.stderr.isatty():
        progress.note(f"job {started.id} runs on {started.worker}; follow it with `offload logs {started.id} -f`")
