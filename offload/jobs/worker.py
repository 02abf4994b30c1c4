"""Jobs on one worker: start (sync + launch), list, read and follow logs, attach and clean, over the provider's
one connection. Every operation is one or two round trips."""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence, TypeVar

from offload.errors import AgentGone, JobNotFound, JobRunning, OffloadError, UsageError, WorkerUnreachable
from offload.jobs.playbook import Playbook
from offload.jobs.state import (Disk, JobStatus, State, Survivor, attach_probe_argv, clean_argv, get_argv, log_argv,
                                parse_clean, parse_disk, parse_log_frames, parse_status, read_logs_argv,
                                result_argv, status_argv)
from offload.providers import Direction, Meters, Snapshot, Step, WorkerProvider, check, metered_sink, unmetered
from offload.worker.exits import AttachProbeExit, GetExit, LogExit, ResultExit
from offload.worker.layout import DEFAULT_KEEP_JOBS, DEFAULT_WARM_WORKTREES, JobPaths, validate_id

RECONNECT_TIMEOUT = 300.0
SETTLE_TIMEOUT = 120.0  # how long `run --wait` waits for a runner to record the end of a job whose tasks ended
T = TypeVar("T")
Sink = Callable[[bytes], None]


@dataclass
class StartedJob:
    """A job that is running on a worker."""

    id: str
    worker: str
    paths: JobPaths
    pack_bytes: int
    playbook: Playbook


