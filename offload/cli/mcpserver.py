"""The MCP server behind `offload mcp`: the job service's verbs as Model Context Protocol tools.

Every tool calls the same `JobService` the CLI commands call and returns the object their `--json` prints. The
service, and with it one connection per worker, lives for the whole session: a connection is checked before use
(a round trip after a quiet spell), opened again after a drop, and closed after OFFLOAD_PERSIST idle seconds. An
OffloadError becomes a tool error whose text is the CLI's one line; nothing but the protocol reaches stdout.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError

from offload.errors import OffloadError, UsageError, WorkerUnreachable
from offload.jobs.connections import persist_seconds
from offload.jobs.launch import ENV_NAME, validate_env
from offload.jobs.service import JobReport, JobService, RunRequest
from offload.worker.layout import pulled_ref

T = TypeVar("T")

PROBE_AFTER = 15.0           # a connection unused this long must answer a round trip before it is used
LOG_LIMIT = 64 * 1024        # bytes a `logs` call returns unless asked otherwise
MAX_LOG_LIMIT = 1024 * 1024
ALLOW_ENV = "OFFLOAD_MCP_ALLOW_ENV"  # comma-separated names an agent may pass to its jobs, besides --allow-env

INSTRUCTIONS = """\
offload runs commands on the developer's remote worker, on an exact copy of this repository's working tree
(uncommitted and untracked files included), in a warm worktree whose build outputs survive from the last job.
Use it for anything slow or heavy: test suites, builds, benchmarks, long agent loops.
Start with `run` (give `wait_seconds` for short jobs); poll long ones with `check` and read their output with
`logs` from `next_offset`. The job's changes come home with `diff` (to look) and `apply` (a three-way merge into
the working tree); build outputs with `get`. `clean` removes a job and everything it left on the worker."""


class Refused(ToolError):
    """A tool error whose text is exactly the line the CLI would print."""


def tool_error(e: OffloadError) -> Refused:
    return Refused(f"offload: {e.line()}")


def allowed_env(flags: Iterable[str], setting: str | None) -> frozenset[str]:
    """The environment variables an agent may pass to its jobs: the `--allow-env` FLAGS and the comma-separated
    names of the OFFLOAD_MCP_ALLOW_ENV SETTING, none by default. A bad name is a UsageError before serving."""
    out: set[str] = set()
    for source, names in (("--allow-env", list(flags)), (ALLOW_ENV, (setting or "").split(","))):
        for raw in names:
            name = raw.strip()
            if not name and source == ALLOW_ENV:
                continue  # "A,B," or an empty setting
            if not ENV_NAME.fullmatch(name):
                raise UsageError(f"{source} takes environment variable names (letters, digits and '_'); got {raw!r}")
            try:
                validate_env({name: ""})
            except UsageError as e:
                raise UsageError(f"{source}: {e.message}") from None
            out.add(name)
    return frozenset(out)


def argument_error(tool: str, e: ValidationError) -> str:
    """A rejected argument in one line, as the CLI would say it."""
    problems = []
    for err in e.errors():
        where = ".".join(str(part) for part in err["loc"]) or "arguments"
        problems.append(f"{where}: {err['msg'][:1].lower()}{err['msg'][1:]}")
    return f"offload: {tool}: bad argument {'; '.join(problems)}"


class OffloadServer(MCPServer):
    """An MCPServer whose tool errors are one line each: ours verbatim, a rejected argument said plainly."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            cause = e.__cause__
            if isinstance(cause, Refused):
                raise Refused(str(cause)) from None
            if isinstance(cause, ValidationError):
                raise Refused(argument_error(name, cause)) from None
            raise


