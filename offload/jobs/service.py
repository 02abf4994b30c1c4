"""The job service: the one plain-Python API that every front end (the CLI, the MCP server) calls.

It holds the stack's workers for as long as it is open and reuses each worker's one connection across calls:
submit a job (snapshot the working tree, pick a worker, sync, launch), then status, check, logs, follow, wait,
attach, shell and clean. Its results are dataclasses whose `to_dict()` is what `--json` prints and what the MCP
tools return. Nothing here knows about Typer or terminals; progress goes to a callback.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offload.errors import (AuthFailed, ConfigError, HostKeyMismatch, JobExists, JobNotFound, OffloadError,
                            UsageError, reason)
from offload.jobs.fleet import Fleet, Outcome, Reach, quiet
from offload.jobs.launch import ENV_NAME, META_COMMAND_BYTES
from offload.jobs.playbook import Playbook, get_playbook
from offload.jobs.state import Disk, JobStatus, State, Survivor, job_order
from offload.jobs.worker import Sink, StartedJob, WorkerJobs
from offload.outputs import StackOutputs, parse_history_depth
from offload.providers import (Direction, LocalRepository, WorkerProvider, apply_engine, large_changes,
                               local_repository, metered_sink, repo_root, results, snapshot_of_ref, take_snapshot)
from offload.worker.layout import MAX_KEEP_JOBS, MAX_WARM_WORKTREES, pulled_ref, validate_id

@dataclass(frozen=True)
class RunRequest:
    """What to run: a command (one argument is shell text as typed, several are words) or a playbook of the
    repository at CWD, with the local environment variables ENV passed by name. It runs on the working tree as
    it is on disk, or on the commit REF; in a warm worktree, or with FRESH one with no ignored files left. KEEP_JOBS
    and WARM_WORKTREES override what the worker keeps once the job ends. WORKER names the worker to run on
    (default: picked). ALLOW_ENV, for a request an agent made, holds the only names ENV may give (the ones the
    user allowed); None for the user's own request."""

    cwd: Path
    command: Sequence[str] = ()
    playbook: str | None = None
    env: Sequence[str] = ()
    job_id: str | None = None
    ref: str | None = None
    fresh: bool = False
    keep_jobs: int | None = None
    warm_worktrees: int | None = None
    worker: str | None = None
    allow_env: frozenset[str] | None = None
    depth: int | str | None = None  # commits of history to send: a number or "full" (None: the playbook's, the
    # worker's offload:historyDepth, else 1)


@dataclass(frozen=True)
class Submitted:
    """A job that has started on a worker."""

    id: str
    worker: str
    pack_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "worker": self.worker}


@dataclass(frozen=True)
class JobReport:
    """One job and the worker it is on: what `check` gives."""

    worker: str
    job: JobStatus
    disk: Disk = field(default_factory=Disk)

    @property
    def note(self) -> str | None:
        """Why a failed job may have failed, when the worker can tell: its workspace is full."""
        if self.job.state is State.FAILED and self.disk.full:
            return (f"worker {self.worker} has no space left in its workspace ({self.disk.free_kb} KB free): "
                    f"job {self.job.id} could not write its output or state")
        return None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.job.to_dict(), worker=self.worker, note=self.note)


@dataclass(frozen=True)
class LogChunk:
    """Log bytes from an offset, where to continue, and the state of the task they belong to (taken before the
    bytes were read: a finished state means nothing more will be written). MORE: the read stopped at its limit
    and more bytes are already there."""

    data: bytes
    next_offset: int
    state: State
    task: str
    more: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data.decode("utf-8", "replace"), "next_offset": self.next_offset,
                "state": self.state.value, "task": self.task, "more": self.more}


@dataclass(frozen=True)
class Pulled:
    """A job's result, fetched into the job's ref of the local repository (`ref`)."""

    id: str
    worker: str
    result: str
    snapshot: str
    pack_bytes: int
    stat: str

    @property
    def ref(self) -> str:
        return pulled_ref(self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "worker": self.worker, "ref": self.ref, "result": self.result,
                "snapshot": self.snapshot, "pack_bytes": self.pack_bytes, "stat": self.stat}


