"""Day-two commands: status, logs, attach, shell, check and clean, each a thin front on the job service."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from offload.cli.common import (IapOpt, IdentityOpt, JsonOpt, OutputsOpt, StackOpt, WorkerOpt, current_dir,
                                open_service, StrictHostKeysOpt)
from offload.errors import UsageError

if TYPE_CHECKING:
    from offload.jobs.state import JobStatus

app = typer.Typer()

JobArg = Annotated[str, typer.Argument(help="Job id, as `offload run` printed it.", show_default=False)]
TaskOpt = Annotated[Optional[str], typer.Option("--task", "-t", help="Task name (default: the job's only task, "
                                                "or every task).", show_default=False)]


@app.command(help="Every worker of the stack: state, machine type, cost, idle stop, and each job (oldest first) "
                  "with its start, duration, command and tasks.",
             epilog="Exit codes: 0 when every worker answered, 1 when some could not be queried, 2 on bad usage.")
def status(stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None, json: JsonOpt = False,
           identity: IdentityOpt = None, iap: IapOpt = False, strict_host_keys: StrictHostKeysOpt = False) -> None:
    from offload.cli.ui import Progress, print_json, print_table

    progress = Progress(json_mode=json)
    with open_service(stack, outputs, worker, identity, iap, progress.update,
        strict_host_keys=strict_host_keys) as service:
        with progress.activity("querying workers"):
            report = service.status()
    if json:
        print_json(report.to_dict())
        raise typer.Exit(0 if report.complete else 1)
    rows = [[w.name, w.provider, w.state, w.machine_type,
             None if w.hourly_cost_usd is None else f"${w.hourly_cost_usd:.3f}/h",
             None if w.idle_stop_in_minutes is None else f"{w.idle_stop_in_minutes:g} min",
             sum(1 for j in w.jobs if j.state.value == "running"), _disk(w.disk)] for w in report.workers]
    print_table("workers", ["worker", "provider", "state", "machine", "cost", "idle stop in", "running",
                            "workspace disk"], rows, header=True)
    now = time.time()
    job_rows = [[j.id, w.name, j.state.value, _when(j.started_at), _duration(j, now), _what(j), _tasks(j)]
                for w in report.workers for j in w.jobs]
    if job_rows:
        print_table("jobs", ["job", "worker", "state", "started", "duration", "command", "tasks"], job_rows,
                    header=True)
    for w in report.workers:
        if w.error:
            print(f"offload: {w.name}: {w.error}", file=sys.stderr)
        elif w.disk.full:
            print(f"offload: {w.name}: no space left in its workspace ({w.disk.free_kb} KB free)", file=sys.stderr)
    raise typer.Exit(0 if report.complete else 1)


def _disk(disk: Any) -> str | None:
    """'3.1 GiB free of 100 GiB' for a workspace's disk, when df could tell."""
    if disk.free_kb is None or disk.size_kb is None:
        return None

    def size(kb: int) -> str:
        value, unit = float(kb), "KiB"
        for bigger in ("MiB", "GiB", "TiB"):
            if value < 1024:
                break
            value, unit = value / 1024, bigger
        return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"

    used = 100 - (100 * disk.free_kb // disk.size_kb if disk.size_kb else 0)
    return f"{size(disk.free_kb)} free of {size(disk.size_kb)} ({used}% used)"


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _duration(job: "JobStatus", now: float) -> str | None:
    if job.started_at is None:
        return None
    seconds = round((job.finished_at if job.finished_at is not None else now) - job.started_at)
    if job.finished_at is None and job.state.finished:
        return None  # ended without recording when (its runner was stopped)
    minutes, secs = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def _what(job: "JobStatus") -> str | None:
    if job.command is not None:
        text = " ".join(job.command.split())
        return text if len(text) <= 60 else text[:59] + "…"
    return f"playbook {job.playbook}" if job.playbook else None


def _tasks(job: "JobStatus") -> str:
    return " ".join(f"{t.name}:{t.state.value}" + (f"({t.exit_code})" if t.exit_code not in (None, 0) else "")
                    for t in job.tasks)


@app.command(help="Print a job's output; -f follows it to the end, through dropped connections.")
def logs(job: JobArg, task: TaskOpt = None, follow: Annotated[bool, typer.Option("--follow", "-f",
         help="Keep streaming until the task finishes.")] = False, stack: StackOpt = None,
         outputs: OutputsOpt = None, worker: WorkerOpt = None, identity: IdentityOpt = None,
         iap: IapOpt = False, strict_host_keys: StrictHostKeysOpt = False) -> None:
    from offload.cli.ui import OutputClosed, Progress, write_out

    with open_service(stack, outputs, worker, identity, iap, strict_host_keys=strict_host_keys) as service:
        try:
            if follow:
                service.follow(job, task, write_out, on_reconnect=Progress().note)
            else:
                write_out(service.logs(job, task).data)
        except OutputClosed:
            raise typer.Exit(141) from None  # the reader has what it wanted (`offload logs JOB | head`)


@app.command(help="Attach to a job's tmux session (detach with C-b d, or C-b C-b d inside your own tmux; the job "
                  "keeps running).")
def attach(job: JobArg, task: TaskOpt = None, stack: StackOpt = None, outputs: OutputsOpt = None,
           worker: WorkerOpt = None, identity: IdentityOpt = None, iap: IapOpt = False,
           strict_host_keys: StrictHostKeysOpt = False) -> None:
    if not sys.stdin.isatty():
        raise UsageError("attach needs a terminal", hint=f"use `offload logs {job} -f` instead")
    from offload.cli.ui import Progress, attach_note

    with open_service(stack, outputs, worker, identity, iap, strict_host_keys=strict_host_keys) as service:
        raise typer.Exit(service.attach(job, task, on_attach=lambda: Progress().note(attach_note(job))))


@app.command(help="An interactive shell in a job's worktree, in the job's container.")
def shell(job: JobArg, stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None,
          identity: IdentityOpt = None, iap: IapOpt = False, strict_host_keys: StrictHostKeysOpt = False) -> None:
    if not sys.stdin.isatty():
        raise UsageError("shell needs a terminal")
    with open_service(stack, outputs, worker, identity, iap, strict_host_keys=strict_host_keys) as service:
        raise typer.Exit(service.shell(job))


@app.command(help="Exit 0 only when every task of the job succeeded.",
             epilog="Exit codes: 0 success, 1 failed, 7 still running, 5 no such job.")
def check(job: JobArg, stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None,
          json: JsonOpt = False, identity: IdentityOpt = None, iap: IapOpt = False,
          strict_host_keys: StrictHostKeysOpt = False) -> None:
    from offload.cli.ui import print_json

    with open_service(stack, outputs, worker, identity, iap, strict_host_keys=strict_host_keys) as service:
        report = service.check(job)
    if json:
        print_json(report.to_dict())
    else:
        for t in report.job.tasks:
            code = "" if t.exit_code is None else f" (exit {t.exit_code})"
            print(f"{t.name}\t{t.state.value}{code}")
        if report.note:
            print(f"offload: {report.note}", file=sys.stderr)
    state = report.job.state.value
    if state in ("running", "pending"):
        raise typer.Exit(7)
    raise typer.Exit(0 if state == "success" else 1)


@app.command(help="End a job's session and remove its worktree and refs; --all does it for every job.\n\n"
                  "Never touches another job or the worker's repositories.")
def clean(job: Annotated[Optional[str], typer.Argument(help="Job id.", show_default=False)] = None,
          all_: Annotated[bool, typer.Option("--all", help="Clean every job on the stack's workers.")] = False,
          yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
          stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None, json: JsonOpt = False,
          identity: IdentityOpt = None, iap: IapOpt = False, strict_host_keys: StrictHostKeysOpt = False) -> None:
    from offload.cli.ui import print_json

    if bool(job) == bool(all_):
        raise UsageError("give a job id or --all")

    def confirm(total: int) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError(f"clean --all would remove {total} jobs; confirm with --yes")
        return typer.confirm(f"Remove {total} jobs (sessions, worktrees and refs)?", abort=True)

    with open_service(stack, outputs, worker, identity, iap, strict_host_keys=strict_host_keys) as service:
        report = service.clean(job, current_dir()) if job else service.clean_all(confirm)
    if json:
        print_json(_without_empty_errors(report.to_dict()))
    elif not report.cleaned and not report.errors:
        print("no jobs to clean")
    else:
        for worker_name, job_id in report.cleaned:
            print(f"cleaned {job_id} on {worker_name}")
    for worker_name, error in report.errors:
        print(f"offload: {worker_name}: {error}", file=sys.stderr)
    for worker_name, s in report.survivors:
        print(f"offload: {worker_name}: process {s.pid} of job {s.job} survived SIGKILL: {s.command or '?'}",
              file=sys.stderr)
    if report.errors or report.survivors:
        raise typer.Exit(1)


def _without_empty_errors(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("errors", "survivors") or v}