class Session:
    """The server's state: one job service, opened at the first call and kept for the session, and the calls
    that use it, one at a time."""

    def __init__(self, open_service: Callable[[], JobService], *, persist: float | None = None) -> None:
        self._open_service = open_service
        self._service: JobService | None = None
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self.persist = persist_seconds() if persist is None else persist
        self._stop = threading.Event()
        self._closer = threading.Thread(target=self._close_when_idle, name="offload-idle", daemon=True)
        self._closer.start()

    def call(self, fn: Callable[[JobService], T], *, retry: bool = False) -> T:
        """FN on the session's service. With RETRY (a call that only reads), a connection that dropped during
        the call is opened again and the call made once more."""
        with self._lock:
            try:
                service = self._ready()
                before = [p for p in service.fleet.providers if p.connected]
                try:
                    return fn(service)
                except WorkerUnreachable:
                    dropped = [p for p in before if not p.revive()]
                    if not (retry and dropped):
                        raise
                    return fn(service)
            except OffloadError as e:
                raise tool_error(e) from None
            except Refused:
                raise
            except Exception as e:  # a defect: one line for the agent, the traceback only when debugging
                if os.environ.get("OFFLOAD_DEBUG") == "1":
                    traceback.print_exc(file=sys.stderr)
                raise Refused(f"offload: unexpected error: {type(e).__name__}: {e} "
                                "(set OFFLOAD_DEBUG=1 for the traceback)") from None
            finally:
                self._last = time.monotonic()
                if self.persist == 0 and self._service is not None:
                    self._service.fleet.close()

    def _ready(self) -> JobService:
        if self._service is None:
            self._service = self._open_service()
        elif time.monotonic() - self._last > PROBE_AFTER:
            self._service.fleet.revive(probe=True)
        else:
            self._service.fleet.revive()
        return self._service

    def _close_when_idle(self) -> None:
        while not self._stop.wait(min(max(self.persist / 4, 0.05), 5.0)):
            with self._lock:
                if self._service is not None and time.monotonic() - self._last >= self.persist:
                    self._service.fleet.close()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._service is not None:
                self._service.close()
                self._service = None


def wait_for_end(session: Session, job_id: str, seconds: float) -> JobReport | None:
    """The job's report once it has ended, polling until SECONDS have passed (None if it is still going). The
    session is free for other calls between polls."""
    deadline = time.monotonic() + seconds
    nap = 0.05
    while True:
        report = session.call(lambda s: s.check(job_id), retry=True)
        if report.job.settled:  # its result kept: a `pull` right after finds it
            return report
        left = deadline - time.monotonic()
        if left <= 0:
            return report if report.job.state.finished else None
        time.sleep(min(nap, left))
        nap = min(nap * 2, 1.0)


JobArg = Annotated[str, Field(description="The job id that `run` returned.")]


def build_server(session: Session, cwd: Callable[[], Path], allow_env: frozenset[str] = frozenset()) -> MCPServer:
    """The MCP server whose tools run on SESSION, for the repository at CWD(); `run` passes a job only the
    environment variables in ALLOW_ENV (the ones the user allowed)."""
    server = OffloadServer("offload", instructions=INSTRUCTIONS, log_level="WARNING")
    _add_run(server, session, cwd, allow_env)
    _add_job_tools(server, session, cwd)
    _add_result_tools(server, session, cwd)
    return server


def _add_run(server: MCPServer, session: Session, cwd: Callable[[], Path], allow_env: frozenset[str]) -> None:
    """The `run` tool, whose description names the environment variables a job may be given."""
    allowed = ", ".join(sorted(allow_env)) if allow_env else "none (the user allows a name by starting the " \
        "server as `offload mcp --allow-env NAME`)"

    @server.tool(description="Start a job on a worker, on an exact copy of the working tree (uncommitted and "
                             "untracked files included). Returns {\"id\", \"worker\"}, plus \"state\" and "
                             "\"exit_code\" when the job ended within wait_seconds; poll longer jobs with `check` "
                             f"and `logs`. Environment variables `env` may name: {allowed}.")
    def run(command: Annotated[str | None, Field(description="Shell command to run, as you would type it.")] = None,
            playbook: Annotated[str | None, Field(description="Name of a playbook in offload.yaml to run "
                                                  "instead of a command.")] = None,
            worker: Annotated[str | None, Field(description="Worker to run on (default: picked).")] = None,
            env: Annotated[list[str] | None, Field(description="Names of environment variables of the server "
                                                   "to pass to the job (values never travel in an argv); only "
                                                   "those the user allowed, listed in this tool's "
                                                   "description.")] = None,
            fresh: Annotated[bool, Field(description="Run in a worktree with no ignored files left "
                                         "(a clean build).")] = False,
            ref: Annotated[str | None, Field(description="Run on this commit instead of the working "
                                             "tree.")] = None,
            wait_seconds: Annotated[float, Field(ge=0, le=3600, description="Wait up to this long for the job "
                                                 "to end.")] = 0) -> dict[str, Any]:
        if not command and not playbook:
            raise Refused("offload: nothing to run: give a command or a playbook")
        request = RunRequest(cwd=cwd(), command=[command] if command else (), playbook=playbook,
                             env=env or (), ref=ref, fresh=fresh, worker=worker, allow_env=allow_env)
        session.call(lambda s: s.plan(request))  # a bad command or playbook fails before anything is dialled
        submitted = session.call(lambda s: s.submit(request))
        out = submitted.to_dict()
        if wait_seconds > 0:
            report = wait_for_end(session, submitted.id, wait_seconds)
            if report is not None:
                out.update(state=report.job.state.value, exit_code=report.job.exit_code)
        return out