@dataclass(frozen=True)
class Applied:
    """The working-tree files a job's changes were applied to, and those left out because they are ignored
    here."""

    id: str
    files: list[str]
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "files": self.files, "skipped": self.skipped}


@dataclass(frozen=True)
class Fetched:
    """Files copied from a job's worktree into DEST (absolute, as it really is)."""

    id: str
    dest: str
    files: list[str]
    replaced: list[str] = field(default_factory=list)  # of FILES, those that replaced a file already there

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.dest, "files": self.files, "replaced": self.replaced}


@dataclass
class WorkerReport:
    """One worker in `status`: its machine, and its jobs oldest first (or the error that hid them)."""

    name: str
    provider: str
    state: str
    machine_type: str | None = None
    hourly_cost_usd: float | None = None
    idle_stop_in_minutes: float | None = None
    error: str | None = None
    jobs: list[JobStatus] = field(default_factory=list)
    disk: Disk = field(default_factory=Disk)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "state": self.state,
                "machine_type": self.machine_type, "hourly_cost_usd": self.hourly_cost_usd,
                "idle_stop_in_minutes": self.idle_stop_in_minutes, "error": self.error,
                "workspace": self.disk.to_dict(), "jobs": [j.to_dict() for j in self.jobs]}


@dataclass
class FleetStatus:
    """`status`: every worker of the stack."""

    workers: list[WorkerReport]

    @property
    def complete(self) -> bool:
        """Every worker answered."""
        return not any(w.error for w in self.workers)

    def to_dict(self) -> dict[str, Any]:
        return {"workers": [w.to_dict() for w in self.workers]}


@dataclass
class CleanReport:
    """What `clean` removed, and the workers it could not clean (with their one-line errors)."""

    cleaned: list[tuple[str, str]] = field(default_factory=list)  # (worker, job)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (worker, message)
    survivors: list[tuple[str, Survivor]] = field(default_factory=list)  # (worker, process)

    def to_dict(self) -> dict[str, Any]:
        return {"cleaned": [{"worker": w, "id": j} for w, j in self.cleaned],
                "errors": [{"worker": w, "error": e} for w, e in self.errors],
                "survivors": [{"worker": w, "id": s.job, "pid": s.pid, "command": s.command}
                              for w, s in self.survivors]}


