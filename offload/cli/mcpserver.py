"""The MCP server behind `offload mcp`: the job service's verbs as Model Context Protocol tools.

Every tool calls the same `JobService` the CLI commands call and returns the object their `--json` prints, typed
(mcpresults) so that each tool declares its real `outputSchema`. The service, and with it one connection per
worker, lives for the whole session: it is loaded at the first call (so `initialize` is answered before any of it
is imported), a connection is checked before use (a round trip after a quiet spell), opened again after a drop,
and closed after OFFLOAD_PERSIST idle seconds. An OffloadError becomes a tool error whose text is the CLI's one
line, in the tools' words; nothing but the protocol reaches stdout.

`run` waits for its job at most OFFLOAD_MCP_MAX_WAIT seconds (under every common client's request timeout), sends
progress while it waits, and stops waiting when the request is cancelled or the client goes away; the job goes on.
"""

import difflib
import importlib.metadata
import inspect
import logging
import math
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import Tool as MCPTool
from pydantic import Field, ValidationError

from offload.cli.mcpresults import (ApplyResult, CheckResult, CleanResult, DiffResult, GetResult, LogsResult,
                                    PullResult, RunResult, StatusResult)
from offload.errors import OffloadError, UsageError, WorkerUnreachable
from offload.paths import persist_seconds
from offload.worker.layout import pulled_ref

if TYPE_CHECKING:
    from offload.jobs.service import JobReport, JobService

T = TypeVar("T")

PROBE_AFTER = 15.0           # a connection unused this long must answer a round trip before it is used
LOG_LIMIT = 64 * 1024        # bytes a `logs` call returns unless asked otherwise
MAX_LOG_LIMIT = 1024 * 1024
ALLOW_ENV = "OFFLOAD_MCP_ALLOW_ENV"  # comma-separated names an agent may pass to its jobs, besides --allow-env
MAX_WAIT = "OFFLOAD_MCP_MAX_WAIT"    # the longest a `run` call waits for its job, in seconds
# Under the request timeout of every common client: 60 s for the TypeScript SDK (and so the MCP Inspector and
# gemini-cli) and for many agents built on it.
DEFAULT_MAX_WAIT = 45.0
PROGRESS_LINE = 200          # characters of the last log line a progress notification carries
PROGRESS_READS = 4           # log reads (of LOG_LIMIT bytes) a poll makes at most to find the job's last line

INSTRUCTIONS = """\
offload runs commands on the developer's remote worker, on an exact copy of this repository's working tree
(uncommitted and untracked files included), in a warm worktree whose build outputs survive from the last job.
Use it for anything slow or heavy: test suites, builds, benchmarks, long agent loops.
Start with `run` (give `wait_seconds` for short jobs; the server waits at most its cap and then answers with
"state": "running"); poll long ones with `check` and read their output with `logs` from `next_offset`. The job's
changes come home with `diff` (to look) and `apply` (a three-way merge into the working tree); build outputs
with `get`. `clean` removes a job and everything it left on the worker."""

# The job service's errors speak of the CLI (its flags and commands); an agent has the tools and their arguments.
TOOL_WORDS = (
    ("`offload status` shows", "the `status` tool shows"),
    ("pick one with --task", "pick one with the `task` argument"),
    ("--env takes", "env takes"),
    ("--ref takes", "ref takes"),
    ("--ref ", "ref: "),
)
# A command that a tool does the same as, job id and flags included: `offload logs JOB -f` is the `logs` tool.
TOOL_COMMAND = re.compile(r"`offload (status|check|logs|clean|pull|diff|get|run)(?: [^`]*)?`")


def tool_words(line: str) -> str:
    """LINE, the CLI's one line, with the CLI's flags and commands named as the tools and their arguments. A
    command no tool does (`offload apply --undo JOB`) stays as it is: the agent can hand it to the user."""
    for cli, tool in TOOL_WORDS:
        line = line.replace(cli, tool)
    return TOOL_COMMAND.sub(lambda m: f"the `{m.group(1)}` tool", line)


class Refused(ToolError):
    """A tool error whose text is exactly the line the agent reads."""


def tool_error(e: OffloadError) -> Refused:
    return Refused(f"offload: {tool_words(e.line())}")


