"""The `offload` command: the command modules' Typer apps composed into one, and its one error boundary."""

from __future__ import annotations

import os
import sys

import typer

from offload.cli import agent, doctor, fleet, init, jobs, outputs, results, run, serve, ssh_config
from offload.cli.common import Invocation
from offload.errors import OffloadError

# `run --wait` exits with the job's exit code, so offload's own failures move out of the codes a job uses, as
# `docker run` keeps 125 and up for its own: WAIT_FAILURE_BASE plus the code offload exits with otherwise.
WAIT_FAILURE_BASE = 200

# What each exit code of offload means, for `offload --help` (docs/cli.md has the whole table).
EXIT_CODES = {
    0: "success",
    1: "a failure: a step on a worker, the sync, a cloud API call or pulumi failed; check: the job failed",
    2: "bad usage or configuration, or a missing extra of offload (the line names it)",
    3: "a worker cannot be reached, or a GCE worker is stopped",
    4: "a worker's host key does not match the pinned or remembered one",
    5: "no such job",
    6: "the pulumi CLI is not installed",
    7: "the job has not ended, so it has no result yet",
    8: "the worker refused the SSH login",
    130: "interrupted",
    141: "the output was closed",
}


def _epilog() -> str:
    lines = ["Exit codes:", *(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()),
             f"run --wait: the job's own exit code, and {WAIT_FAILURE_BASE} + N for offload's own failure N",
             "run --attach, attach, shell: the exit code of tmux or of the shell"]
    return "\n".join(lines)


app = typer.Typer(
    name="offload",
    help="Offload heavy development work to your workers.",
    epilog=_epilog(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Listed by `offload --help` in this order: the single commands, then the command groups.
for module in (init, jobs, outputs, results, run, serve, ssh_config, doctor, agent, fleet):
    app.add_typer(module.app)


_command: typer.core.TyperGroup | None = None


def command() -> typer.core.TyperGroup:
    """The app as a click command, built once per process: building it is a tenth of a second, which a warm
    server (`offload.cli.warm`) pays once for all the commands it forks."""
    global _command
    if _command is None:
        _command = typer.main.get_command(app)
    return _command


def _own(code: int, args: list[str], invocation: Invocation) -> int:
    """The exit code of a failure of offload itself (not of the job)."""
    waits = invocation.exits_with_job
    if waits is None:  # no command got as far as saying
        waits = _asks_to_wait(args)
    return WAIT_FAILURE_BASE + code if waits else code


def _asks_to_wait(args: list[str]) -> bool:
    """`run --wait` on a command line that did not parse (so `run` never said so itself)."""
    options = args[:args.index("--")] if "--" in args else args
    return bool(args) and args[0] == "run" and "--wait" in options


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every OffloadError into one line on stderr."""
    debug = os.environ.get("OFFLOAD_DEBUG") == "1"
    args = list(sys.argv[1:] if argv is None else argv)
    invocation = Invocation()
    try:
        rc = command()(args=args, standalone_mode=False, obj=invocation)
    except OffloadError as e:
        if debug:
            raise
        print(f"offload: {e.line()}", file=sys.stderr)
        sys.exit(_own(e.exit_code, args, invocation))
    except KeyboardInterrupt:
        if debug:
            raise
        print("offload: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("offload: aborted", file=sys.stderr)
        sys.exit(_own(1, args, invocation))
    except typer.TyperException as e:  # usage errors from the command-line parser
        if debug:
            raise
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        if message:  # a bare `offload` has printed its help already
            print(f"offload: {message}", file=sys.stderr)
        sys.exit(_own(getattr(e, "exit_code", 2), args, invocation))
    except ModuleNotFoundError as e:  # an optional part's module that a check missed: still one line
        if debug:
            raise
        from offload.extras import missing_module_error

        missing = missing_module_error(e)
        print(f"offload: {missing.line()}" if missing is not None else
              f"offload: unexpected error: {type(e).__name__}: {e} (set OFFLOAD_DEBUG=1 for the traceback)",
              file=sys.stderr)
        sys.exit(_own(missing.exit_code if missing is not None else 1, args, invocation))
    except Exception as e:
        if debug:
            raise
        print(f"offload: unexpected error: {type(e).__name__}: {e} (set OFFLOAD_DEBUG=1 for the traceback)",
              file=sys.stderr)
        sys.exit(_own(1, args, invocation))
    if isinstance(rc, int) and rc:
        sys.exit(rc)