class JobService:
    """The jobs of one stack's workers (or of one worker, with WORKER), over connections kept for the session."""

    def __init__(self, outputs: StackOutputs, reach: Reach | None = None, *, worker: str | None = None) -> None:
        self.outputs = outputs
        self.reach = reach or Reach()
        self.fleet = Fleet(outputs, self.reach, only=worker)
        self._where: dict[str, WorkerJobs] = {}

    def close(self) -> None:
        self.fleet.close()
        self._where.clear()

    def __enter__(self) -> "JobService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- submit ----------------------------------------------------------------------------------

    def submit(self, request: RunRequest, *, environ: Mapping[str, str] | None = None) -> Submitted:
        """Snapshot the working tree at REQUEST.cwd and start the job on a worker; returns once it runs there.

        The worker is picked (and woken, and connected) while the snapshot is taken.
        """
        plan, meta = self.plan(request)
        job_id = validate_id(request.job_id) if request.job_id else new_job_id()
        env = resolve_env(request.env, os.environ if environ is None else environ, allowed=request.allow_env)
        progress = self.reach.progress

        def ready() -> WorkerProvider:
            chosen = self.fleet.named(request.worker) if request.worker else self.fleet.pick()
            chosen.ensure_ready(wake=True)  # only a new job starts a stopped worker
            return chosen

        # A workspace on this machine inside the repository must not be snapshotted into itself.
        local = [Path(p.workspace) for p in self.fleet.providers if p.on_this_machine]
        given_up = threading.Event()
        with ThreadPoolExecutor(max_workers=2) as pool:
            connecting = pool.submit(ready)
            # Large changed files go to a remote worker while the snapshot hashes them here.
            remote = any(not p.on_this_machine for p in self.fleet.providers)
            ahead = (pool.submit(self._send_ahead, request.cwd, connecting, given_up)
                     if remote and not request.ref else None)
            try:
                if request.ref:
                    progress(f"taking {request.ref}")
                    snapshot = snapshot_of_ref(request.cwd, request.ref)
                else:
                    progress("snapshotting the working tree")
                    snapshot = take_snapshot(request.cwd, exclude=local)
                provider = connecting.result()
                sent_ahead = ahead.result() if ahead is not None else []
            except BaseException:
                given_up.set()  # a file going ahead stops where it is, rather than hold the command up
                raise
        progress(f"syncing to {provider.name}")
        jobs = WorkerJobs(provider)
        # What this machine will check the job's result against: the snapshot it sends, and a key only the
        # job's runner learns (see offload/runtime/results.py). Kept before the launch, so no result goes unproved.
        # For a new id, or a chosen one this machine keeps no record of (claimed, never over another), it is written
        # before the sync, which the launch then goes with (one round trip). For a chosen id this machine has a
        # record of, once the sync has claimed the id on the worker: an id in use keeps its own record.
        record = results.JobRecord(job_id, provider.name, snapshot.commit, results.new_result_key())
        chosen = request.job_id is not None
        claimed = chosen and results.claim_record(snapshot.state_dir, record)
        save = None if claimed else (lambda: results.save_record(snapshot.state_dir, record))
        try:
            started: StartedJob = jobs.start(snapshot, plan, job_id=job_id, env=env, meta=meta,
                                             result_key=record.key, before_launch=save,
                                             depth=self.depth(request, plan), meters=self.reach.meters,
                                             with_sync=claimed or not chosen, ahead=sent_ahead)
        except JobExists:
            if claimed:
                results.forget_record(snapshot.state_dir, job_id, record.key)
            raise
        except BaseException:
            results.forget_record(snapshot.state_dir, job_id)
            raise
        self._where[job_id] = jobs
        return Submitted(started.id, started.worker, started.pack_bytes)

    def _send_ahead(self, cwd: Path, connecting: "Future[WorkerProvider]", stop: threading.Event) -> list[str]:
        """Send the large changed files of the working tree at CWD to the worker CONNECTING picks, while the
        snapshot is taken (`WorkerProvider.send_ahead`), until STOP: the blobs it stored. Only ever a head start:
        whatever fails here leaves those files to the sync, which reports the failures that matter."""
        try:
            files = large_changes(cwd)
            if not files:
                return []
            provider = connecting.result()
            return provider.send_ahead(local_repository(cwd), files, self.reach.meters, stop)
        except Exception as e:  # noqa: BLE001 (the sync sends whatever did not go ahead)
            if os.environ.get("OFFLOAD_DEBUG") == "1":
                print(f"offload: sending large files ahead failed: {reason(e)}", file=sys.stderr)
            return []

    @staticmethod
    def depth(request: RunRequest, plan: Playbook) -> int | None:
        """The history depth the job's sync asks for: --depth, else the playbook's `history`, else None (the
        worker's own default)."""
        if request.depth is not None:
            try:
                return parse_history_depth(request.depth, "--depth")
            except ConfigError as e:
                raise UsageError(e.message) from None
        return plan.history

    @staticmethod
    def plan(request: RunRequest) -> tuple[Playbook, dict[str, str]]:
        """The playbook REQUEST runs and the meta that describes it (checked before anything is dialled)."""
        if request.playbook and request.command:
            raise UsageError("give either a command or a playbook, not both")
        if request.allow_env is not None:
            refuse_env(request.env, request.allow_env)
        JobService.depth(request, Playbook.single("true"))  # a bad --depth fails before anything is dialled
        meta: dict[str, str] = {"fresh": "1"} if request.fresh else {}
        for key, value, most in (("keep_jobs", request.keep_jobs, MAX_KEEP_JOBS),
                                 ("warm_worktrees", request.warm_worktrees, MAX_WARM_WORKTREES)):
            if value is not None:
                if not 0 <= value <= most:
                    raise UsageError(f"--{key.replace('_', '-')} takes a number from 0 to {most}; got {value}")
                meta[key] = str(value)
        if request.playbook:
            validate_id(request.playbook, "playbook name")
            return get_playbook(repo_root(request.cwd), request.playbook), meta
        text = command_text(request.command)
        return Playbook.single(in_subdirectory(request.cwd, text)), {**meta, **command_meta(text)}

    # --- read ------------------------------------------------------------------------------------

    def _jobs_of(self, job_id: str) -> WorkerJobs:
        """The worker that holds JOB_ID (found once per session)."""
        validate_id(job_id)
        if job_id not in self._where:
            self._where[job_id] = WorkerJobs(self.fleet.find_job(job_id))
        return self._where[job_id]

    def status(self) -> FleetStatus:
        """Every worker, queried concurrently: its state and its jobs, oldest first."""

        def report(provider: WorkerProvider) -> WorkerReport:
            s = provider.get_status()
            out = WorkerReport(s.name, s.provider, s.state, s.machine_type, s.hourly_cost_usd,
                               s.idle_stop_in_minutes, s.error)
            if s.state in ("running", "unknown"):
                jobs, out.disk = WorkerJobs(provider).listing()
                out.jobs = sorted(jobs, key=job_order)
                out.state = "running"
            return out

        reports = []
        for o in self.fleet.each(report):
            if o.error is None and o.value is not None:
                reports.append(o.value)
            else:
                r = o.provider.record
                reports.append(WorkerReport(o.provider.name, o.provider.kind.value, failed_state(o.error),
                                            r.machine_type, r.hourly_cost_usd,
                                            error=o.error.line() if o.error else None))
        return FleetStatus(reports)

    def check(self, job_id: str) -> JobReport:
        """The job's state and its tasks' states and exit codes."""
        jobs = self._jobs_of(job_id)
        found, disk = jobs.listing([job_id])
        if not found or found[0].id != job_id:
            raise JobNotFound(f"no job {job_id} on worker {jobs.worker}", hint="see `offload status`")
        return JobReport(jobs.worker, found[0], disk)

    def task_of(self, job_id: str, task: str | None) -> str:
        """TASK, or the job's only task when none is named."""
        if task is not None:
            return validate_id(task, "task name")
        return self._only_task(self._jobs_of(job_id).job(job_id))

    def _only_task(self, job: JobStatus) -> str:
        job_id = job.id
        if len(job.tasks) == 1:
            return job.tasks[0].name
        if not job.tasks:
            why = "it is still starting" if job.state is State.PENDING else "its launch did not finish"
            raise JobNotFound(f"job {job_id} has no tasks on worker {self._jobs_of(job_id).worker} ({why})",
                              hint="see `offload status`")
        raise UsageError(f"job {job_id} has tasks {', '.join(t.name for t in job.tasks)}; pick one with --task")

    def logs(self, job_id: str, task: str | None = None, offset: int = 0, limit: int | None = None) -> LogChunk:
        """The task's log from byte OFFSET to its current end (at most LIMIT bytes, cut where a UTF-8 character
        begins); poll again from `next_offset`. Once the state is finished and `more` is false, the log is whole."""
        if offset < 0:
            raise UsageError(f"a log offset is a number of bytes from the start; got {offset}")
        if limit is not None and limit < 1:
            raise UsageError(f"a log read takes at least 1 byte; got a limit of {limit}")
        jobs = self._jobs_of(job_id)
        read = None if limit is None else limit + 1
        # The state first: when it says finished, the bytes read after it are all there will be. Both go in one
        # round trip, the log read taking the task to be `main` (a command job's) when none is named; another
        # task's log is read once the job's state has named it.
        guess = validate_id(task, "task name") if task is not None else "main"
        job, data = jobs.job_and_log(job_id, guess, offset, read)
        name = guess if task is not None else self._only_task(job)
        state = next((t.state for t in job.tasks if t.name == name), job.state)
        if name != guess or data is None:
            data = jobs.read_log(job_id, name, offset, read)
        more = limit is not None and len(data) > limit
        if more:
            assert limit is not None
            data = utf8_prefix(data, limit)
        return LogChunk(data, offset + len(data), state, name, more)

    def follow(self, job_id: str, task: str | None, sink: Sink, *,
               on_reconnect: Callable[[str], None] = quiet) -> int:
        """Stream the task's log until it has finished, through dropped connections."""
        name = self.task_of(job_id, task)
        return self._jobs_of(job_id).follow(job_id, name, sink, on_reconnect=on_reconnect)

    def wait(self, job_id: str, sink: Sink, *, on_reconnect: Callable[[str], None] = quiet) -> int:
        """Stream the job's output to its end and return its exit code."""
        return self._jobs_of(job_id).wait(job_id, sink, on_reconnect=on_reconnect)

    def wait_for(self, job_id: str, seconds: float, *, poll: float = 0.5) -> JobReport:
        """The job once it has finished and its runner has recorded that (see `JobStatus.settled`), or as it is
        after SECONDS."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            report = self.check(job_id)
            if report.job.settled or time.monotonic() >= deadline:
                return report
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    # --- results ---------------------------------------------------------------------------------

    def _local(self, job_id: str, cwd: Path) -> tuple[LocalRepository, str | None]:
        """The local repository at CWD, which must be the one the job ran, and the job's result in it (if pulled)."""
        local = local_repository(cwd)
        result = results.local_commit(local.root, pulled_ref(validate_id(job_id)))
        return local, result

    def pull(self, job_id: str, cwd: Path, *, unverified: bool = False, verb: str = "pull") -> Pulled:
        """Fetch the job's result into the job's ref of the repository at CWD: only the objects it lacks
        travel, as a thin pack against the snapshot it sent. Nothing else is written locally. The result is taken
        only when its runner's proof checks out against the job's record on this machine (ResultUnverified
        otherwise), unless UNVERIFIED."""
        local, _ = self._local(job_id, cwd)
        jobs = self._jobs_of(job_id)
        job = jobs.job(job_id)
        ran = Path(job.meta.get("repo", "")).name.removesuffix(".git")
        if ran and ran != local.repo_id:
            raise UsageError(f"job {job_id} ran another repository ({ran}); run this from that repository")
        record = results.load_record(local.state_dir, job_id)
        # What the worker may build on: the snapshot we sent, if its objects are still in the cache, else the
        # commit it was taken on, which the repository has.
        snapshot = record.snapshot if record else job.meta.get("commit", "")
        haves = [c for c in (results.local_commit(local.root, snapshot, local.store_env),
                             results.local_commit(local.root, job.meta.get("head", ""))) if c][:1]
        result, said_snapshot, mac, pack = jobs.fetch_result(job_id, haves, self.reach.meters)
        verified = True
        try:
            results.check_result(record, job_id, jobs.worker, result, mac, verb=verb)
        except results.ResultUnverified:
            if not unverified:
                raise
            verified = False
        if record is None or not verified:
            snapshot = said_snapshot
        size = results.store_result(local.root, job_id, result, snapshot, pack, bases_env=local.store_env)
        if record is not None:
            record.verified = result if verified else None
            results.save_record(local.state_dir, record)
        return Pulled(job_id, jobs.worker, result, snapshot, size, results.diffstat(local.root, snapshot, result))

    def _pulled(self, job_id: str, cwd: Path, verb: str, *,
                unverified: bool = False) -> tuple[LocalRepository, str, str]:
        """The local repository, and the job's snapshot and result in it, pulling first when needed. A result
        pulled before is used only as it was checked then (ResultUnverified otherwise, unless UNVERIFIED)."""
        local, result = self._local(job_id, cwd)
        if result is None:
            pulled = self.pull(job_id, cwd, unverified=unverified, verb=verb)
            return local, pulled.snapshot, pulled.result
        record = results.load_record(local.state_dir, job_id)
        if record is not None and record.verified == result:
            return local, record.snapshot, result
        if not unverified:
            raise results.ResultUnverified(f"the result of job {job_id} in {pulled_ref(job_id)} was not "
                                           "proved to be its runner's when it was pulled",
                                           hint=results.unverified_hint(verb, job_id))
        return local, results.snapshot_of_result(local.root, result), result

    def diff(self, job_id: str, cwd: Path, *, unverified: bool = False) -> bytes:
        """The job's changes against its snapshot, as a git diff."""
        local, snapshot, result = self._pulled(job_id, cwd, "diff", unverified=unverified)
        return results.diff(local.root, snapshot, result)

    def apply(self, job_id: str, cwd: Path, *, unverified: bool = False, unrelated: bool = False,
              allow_filters: bool = False) -> Applied:
        """The job's changes, merged three ways into the working tree (offload/runtime/apply.py): never over
        untracked work, never a path git refuses, with what it replaces kept for `undo_apply`. On a conflict or a
        refusal nothing is written. A result that does not build on the job's snapshot is refused unless
        UNRELATED; a change that makes git run a filter or driver here, unless ALLOW_FILTERS."""
        local, snapshot, result = self._pulled(job_id, cwd, "apply", unverified=unverified)
        if not unrelated and not results.descends(local.root, result, snapshot):
            raise apply_engine.ApplyRefused(f"the result of job {job_id} does not build on the snapshot it ran on "
                                            "(the job moved its worktree to other history); nothing was applied",
                                            hint=f"see it with `offload diff {job_id}`; if you want it all the "
                                            f"same, `offload apply --unrelated {job_id}`")
        plan = apply_engine.plan_apply(local.root, snapshot, result, allow_filters=allow_filters, job=job_id)
        return Applied(job_id, apply_engine.apply(local.root, job_id, plan, result=result), plan.skipped)

    @staticmethod
    def undo_apply(job_id: str, cwd: Path) -> Applied:
        """Put back what the last `apply` of the job changed in the working tree at CWD, where it is still as the
        apply left it."""
        local = local_repository(cwd)
        return Applied(validate_id(job_id), apply_engine.undo(local.root, job_id))

    def get(self, job_id: str, paths: Sequence[str], cwd: Path, to: Path | None = None, *,
            missing_ok: bool = False, force: bool = False, within_repository: bool = False) -> Fetched:
        """Copy PATHS (files, directories or globs; ignored artifacts too) from the job's worktree into TO,
        by default .offload/JOB/ of the repository (kept out of git through .git/info/exclude).

        Files already there are replaced only inside .offload/, or with FORCE. WITHIN_REPOSITORY is an agent's
        request: TO, relative to the repository's top, must stay inside it, and FORCE is not taken. Nothing is
        written through a symlink (see results.get_destination and results.extract)."""
        if not paths:
            raise UsageError("name the paths to copy from the job's worktree")
        where = results.get_destination(cwd, validate_id(job_id), to, within_repository=within_repository)
        jobs = self._jobs_of(job_id)
        # The stream is spooled first: a refused path must leave nothing written.
        with tempfile.TemporaryFile(prefix="offload-get-") as spool:
            transfer = self.reach.meters(Direction.RECEIVED, None)
            try:
                jobs.get_files(job_id, paths, metered_sink(spool.write, transfer), missing_ok=missing_ok)
            finally:
                transfer.done()
            if spool.tell() == 0:
                return Fetched(job_id, str(where.path), [])
            if where.scratch and where.root is not None:
                results.exclude_locally(where.root, results.SCRATCH)
            spool.seek(0)
            try:
                replace = where.scratch or (force and not within_repository)
                unpacked = results.extract(spool, where.path, replace=replace)
            except results.WouldReplace as e:
                e.hint = (f"choose another `to`, or leave it out for {results.SCRATCH}/{job_id}/" if within_repository
                          else "pass --force to replace them, or choose another --to")
                raise
            return Fetched(job_id, str(where.path), unpacked.names, unpacked.replaced)

    # --- interactive -----------------------------------------------------------------------------

    def attach(self, job_id: str, task: str | None = None, *, on_attach: Callable[[], None] | None = None) -> int:
        """Attach this terminal to the job's tmux session; ON_ATTACH runs once the session is known to be there."""
        return self._jobs_of(job_id).attach(job_id, task, on_attach=on_attach)

    def shell(self, job_id: str) -> int:
        return self._jobs_of(job_id).shell(job_id)

    # --- clean -----------------------------------------------------------------------------------

    def clean(self, job_id: str, cwd: Path | None = None) -> CleanReport:
        """End the job's session and remove its worktree, refs and state (and, from the repository at CWD, what
        this machine kept of it)."""
        jobs = self._jobs_of(job_id)
        survivors = jobs.clean(job_id)
        self._where.pop(job_id, None)
        if cwd is not None:
            try:
                results.forget_record(local_repository(cwd).state_dir, job_id)
            except OffloadError:
                pass  # not in a repository: nothing of the job was kept here
        return CleanReport(cleaned=[(jobs.worker, job_id)], survivors=[(jobs.worker, s) for s in survivors])

    def clean_all(self, confirm: Callable[[int], bool] = lambda count: True) -> CleanReport:
        """Clean every job on every worker, once CONFIRM agrees to the number found."""
        listed = self.fleet.each(lambda p: [j.id for j in WorkerJobs(p).jobs()])
        report = CleanReport(errors=_errors(listed))
        total = sum(len(o.value or []) for o in listed)
        if total == 0 or not confirm(total):
            return report
        by_worker = {o.provider.name: o.value or [] for o in listed}

        def clean_worker(p: WorkerProvider) -> list[tuple[str, list[Survivor]]]:
            jobs = WorkerJobs(p)
            return [(job, jobs.clean(job)) for job in by_worker.get(p.name, [])]

        cleaned = self.fleet.each(clean_worker)
        report.cleaned = [(o.provider.name, j) for o in cleaned for j, _ in (o.value or [])]
        report.survivors = [(o.provider.name, s) for o in cleaned for _, left in (o.value or []) for s in left]
        report.errors += _errors(cleaned)
        self._where.clear()
        return report


