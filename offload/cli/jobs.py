"""Day-two commands: status, logs, attach, shell, check and clean."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from offload.cli.app import app
from offload.cli.common import IdentityOpt, JsonOpt, OutputsOpt, StackOpt, WorkerOpt, resolve_outputs
from offload.errors import UsageError

JobArg = Annotated[str, typer.Argument(help="Job id, as `offload run` printed it.", show_default=False)]
TaskOpt = Annotated[Optional[str], typer.Option("--task", "-t", help="Task name (default: the job's only task, "
                                                "or every task).", show_default=False)]
IapOpt = Annotated[bool, typer.Option("--iap", help="Reach GCE workers through an IAP tunnel.")]


def _fleet(stack, outputs, worker, identity, iap, progress=None):
    from offload.jobs.fleet import Fleet
    from offload.providers import ProviderOptions
    from offload.runtime.connection import ConnectOptions

    options = ProviderOptions(connect=ConnectOptions.from_env(identity), via_iap=iap,
                              progress=progress.update if progress else (lambda m: None))
    return Fleet(resolve_outputs(outputs, stack), options, only=worker)


def job_dict(job) -> dict[str, Any]:
    return {"id": job.id, "state": job.state.value, "worker_alive": job.alive,
            "meta": dict(job.meta),
            "tasks": [{"name": t.name, "state": t.state.value, "exit_code": t.exit_code} for t in job.tasks]}


def _worker_report(provider) -> dict[str, Any]:
    from offload.jobs.service import JobService

    status = provider.get_status()
    report = status.to_dict()
    report["jobs"] = []
    if status.state in ("running", "unknown"):
        jobs = JobService(provider).jobs()
        report["state"] = "running"
        report["jobs"] = [job_dict(j) for j in jobs]
    return report


@app.command(help="Every worker of the stack: state, machine type, cost, idle stop, and each job with its tasks.\n\n"
                  "Exit codes: 0 when every worker answered, 1 when some could not be queried, 2 on bad usage.")
def status(stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None, json: JsonOpt = False,
           identity: IdentityOpt = None, iap: IapOpt = False) -> None:
    from offload.cli.ui import Progress, print_json, print_table

    progress = Progress(json_mode=json)
    with _fleet(stack, outputs, worker, identity, iap, progress) as fleet:
        with progress.activity("querying workers"):
            outcomes = fleet.each(_worker_report)
    reports = []
    for o in outcomes:
        if o.error is not None:
            reports.append({"name": o.provider.name, "provider": o.provider.kind.value, "state": "unreachable",
                            "machine_type": o.provider.record.machine_type,
                            "hourly_cost_usd": o.provider.record.hourly_cost_usd, "idle_stop_in_minutes": None,
                            "error": o.error.line(), "jobs": []})
        else:
            reports.append(o.value)
    failed = any(r.get("error") for r in reports)
    if json:
        print_json({"workers": reports})
    else:
        rows = [[r["name"], r["provider"], r["state"], r.get("machine_type"),
                 None if r.get("hourly_cost_usd") is None else f"${r['hourly_cost_usd']:.3f}/h",
                 None if r.get("idle_stop_in_minutes") is None else f"{r['idle_stop_in_minutes']} min",
                 len([j for j in r["jobs"] if j["state"] == "running"])] for r in reports]
        print_table("workers", ["worker", "provider", "state", "machine", "cost", "idle stop in", "running"], rows)
        job_rows = []
        for r in reports:
            for j in r["jobs"]:
                tasks = " ".join(f"{t['name']}:{t['state']}" + (f"({t['exit_code']})" if t["exit_code"] not in
                                                                (None, 0) else "") for t in j["tasks"])
                job_rows.append([j["id"], r["name"], j["state"], tasks])
        if job_rows:
            print_table("jobs", ["job", "worker", "state", "tasks"], job_rows)
        for r in reports:
            if r.get("error"):
                print(f"offload: {r['name']}: {r['error']}", file=sys.stderr)
    raise typer.Exit(1 if failed else 0)


def _one_job(stack, outputs, worker, identity, iap, job_id):
    from offload.jobs.layout import validate_id

    validate_id(job_id)
    fleet = _fleet(stack, outputs, worker, identity, iap)
    try:
        return fleet, fleet.find_job(job_id)
    except BaseException:
        fleet.close()
        raise


def _task_for(service, job_id: str, task: str | None) -> str:
    from offload.jobs.layout import validate_id

    if task is not None:
        return validate_id(task, "task name")
    job = service.job(job_id)
    if len(job.tasks) == 1:
        return job.tasks[0].name
    raise UsageError(f"job {job_id} has tasks {', '.join(t.name for t in job.tasks)}; pick one with --task")


@app.command(help="Print a job's output; -f follows it to the end, through dropped connections.")
def logs(job: JobArg, task: TaskOpt = None, follow: Annotated[bool, typer.Option("--follow", "-f",
         help="Keep streaming until the task finishes.")] = False, stack: StackOpt = None,
         outputs: OutputsOpt = None, worker: WorkerOpt = None, identity: IdentityOpt = None,
         iap: IapOpt = False) -> None:
    from offload.cli.ui import Progress
    from offload.jobs.service import JobService

    fleet, provider = _one_job(stack, outputs, worker, identity, iap, job)
    with fleet:
        service = JobService(provider)
        out = sys.stdout.buffer
        name = _task_for(service, job, task)
        if follow:
            def sink(chunk: bytes) -> None:
                out.write(chunk)
                out.flush()

            service.follow(job, name, sink, on_reconnect=Progress().note)
        else:
            out.write(service.read_log(job, name))
            out.flush()


@app.command(help="Attach to a job's tmux session (detach with C-b d; the job keeps running).")
def attach(job: JobArg, task: TaskOpt = None, stack: StackOpt = None, outputs: OutputsOpt = None,
           worker: WorkerOpt = None, identity: IdentityOpt = None, iap: IapOpt = False) -> None:
    from offload.jobs.service import JobService

    if not sys.stdin.isatty():
        raise UsageError("attach needs a terminal", hint=f"use `offload logs {job} -f` instead")
    fleet, provider = _one_job(stack, outputs, worker, identity, iap, job)
    with fleet:
        raise typer.Exit(JobService(provider).attach(job, task))


@app.command(help="An interactive shell in a job's worktree, in the job's container.")
def shell(job: JobArg, stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None,
          identity: IdentityOpt = None, iap: IapOpt = False) -> None:
    from offload.jobs.service import JobService

    if not sys.stdin.isatty():
        raise UsageError("shell needs a terminal")
    fleet, provider = _one_job(stack, outputs, worker, identity, iap, job)
    with fleet:
        raise typer.Exit(JobService(provider).shell(job))


@app.command(help="Exit 0 only when every task of the job succeeded.\n\n"
                  "Exit codes: 0 success, 1 failed, 7 still running, 5 no such job.")
def check(job: JobArg, stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None,
          json: JsonOpt = False, identity: IdentityOpt = None, iap: IapOpt = False) -> None:
    from offload.cli.ui import print_json
    from offload.jobs.layout import State
    from offload.jobs.service import JobService

    fleet, provider = _one_job(stack, outputs, worker, identity, iap, job)
    with fleet:
        status_ = JobService(provider).job(job)
    if json:
        print_json(dict(job_dict(status_), worker=provider.name))
    else:
        for t in status_.tasks:
            code = "" if t.exit_code is None else f" (exit {t.exit_code})"
            print(f"{t.name}\t{t.state.value}{code}")
    if status_.state in (State.RUNNING, State.PENDING):
        raise typer.Exit(7)
    raise typer.Exit(0 if status_.state is State.SUCCESS else 1)


@app.command(help="End a job's session and remove its worktree and refs; --all does it for every job.\n\n"
                  "Never touches another job or the worker's repositories.")
def clean(job: Annotated[Optional[str], typer.Argument(help="Job id.", show_default=False)] = None,
          all_: Annotated[bool, typer.Option("--all", help="Clean every job on the stack's workers.")] = False,
          yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
          stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None, json: JsonOpt = False,
          identity: IdentityOpt = None, iap: IapOpt = False) -> None:
    from offload.cli.ui import print_json
    from offload.jobs.service import JobService

    if bool(job) == bool(all_):
        raise UsageError("give a job id or --all")
    if job:
        fleet, provider = _one_job(stack, outputs, worker, identity, iap, job)
        with fleet:
            JobService(provider).clean(job)
        if json:
            print_json({"cleaned": [{"worker": provider.name, "id": job}]})
        else:
            print(f"cleaned {job} on {provider.name}")
        return
    with _fleet(stack, outputs, worker, identity, iap) as fleet:
        listed = fleet.each(lambda p: [j.id for j in JobService(p).jobs()])
        total = sum(len(o.value or []) for o in listed)
        if total == 0:
            if json:
                print_json({"cleaned": []})
            else:
                print("no jobs to clean")
            return
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError(f"clean --all would remove {total} jobs; confirm with --yes")
            typer.confirm(f"Remove {total} jobs (sessions, worktrees and refs)?", abort=True)
        by_worker = {o.provider.name: o.value or [] for o in listed}
        results = fleet.each(lambda p: [JobService(p).clean(j) or j for j in by_worker.get(p.name, [])])
    cleaned = [{"worker": o.provider.name, "id": j} for o in results for j in (o.value or [])]
    if json:
        print_json({"cleaned": cleaned})
    else:
        for c in cleaned:
            print(f"cleaned {c['id']} on {c['worker']}")
    errors = [o for o in results + listed if o.error]
    for o in errors:
        print(f"offload: {o.provider.name}: {o.error.line()}", file=sys.stderr)
    if errors:
        raise typer.Exit(1)