def _add_job_tools(server: MCPServer, session: Session, cwd: Callable[[], Path]) -> None:
    """The tools about jobs as they are on their workers: status, check, logs and clean."""

    @server.tool()
    def status() -> dict[str, Any]:
        """Every worker of the stack: its state, cost and workspace, and its jobs, oldest first (the same object
        as `offload status --json`)."""
        return session.call(lambda s: s.status(), retry=True).to_dict()

    @server.tool()
    def check(job: JobArg) -> dict[str, Any]:
        """A job's state and exit code, and its tasks' states and exit codes."""
        return session.call(lambda s: s.check(job), retry=True).to_dict()

    @server.tool()
    def logs(job: JobArg,
             task: Annotated[str | None, Field(description="Task of a playbook job (default: the only "
                                               "task).")] = None,
             offset: Annotated[int, Field(ge=0, description="Byte offset to read from: 0, then the "
                                          "next_offset of the previous call.")] = 0,
             max_bytes: Annotated[int, Field(ge=1, le=MAX_LOG_LIMIT, description="Most bytes to return in one "
                                             "call.")] = LOG_LIMIT) -> dict[str, Any]:
        """A task's output from a byte offset: {"data", "next_offset", "state", "more"}. Call again from
        next_offset; once state is finished (success, failed or skipped) and more is false, the log is whole."""
        return session.call(lambda s: s.logs(job, task, offset, max_bytes), retry=True).to_dict()

    @server.tool()
    def clean(job: JobArg) -> dict[str, Any]:
        """End a job and remove everything it left on the worker: its processes, worktree lease, result and
        logs."""
        return session.call(lambda s: s.clean(job, cwd())).to_dict()


def _add_result_tools(server: MCPServer, session: Session, cwd: Callable[[], Path]) -> None:
    """The tools that bring a job's work home: pull, diff, apply and get."""

    @server.tool(description=f"Fetch a job's result into {pulled_ref('JOB')} of this repository (only the objects "
                             "it lacks) and return its diffstat; nothing else is written locally.")
    def pull(job: JobArg) -> dict[str, Any]:
        return session.call(lambda s: s.pull(job, cwd()), retry=True).to_dict()

    @server.tool()
    def diff(job: JobArg) -> dict[str, Any]:
        """A job's changes against the snapshot it ran on, as a git diff (pulled first when needed)."""
        text = session.call(lambda s: s.diff(job, cwd()), retry=True)
        return {"id": job, "diff": text.decode("utf-8", "replace")}

    @server.tool()
    def apply(job: JobArg) -> dict[str, Any]:
        """Merge a job's changes into the working tree, three ways: your uncommitted work is kept, and on any
        conflict nothing is written and the files are named. Returns the files it wrote."""
        return session.call(lambda s: s.apply(job, cwd())).to_dict()

    @server.tool()
    def get(job: JobArg,
            paths: Annotated[list[str], Field(min_length=1, description="Files, directories or globs, relative "
                                              "to the job's worktree (ignored build outputs included).")],
            to: Annotated[str | None, Field(description="Directory inside the repository to copy into, relative "
                                            "to its top (default: .offload/JOB/). Outside .offload/, files "
                                            "already there are never replaced.")] = None) -> dict[str, Any]:
        """Copy files from a job's worktree into the repository, by default into .offload/JOB/. A path that
        leaves the worktree, or a `to` outside the repository, is refused and nothing is written."""
        dest = Path(to) if to else None
        return session.call(lambda s: s.get(job, paths, cwd(), dest, within_repository=True), retry=True).to_dict()


def serve(open_service: Callable[[], JobService], cwd: Callable[[], Path],
          allow_env: frozenset[str] = frozenset()) -> None:
    """Serve the tools on stdin and stdout until the client goes away; jobs get only the ALLOW_ENV variables."""
    if os.environ.get("OFFLOAD_DEBUG") != "1":
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    session = Session(open_service)
    try:
        build_server(session, cwd, allow_env).run("stdio")
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