def preload() -> None:
    """Load every module a job command may need, for a process that serves many commands (the warm server)."""
    import offload.jobs.launch  # noqa: F401
    from offload.providers import preload as preload_providers

    preload_providers()


def utf8_prefix(data: bytes, limit: int) -> bytes:
    """DATA cut to at most LIMIT bytes, not inside a UTF-8 character (unless that would leave nothing)."""
    cut = limit
    # Back off over continuation bytes (10xxxxxx) to the start of the character the cut would split.
    while cut > max(0, limit - 3) and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return data[:cut] if cut > 0 else data[:limit]


def _errors(outcomes: Sequence[Outcome[Any]]) -> list[tuple[str, str]]:
    return [(o.provider.name, o.error.line()) for o in outcomes if o.error is not None]


def _meta_json(text: str) -> str:
    """TEXT as one line of meta: a JSON string, with every control character escaped."""
    return json.dumps(text).replace("\x7f", "\\u007f")


def command_meta(text: str) -> dict[str, str]:
    """The meta of a command job: `command`, the command JSON-encoded, cut to META_COMMAND_BYTES (the task's cmd
    file on the worker has all of it); when cut, `command_bytes`, its whole size in bytes."""
    whole = _meta_json(text)
    if len(whole) <= META_COMMAND_BYTES:
        return {"command": whole}
    # The longest head whose encoding fits: a character may take up to 12 bytes escaped.
    lo, hi = 0, min(len(text), META_COMMAND_BYTES)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_meta_json(text[:mid])) <= META_COMMAND_BYTES:
            lo = mid
        else:
            hi = mid - 1
    return {"command": _meta_json(text[:lo]), "command_bytes": str(len(text.encode("utf-8", "surrogateescape")))}