class WorkerJobs:
    """Every job operation on one worker."""

    def __init__(self, provider: WorkerProvider) -> None:
        self.provider = provider

    @property
    def worker(self) -> str:
        return self.provider.name

    def _not_found(self, what: str) -> JobNotFound:
        return JobNotFound(f"{what} on worker {self.worker}", hint="see `offload status`")

    # --- start -----------------------------------------------------------------------------------

    def start(self, snapshot: Snapshot, playbook: Playbook, *, job_id: str, env: dict[str, str],
              meta: dict[str, str] | None = None, result_key: str | None = None,
              before_launch: Callable[[], None] | None = None, depth: int | None = None,
              meters: Meters = unmetered, with_sync: bool = False, ahead: Sequence[str] = ()) -> StartedJob:
        """Sync SNAPSHOT (with DEPTH commits of history where the worker lacks them; METERS count the bytes) and
        launch PLAYBOOK as job JOB_ID. BEFORE_LAUNCH runs before the launch is sent. WITH_SYNC sends the launch
        together with the sync (one round trip for both, where the worker has a dispatcher), so BEFORE_LAUNCH runs
        before the sync: only for an id that no other job can hold (a new one). AHEAD: blobs sent to the worker ahead
        of the sync (`WorkerProvider.send_ahead`), which its pack leaves out."""
        from offload.jobs.launch import META_BRANCH_BYTES, cut_meta, launch_script

        validate_id(job_id)
        paths = self.provider.paths(job_id)
        repo = paths.repo(snapshot.repo_id)
        info = {"repo": repo, "commit": snapshot.commit, "head": snapshot.head or "", "worktree": "",
                "created": f"{time.time():.3f}", "playbook": playbook.name,
                "branch": cut_meta(snapshot.branch or "", META_BRANCH_BYTES)}
        record = self.provider.record
        info["keep_jobs"] = str(DEFAULT_KEEP_JOBS if record.keep_jobs is None else record.keep_jobs)
        info["warm_worktrees"] = str(DEFAULT_WARM_WORKTREES if record.warm_worktrees is None else record.warm_worktrees)
        info.update(meta or {})
        # Everything that can be refused is refused before the sync writes anything on the worker (the worktree
        # is only known once leased). Text that is not UTF-8 (an --env value, a command) travels as its bytes.
        launch_script(replace(paths, worktree="/"), playbook, env=env, meta=info,
                      result_key=result_key).encode("utf-8", "surrogateescape")
        then = None
        if with_sync:
            leased = launch_script(paths, playbook, env=env, meta=info, result_key=result_key,
                                   leased=True).encode("utf-8", "surrogateescape")
            if before_launch is not None:
                before_launch()
                before_launch = None
            then = self.provider.launch_step(leased, job_id)
        stats = self.provider.sync(snapshot, paths, depth, meters, then, ahead)
        paths = replace(paths, worktree=stats.worktree)
        info["worktree"] = stats.worktree
        try:
            if stats.then is not None:
                self.provider.check_launch(stats.then, job_id)
            else:
                script = launch_script(paths, playbook, env=env, meta=info,
                                       result_key=result_key).encode("utf-8", "surrogateescape")
                if before_launch is not None:
                    before_launch()
                self.provider.launch(script, job_id)
        except BaseException:
            self._take_back(job_id, repo)
            raise
        return StartedJob(job_id, self.worker, paths, stats.pack_bytes, playbook)

    def _take_back(self, job_id: str, repo: str) -> None:
        """Remove what the sync made for a job whose launch failed (its worktree and ref), as far as the
        connection still allows; `clean` finds whatever is left."""
        try:
            self.provider.exec(clean_argv(self.provider.workspace, job_id, repo=repo), timeout=120)
        except Exception:
            pass

    # --- state -----------------------------------------------------------------------------------

    def listing(self, ids: Sequence[str] = ()) -> tuple[list[JobStatus], Disk]:
        """Every job on the worker (or only IDS), and the workspace's disk, in one round trip."""
        result = check(self.provider.exec(status_argv(self.provider.workspace, ids), timeout=60), self.worker,
                       "reading job state")
        return parse_status(result.text()), parse_disk(result.text())

    def jobs(self, ids: Sequence[str] = ()) -> list[JobStatus]:
        """Every job on the worker (or only IDS)."""
        return self.listing(ids)[0]

    def job(self, job_id: str) -> JobStatus:
        found = [j for j in self.jobs([job_id]) if j.id == job_id]
        if not found:
            raise self._not_found(f"no job {job_id}")
        return found[0]

    def job_and_log(self, job_id: str, task: str, offset: int = 0,
                    limit: int | None = None) -> tuple[JobStatus, bytes | None]:
        """The job, and TASK's log from byte OFFSET (at most LIMIT bytes) read just after it, in one round trip;
        None for the log when the job has no such task (yet)."""
        listing, log = self.provider.exec_steps([
            Step(status_argv(self.provider.workspace, [job_id]), None, 60),
            Step(log_argv(self.provider.paths(job_id), task, offset, limit=limit), None, 120)])
        found = [j for j in parse_status(check(listing, self.worker, "reading job state").text()) if j.id == job_id]
        if not found:
            raise self._not_found(f"no job {job_id}")
        return found[0], log.stdout if log.ok else None

    # --- output ----------------------------------------------------------------------------------

    def read_log(self, job_id: str, task: str, offset: int = 0, limit: int | None = None) -> bytes:
        """The task's log from byte OFFSET on (at most LIMIT bytes)."""
        result = self.provider.exec(log_argv(self.provider.paths(job_id), task, offset, limit=limit), timeout=120)
        if not result.ok:
            raise self._not_found(f"no log for task {task} of job {job_id}")
        return result.stdout

    def follow(self, job_id: str, task: str, sink: Sink, *, offset: int = 0,
               on_reconnect: Callable[[str], None] = lambda msg: None) -> int:
        """Stream a task's log until the task has finished; survive dropped connections by resuming at the
        last byte received. Returns the number of bytes streamed in total (offset included)."""
        paths = self.provider.paths(job_id)
        position = offset

        def counted(chunk: bytes) -> None:
            nonlocal position
            position += len(chunk)
            sink(chunk)

        def stream_rest() -> int:
            if self.provider.stream(log_argv(paths, task, position, follow=True), counted) == LogExit.NO_TASK:
                raise self._not_found(f"no task {task} in job {job_id}")
            return position

        return self.resilient(stream_rest, on_reconnect)

    def resilient(self, step: Callable[[], T], on_reconnect: Callable[[str], None]) -> T:
        """STEP, repeated over a fresh connection while the worker is unreachable, for RECONNECT_TIMEOUT."""
        deadline: float | None = None
        while True:
            try:
                return step()
            except WorkerUnreachable as e:
                deadline = deadline or time.monotonic() + RECONNECT_TIMEOUT
                if time.monotonic() > deadline:
                    raise
                if not isinstance(e, AgentGone):  # the worker did not go anywhere: say nothing
                    on_reconnect(f"{e.message}; reconnecting")
                self._reconnect(deadline)

    def _reconnect(self, deadline: float) -> None:
        while True:
            self.provider.close()
            try:
                self.provider.ensure_ready()
                return
            except WorkerUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def wait(self, job_id: str, sink: Sink, *, on_reconnect: Callable[[str], None] = lambda msg: None) -> int:
        """Stream the job's output to the end and return its exit code.

        A single-task job streams its log raw; a playbook streams every task's log, each line prefixed
        with the task name, as tasks produce it.
        """
        job = self.resilient(lambda: self.job(job_id), on_reconnect)
        deadline = time.monotonic() + 10
        while not job.tasks and job.state in (State.RUNNING, State.PENDING) and time.monotonic() < deadline:
            time.sleep(0.1)  # a job seen before its task list: which way to stream depends on it
            job = self.resilient(lambda: self.job(job_id), on_reconnect)
        if [t.name for t in job.tasks] == ["main"]:
            self.follow(job_id, "main", sink, on_reconnect=on_reconnect)
            while job.state in (State.RUNNING, State.PENDING):  # the log is complete; the state follows
                job = self.resilient(lambda: self.job(job_id), on_reconnect)
                if job.state in (State.RUNNING, State.PENDING):
                    time.sleep(0.1)
        else:
            job = self._wait_playbook(job_id, sink, on_reconnect)
        self._settle(job_id, job, on_reconnect)
        return exit_code_of(job)

    def _settle(self, job_id: str, job: JobStatus, on_reconnect: Callable[[str], None]) -> None:
        """Wait (briefly) for the runner to record the end of the job whose tasks have ended: its result kept and
        its worktree given back, so the next `run` gets that worktree warm and `pull` finds the result."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not job.settled and job.state.finished and time.monotonic() < deadline:
            time.sleep(0.05)
            job = self.resilient(lambda: self.job(job_id), on_reconnect)

    def _wait_playbook(self, job_id: str, sink: Sink, on_reconnect: Callable[[str], None]) -> JobStatus:
        offsets: dict[str, int] = {}
        partial: dict[str, bytes] = {}
        while True:
            job = self.resilient(lambda: self.job(job_id), on_reconnect)
            started = [t for t in job.tasks if t.state not in (State.PENDING, State.SKIPPED)]
            chunks = self.resilient(lambda: self.read_logs(job_id, {t.name: offsets.get(t.name, 0)
                                                                    for t in started}), on_reconnect)
            for t in started:
                data = chunks.get(t.name, b"")
                offsets[t.name] = offsets.get(t.name, 0) + len(data)
                *lines, rest = (partial.get(t.name, b"") + data).split(b"\n")
                if t.state.finished and rest:
                    lines, rest = lines + [rest], b""
                partial[t.name] = rest
                for line in lines:
                    sink(f"[{t.name}] ".encode() + line + b"\n")
            if job.state not in (State.RUNNING, State.PENDING):
                return job
            time.sleep(0.3)

    def read_logs(self, job_id: str, offsets: dict[str, int]) -> dict[str, bytes]:
        """New log bytes of every task in OFFSETS past its offset, in one round trip."""
        if not offsets:
            return {}
        argv = read_logs_argv(self.provider.paths(job_id), offsets)
        result = check(self.provider.exec(argv, timeout=120), self.worker, f"reading the logs of job {job_id}")
        return parse_log_frames(result.stdout)

    # --- results -------------------------------------------------------------------------------------

    def fetch_result(self, job_id: str, haves: Sequence[str],
                     meters: Meters = unmetered) -> tuple[str, str, str, bytes]:
        """The job's result commit, its snapshot (as the worker's ref says), its runner's proof (`-`: none), and a
        thin pack of what the result needs beyond HAVES (counted by METERS as it comes)."""
        out = io.BytesIO()
        transfer = meters(Direction.RECEIVED, None)
        try:
            code = self.provider.stream(result_argv(self.provider.workspace, job_id, haves),
                                        metered_sink(out.write, transfer))
        finally:
            transfer.done()
        if code == ResultExit.NO_JOB:
            raise self._not_found(f"no job {job_id}")
        if code == ResultExit.NOT_ENDED:
            raise JobRunning(f"job {job_id} has not ended; its result is recorded when it does",
                             hint=f"wait with `offload logs {job_id} -f`")
        if code == ResultExit.NO_RESULT:
            raise OffloadError(f"job {job_id} on worker {self.worker} has no result: it ended without one, and "
                               "its worktree has been used by another job since")
        data = out.getvalue()
        header, _, pack = data.partition(b"\n")
        fields = header.decode("utf-8", "replace").split("\t")
        if (code != ResultExit.OK or len(fields) != 4 or fields[0] != "result"
                or not re.fullmatch(r"[0-9a-f]{40,64}", fields[1])):
            raise OffloadError(f"cannot read the result of job {job_id} from worker {self.worker} (exit {code})")
        return fields[1], "" if fields[2] == "-" else fields[2], fields[3], pack

    def get_files(self, job_id: str, paths: Sequence[str], sink: Sink, *, missing_ok: bool = False) -> None:
        """A tar stream of PATHS from the job's worktree, to SINK; nothing reaches SINK unless all are good."""
        errors = io.BytesIO()
        code = self.provider.stream(get_argv(self.provider.workspace, job_id, paths, missing_ok=missing_ok),
                                    sink, stderr=errors.write)
        said = errors.getvalue().decode("utf-8", "replace").strip().splitlines()
        if code == GetExit.NO_JOB:
            raise self._not_found(f"no job {job_id}")
        if code == GetExit.WORKTREE_GONE:
            raise OffloadError(f"the files of job {job_id} are gone: another job has used its worktree since",
                               hint=f"its result is kept: `offload pull {job_id}`")
        if code == GetExit.PATH_REFUSED:
            raise UsageError(said[-1].removeprefix("offload: ") if said else "a path was refused")
        if code != GetExit.OK:
            raise OffloadError(f"cannot copy files of job {job_id} from worker {self.worker}: "
                               f"{said[-1] if said else f'exit {code}'}")

    # --- interactive and cleanup -----------------------------------------------------------------

    def attach(self, job_id: str, task: str | None = None, *, on_attach: Callable[[], None] | None = None) -> int:
        paths = self.provider.paths(validate_id(job_id))
        if task is None:
            # A single-task job opens on its task; a playbook on the runner's overview window.
            names = [t.name for t in self.job(job_id).tasks]
            task = names[0] if len(names) == 1 else None
        probe = self.provider.exec(attach_probe_argv(paths, task), timeout=30)
        if probe.exit_code == AttachProbeExit.NO_SESSION:
            raise JobNotFound(f"job {job_id} has no live tmux session on worker {self.worker}",
                              hint=f"its output stays available: `offload logs {job_id}`")
        argv = ["tmux", "-L", paths.tmux_socket, "attach-session", "-t", f"={job_id}"]
        if task:
            window = probe.text().strip()
            if not probe.ok or not re.fullmatch(r"@[0-9]+", window):
                raise self._not_found(f"task {task} of job {job_id} has not started")
            argv += [";", "select-window", "-t", window]
        if on_attach is not None:
            on_attach()
        return self.provider.attach(argv)

    def shell(self, job_id: str) -> int:
        worktree = self.job(validate_id(job_id)).meta.get("worktree")
        if not worktree:
            raise self._not_found(f"job {job_id} has no worktree")
        script = 'cd "$1" || exit 1; exec "$(command -v bash || echo sh)" -l'
        return self.provider.attach(["sh", "-c", script, "sh", worktree])

    def clean(self, job_id: str) -> list[Survivor]:
        """Remove the job and every process of it; returns the processes that outlived SIGKILL."""
        argv = clean_argv(self.provider.workspace, validate_id(job_id))
        result = check(self.provider.exec(argv, timeout=300), self.worker, f"cleaning job {job_id}")
        found, survivors = parse_clean(result.text())
        if not found.get(job_id):
            raise self._not_found(f"no job {job_id}")
        return survivors


def exit_code_of(job: JobStatus) -> int:
    """The job's exit code: the single task's, or for a playbook the first failed task's (1 if none)."""
    if len(job.tasks) == 1 and job.tasks[0].exit_code is not None:
        return job.tasks[0].exit_code
    code = job.exit_code
    return 1 if code is None else code