def allowed_env(flags: Iterable[str], setting: str | None) -> frozenset[str]:
    """The environment variables an agent may pass to its jobs: the `--allow-env` FLAGS and the comma-separated
    names of the OFFLOAD_MCP_ALLOW_ENV SETTING, none by default. A bad name is a UsageError before serving."""
    flags = list(flags)
    if not flags and not (setting or "").strip(", \t"):
        return frozenset()  # the default, without loading the job launcher's rules
    from offload.jobs.launch import ENV_NAME, validate_env

    out: set[str] = set()
    for source, names in (("--allow-env", flags), (ALLOW_ENV, (setting or "").split(","))):
        for raw in names:
            name = raw.strip()
            if not name and source == ALLOW_ENV:
                continue  # "A,B," or an empty setting
            if not ENV_NAME.fullmatch(name):
                raise UsageError(f"--allow-env takes environment variable names (letters, digits and '_'); got {raw!r}"
                                 if source == "--allow-env" else
                                 f"{source} takes environment variable names (letters, digits and '_'); got {raw!r}")
            try:
                validate_env({name: ""})
            except UsageError as e:
                raise UsageError(f"{source}: {e.message}") from None
            out.add(name)
    return frozenset(out)


def max_wait_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """OFFLOAD_MCP_MAX_WAIT: the longest a `run` call waits for its job (default 45 s). A malformed value is a
    UsageError before serving."""
    raw = environ.get(MAX_WAIT, "").strip()
    if not raw:
        return DEFAULT_MAX_WAIT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (0 <= seconds <= 3600):  # NaN fails too
        raise UsageError(f"{MAX_WAIT} is a number of seconds from 0 to 3600; got {raw!r}",
                         hint=f"keep it under your client's request timeout; the default is {DEFAULT_MAX_WAIT:g}")
    return seconds


def argument_error(tool: str, e: ValidationError) -> str:
    """A rejected argument in one line."""
    problems = []
    for err in e.errors():
        where = ".".join(str(part) for part in err["loc"]) or "arguments"
        problems.append(f"{where}: {err['msg'][:1].lower()}{err['msg'][1:]}")
    return f"offload: {tool}: bad argument {'; '.join(problems)}"


def unknown_arguments(tool: str, given: Iterable[str], known: Iterable[str]) -> str | None:
    """The one line refusing the arguments of GIVEN that the tool does not take (None when there are none)."""
    known = list(known)
    unknown = [str(name) for name in given if name not in known]
    if not unknown:
        return None
    said = ", ".join(repr(name[:60]) for name in unknown[:5]) + (f" and {len(unknown) - 5} more"
                                                                   if len(unknown) > 5 else "")
    close = difflib.get_close_matches(unknown[0], known, n=1)
    guess = f"did you mean {close[0]}? " if close else ""
    takes = ", ".join(known) if known else "no arguments"
    return (f"offload: {tool}: unknown argument{'s' if len(unknown) > 1 else ''} {said} ({guess}{tool} takes "
            f"{takes})")


def installed_version() -> str:
    """offload's version, as installed (what `serverInfo.version` tells the client)."""
    try:
        return importlib.metadata.version("offload")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


ToolSpec = tuple[Callable[..., Any], str]  # a tool's function and its description


class OffloadServer(MCPServer):
    """An MCPServer whose tools take no argument they do not declare, and whose tool errors are one line each:
    ours verbatim, a rejected argument said plainly.

    The tools' schemas are made when the client first lists or calls them, not before `initialize` is answered:
    making them (pydantic's schemas for the arguments and the results) takes about a tenth of a second."""

    def __init__(self, tools: list[ToolSpec], **kw: Any) -> None:
        self._specs = tools
        self._arguments: dict[str, list[str]] = {}
        super().__init__("offload", version=installed_version(), **kw)

    async def _register(self) -> None:
        if self._specs:
            specs, self._specs = self._specs, []
            for fn, description in specs:
                self.add_tool(fn, description=description)
            for tool in await super().list_tools():
                self._arguments[tool.name] = list(tool.input_schema.get("properties", {}))

    async def list_tools(self) -> list[MCPTool]:
        await self._register()
        tools = await super().list_tools()
        for tool in tools:
            tool.input_schema["additionalProperties"] = False  # as call_tool enforces it
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        await self._register()
        if name in self._arguments:
            refusal = unknown_arguments(name, arguments or {}, self._arguments[name])
            if refusal:
                raise Refused(refusal)
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

    def __init__(self, open_service: Callable[[], "JobService"], *, persist: float | None = None) -> None:
        self._open_service = open_service
        self._service: "JobService | None" = None
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self.persist = persist_seconds() if persist is None else persist
        self._stop = threading.Event()
        self._closer = threading.Thread(target=self._close_when_idle, name="offload-idle", daemon=True)
        self._closer.start()

    def call(self, fn: Callable[["JobService"], T], *, retry: bool = False) -> T:
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

    async def acall(self, fn: Callable[["JobService"], T], *, retry: bool = False, abandon: bool = False) -> T:
        """`call` on a worker thread, the event loop free meanwhile. With ABANDON (a call that only reads the
        worker), a cancelled request stops waiting for the call at once (the call ends on its own, its answer
        unread). A call that writes here (pull, diff, apply, get) or starts or ends a job is always waited for:
        a cancel, or the client going away, takes effect once it is done."""
        return await anyio.to_thread.run_sync(lambda: self.call(fn, retry=retry), abandon_on_cancel=abandon)

    def _ready(self) -> "JobService":
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

    def close(self, *, timeout: float = 1.0) -> None:
        """Close the connections, unless a call abandoned by a cancel still holds them after TIMEOUT seconds
        (the process is ending: its sockets close with it)."""
        self._stop.set()
        if not self._lock.acquire(timeout=timeout):
            return
        try:
            if self._service is not None:
                self._service.close()
                self._service = None
        finally:
            self._lock.release()