def new_job_id() -> str:
    """Sortable by start time, unique enough for one developer's workers."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def command_text(command: Sequence[str]) -> str:
    """One argument is shell text as typed (`'make a && make b'`); several are argv, quoted to stay words."""
    if not command:
        raise UsageError("nothing to run: give a command after `--` or --playbook NAME")
    return command[0] if len(command) == 1 else shlex.join(command)


def in_subdirectory(cwd: Path, text: str) -> str:
    """A command typed in a subdirectory of the repository runs in the same subdirectory of the worktree, which
    is made when the snapshot has no file there (an empty or ignored directory, such as build/)."""
    root = repo_root(cwd)
    rel = Path(os.path.relpath(cwd.resolve(), root.resolve()))
    if rel == Path(".") or rel.parts[0] == "..":
        return text
    where = shlex.quote(rel.as_posix())
    return f"mkdir -p -- {where} && cd -- {where} || exit 1\n{text}"


def resolve_env(names: Sequence[str], environ: Mapping[str, str], *,
                allowed: Collection[str] | None = None) -> dict[str, str]:
    """--env NAME takes NAME's value from ENVIRON; it never travels in an argv. With ALLOWED (an agent's request
    through `offload mcp`), only those names are taken, and errors speak of the tool's `env` argument."""
    if allowed is not None:
        refuse_env(names, allowed)
    out: dict[str, str] = {}
    for name in names:
        if not ENV_NAME.fullmatch(name):
            raise UsageError(f"--env takes a variable name, got {name!r}",
                             hint="set the variable locally and pass only its name")
        if name not in environ:
            if allowed is not None:
                raise UsageError(f"env {name}: the user allowed it, but it is not set in the environment "
                                 "`offload mcp` was started with")
            raise UsageError(f"--env {name}: {name} is not set in your environment")
        out[name] = environ[name]
    return out


def refuse_env(names: Sequence[str], allowed: Collection[str]) -> None:
    """A UsageError, naming the tool's `env` argument, for the NAMES an agent asked for that the user has not
    ALLOWED: an agent gets only the variables the user let `offload mcp` pass."""
    refused = list(dict.fromkeys(n for n in names if n not in allowed))
    if not refused:
        return

    def said(name: str) -> str:  # an agent's text, shown short and on one line
        return name if ENV_NAME.fullmatch(name) and len(name) <= 64 else repr(name[:60] + ("…" if len(name) > 60 else ""))

    shown = ", ".join(said(n) for n in refused[:8])
    more = f" and {len(refused) - 8} more" if len(refused) > 8 else ""
    example = refused[0] if ENV_NAME.fullmatch(refused[0]) and len(refused[0]) <= 64 else "NAME"
    raise UsageError(f"env: {shown}{more} {'is' if len(refused) == 1 else 'are'} not allowed; the user allowed "
                     f"{', '.join(sorted(allowed)) or 'none'}",
                     hint=f"the user allows one by starting the server as `offload mcp --allow-env {example}`, "
                          "or with OFFLOAD_MCP_ALLOW_ENV")


def failed_state(error: OffloadError | None) -> str:
    """What `status` shows for a worker that could not be queried: the login or the host key when that is what
    failed, else `unreachable`."""
    if isinstance(error, AuthFailed):
        return "auth failed"
    if isinstance(error, HostKeyMismatch):
        return "host key changed"
    return "unreachable"