def progress_token(ctx: Context) -> Any:
    """The progress token of the request CTX serves, or None when the client asked for no progress."""
    try:
        meta = ctx.request_context.meta
    except ValueError:  # no request: a call made in-process
        return None
    if not meta:
        return None
    return meta.get("progressToken", meta.get("progress_token"))  # type: ignore[union-attr]


def last_line(data: str) -> str | None:
    """The last non-blank line of DATA, cut to PROGRESS_LINE characters; None when there is none."""
    for line in reversed(data.splitlines()):
        if line.strip():
            line = line.strip()
            return line if len(line) <= PROGRESS_LINE else line[:PROGRESS_LINE - 1] + "…"
    return None


class Watch:
    """What a waiting `run` tells the client: the job's last log line, read on from where it stopped."""

    def __init__(self, session: Session, job_id: str) -> None:
        self.session = session
        self.job_id = job_id
        self.offsets: dict[str, int] = {}
        self.line: str | None = None

    async def read(self, report: "JobReport") -> str | None:
        """The last line logged by the job's running task (or its last task), read since the last call."""
        tasks = report.job.tasks
        running = [t for t in tasks if t.state.value == "running"] or tasks[-1:]
        if not running:
            return self.line
        task = running[0].name
        for _ in range(PROGRESS_READS):  # a chatty job: read on, a bounded amount a poll, to its latest line
            offset = self.offsets.get(task, 0)
            chunk = await self.session.acall(lambda s: s.logs(self.job_id, task, offset, LOG_LIMIT), retry=True,
                                             abandon=True)
            self.offsets[task] = chunk.next_offset
            self.line = last_line(chunk.data.decode("utf-8", "replace")) or self.line
            if not chunk.more:
                break
        return self.line


async def wait_for_end(session: Session, ctx: Context, job_id: str, until: float, began: float) -> "JobReport":
    """The job's report once it has ended, or as it is at the monotonic time UNTIL. Sends progress (seconds
    since BEGAN, the last log line) when the client gave a progress token. The session is free for other calls
    between polls, and a cancel ends the wait at once."""
    watch = Watch(session, job_id) if progress_token(ctx) is not None else None
    nap = 0.05
    total = round(until - began, 1)
    while True:
        report = await session.acall(lambda s: s.check(job_id), retry=True, abandon=True)
        if report.job.settled:  # its result kept: a `pull` right after finds it
            return report
        if watch is not None:
            message = await watch.read(report)
            await ctx.report_progress(min(round(time.monotonic() - began, 1), total), total,
                                      message or f"job {job_id} is {report.job.state.value}")
        left = until - time.monotonic()
        if left <= 0:
            return report
        await anyio.sleep(min(nap, left))
        nap = min(nap * 2, 1.0)


JobArg = Annotated[str, Field(description="The job id that `run` returned.")]


def _tool(fn: Callable[..., Any], description: str | None = None) -> ToolSpec:
    """FN as a tool whose description is its docstring (or DESCRIPTION) as plain paragraphs: without the source's
    indentation and line breaks."""
    text = inspect.cleandoc(description or fn.__doc__ or "")
    paragraphs = (" ".join(p.split()) for p in text.split("\n\n"))
    return fn, "\n\n".join(p for p in paragraphs if p)


def build_server(session: Session, cwd: Callable[[], Path], allow_env: frozenset[str] = frozenset(), *,
                 max_wait: float = DEFAULT_MAX_WAIT) -> MCPServer:
    """The MCP server whose tools run on SESSION, for the repository at CWD(); `run` passes a job only the
    environment variables in ALLOW_ENV (the ones the user allowed) and waits at most MAX_WAIT seconds."""
    tools = [_run_tool(session, cwd, allow_env, max_wait), *_job_tools(session, cwd), *_result_tools(session, cwd)]
    return OffloadServer(tools, instructions=INSTRUCTIONS, log_level="WARNING")


def _run_tool(session: Session, cwd: Callable[[], Path], allow_env: frozenset[str], max_wait: float) -> ToolSpec:
    """The `run` tool, whose description names the environment variables a job may be given and the wait cap."""
    allowed = ", ".join(sorted(allow_env)) if allow_env else "none (the user allows a name by starting the " \
        "server as `offload mcp --allow-env NAME`)"

    async def run(ctx: Context,
                  command: Annotated[str | None, Field(description="Shell command to run, as you would type "
                                                       "it.")] = None,
                  playbook: Annotated[str | None, Field(description="Name of a playbook in offload.yaml to run "
                                                        "instead of a command.")] = None,
                  worker: Annotated[str | None, Field(description="Worker to run on (default: picked).")] = None,
                  env: Annotated[list[str] | None, Field(description="Names of environment variables of the "
                                                         "server to pass to the job (values never travel in an "
                                                         "argv); only those the user allowed, listed in this "
                                                         "tool's description.")] = None,
                  fresh: Annotated[bool, Field(description="Run in a worktree with no ignored files left "
                                               "(a clean build).")] = False,
                  ref: Annotated[str | None, Field(description="Run on this commit instead of the working "
                                                   "tree.")] = None,
                  wait_seconds: Annotated[float, Field(ge=0, le=3600, description=(
                      f"Wait up to this long for the job to end; the server answers after {max_wait:g} s at most "
                      "(its cap), with \"state\": \"running\" if the job goes on."))] = 0) -> RunResult:
        began = time.monotonic()
        if not command and not playbook:
            raise Refused("offload: run: nothing to run: give `command` or `playbook`")
        if command and playbook:
            raise Refused("offload: run: give either `command` or `playbook`, not both")
        from offload.jobs.service import RunRequest

        request = RunRequest(cwd=cwd(), command=[command] if command else (), playbook=playbook,
                             env=env or (), ref=ref, fresh=fresh, worker=worker, allow_env=allow_env)
        # A bad command or playbook fails before anything is dialled.
        plan, _ = await session.acall(lambda s: s.plan(request))
        if wait_seconds > 0:
            await ctx.report_progress(0, round(min(wait_seconds, max_wait), 1),
                                      "snapshotting the working tree and starting the job")
        with anyio.CancelScope(shield=True):  # a job being started is started: a cancel takes effect after
            submitted = await session.acall(lambda s: s.submit(request))
        out: RunResult = {"id": submitted.id, "worker": submitted.worker}
        if wait_seconds <= 0:
            return out
        asked = time.monotonic() + wait_seconds
        until = min(asked, began + max_wait)
        try:
            report = await wait_for_end(session, ctx, submitted.id, until, began)
        except anyio.get_cancelled_exc_class():
            # The request was cancelled, or the client went away: the wait ends, the job goes on.
            print(f"offload: run: stopped waiting for job {submitted.id} (the request was cancelled or the client "
                  f"went away); it goes on on {submitted.worker}", file=sys.stderr, flush=True)
            raise
        out["waited"] = round(time.monotonic() - began, 1)
        out["state"] = report.job.state.value  # type: ignore[typeddict-item]
        if not report.job.state.finished:
            capped = until < asked
            out["note"] = (f"job {submitted.id} goes on" +
                           (f" (the server waits at most {max_wait:g} s)" if capped else "") +
                           f": poll `check` with job {submitted.id!r}, read `logs` from next_offset")
            return out
        out["exit_code"] = report.job.exit_code
        if plan.artifacts:
            try:
                got = await session.acall(lambda s: s.get(submitted.id, plan.artifacts, cwd(), missing_ok=True))
                out["artifacts"] = {"to": got.dest, "files": got.files}
            except Refused as e:
                out["artifacts"] = {"error": str(e)}
        return out

    return _tool(run, description=(
        "Start a job on a worker, on an exact copy of the working tree (uncommitted and untracked files "
        "included). Returns {\"id\", \"worker\"}. With wait_seconds it waits for the job, at most "
        f"{max_wait:g} s (the server's cap, under clients' request timeouts), sending progress (seconds, last log "
        "line) when the request has a progress token, and adds \"state\": \"success\" or \"failed\" and "
        "\"exit_code\" when the job ended, plus \"artifacts\" (the playbook's artifacts copied into the "
        "repository, as `get` does) when it has any; or \"state\": \"running\" when the job goes on: then poll "
        f"`check` and `logs`. Environment variables `env` may name: {allowed}."))


def _job_tools(session: Session, cwd: Callable[[], Path]) -> list[ToolSpec]:
    """The tools about jobs as they are on their workers: status, check, logs and clean."""

    async def status() -> StatusResult:
        """Every worker of the stack: its state, cost and workspace, and its jobs, oldest first (the same object
        as `offload status --json`)."""
        report = await session.acall(lambda s: s.status(), retry=True, abandon=True)
        return report.to_dict()  # type: ignore[return-value]

    async def check(job: JobArg) -> CheckResult:
        """A job's state and exit code, and its tasks' states and exit codes."""
        report = await session.acall(lambda s: s.check(job), retry=True, abandon=True)
        return report.to_dict()  # type: ignore[return-value]

    async def logs(job: JobArg,
                   task: Annotated[str | None, Field(description="Task of a playbook job (default: the only "
                                                     "task).")] = None,
                   offset: Annotated[int, Field(ge=0, description="Byte offset to read from: 0, then the "
                                                "next_offset of the previous call.")] = 0,
                   max_bytes: Annotated[int, Field(ge=1, le=MAX_LOG_LIMIT, description="Most bytes to return in "
                                                   "one call.")] = LOG_LIMIT) -> LogsResult:
        """A task's output from a byte offset: {"data", "next_offset", "state", "task", "more"}. Call again from
        next_offset; once state is finished (success, failed or skipped) and more is false, the log is whole."""
        chunk = await session.acall(lambda s: s.logs(job, task, offset, max_bytes), retry=True,
                                    abandon=True)
        return chunk.to_dict()  # type: ignore[return-value]

    async def clean(job: JobArg) -> CleanResult:
        """End a job and remove everything it left on the worker: its processes, worktree lease, result and
        logs."""
        return (await session.acall(lambda s: s.clean(job, cwd()))).to_dict()  # type: ignore[return-value]

    return [_tool(status), _tool(check), _tool(logs), _tool(clean)]


def _result_tools(session: Session, cwd: Callable[[], Path]) -> list[ToolSpec]:
    """The tools that bring a job's work home: pull, diff, apply and get."""

    async def pull(job: JobArg) -> PullResult:
        return (await session.acall(lambda s: s.pull(job, cwd()), retry=True)).to_dict()  # type: ignore

    async def diff(job: JobArg) -> DiffResult:
        """A job's changes against the snapshot it ran on, as a git diff (pulled first when needed)."""
        text = await session.acall(lambda s: s.diff(job, cwd()), retry=True)
        return {"id": job, "diff": text.decode("utf-8", "replace")}

    async def apply(job: JobArg) -> ApplyResult:
        """Merge a job's changes into the working tree, three ways: your uncommitted work is kept, and on any
        conflict nothing is written and the files are named. Returns the files it wrote."""
        return (await session.acall(lambda s: s.apply(job, cwd()))).to_dict()  # type: ignore[return-value]

    async def get(job: JobArg,
                  paths: Annotated[list[str], Field(min_length=1, description="Files, directories or globs, "
                                                    "relative to the job's worktree (ignored build outputs "
                                                    "included).")],
                  to: Annotated[str | None, Field(description="Directory inside the repository to copy into, "
                                                  "relative to its top (default: .offload/JOB/). Outside "
                                                  ".offload/, files already there are never replaced.")] = None
                  ) -> GetResult:
        """Copy files from a job's worktree into the repository, by default into .offload/JOB/. A path that
        leaves the worktree, or a `to` outside the repository, is refused and nothing is written."""
        dest = Path(to) if to else None
        fetched = await session.acall(lambda s: s.get(job, paths, cwd(), dest, within_repository=True), retry=True)
        return fetched.to_dict()  # type: ignore[return-value]

    return [_tool(pull, description=f"Fetch a job's result into {pulled_ref('JOB')} of this repository (only the "
                                    "objects it lacks) and return its diffstat; nothing else is written locally."),
            _tool(diff), _tool(apply), _tool(get)]


def serve(open_service: Callable[[], "JobService"], cwd: Callable[[], Path],
          allow_env: frozenset[str] = frozenset(), *, max_wait: float = DEFAULT_MAX_WAIT) -> None:
    """Serve the tools on stdin and stdout until the client goes away; jobs get only the ALLOW_ENV variables."""
    if os.environ.get("OFFLOAD_DEBUG") != "1":
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    session = Session(open_service)
    try:
        build_server(session, cwd, allow_env, max_wait=max_wait).run("stdio")
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
