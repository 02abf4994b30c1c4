"""The `offload` command: one Typer app, one sub-app per noun, one error boundary."""

from __future__ import annotations

import os
import sys

import typer

from offload.errors import OffloadError

app = typer.Typer(
    name="offload",
    help="Offload heavy development work to your workers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


_command: typer.core.TyperGroup | None = None


def command() -> typer.core.TyperGroup:
    """The app as a click command, built once per process: building it is a tenth of a second, which a warm
    server (`offload.cli.warm`) pays once for all the commands it forks."""
    global _command
    if _command is None:
        _command = typer.main.get_command(app)
    return _command


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every OffloadError into one line on stderr."""
    debug = os.environ.get("OFFLOAD_DEBUG") == "1"
    try:
        rc = command()(args=argv, standalone_mode=False)
    except OffloadError as e:
        if debug:
            raise
        print(f"offload: {e.line()}", file=sys.stderr)
        sys.exit(e.exit_code)
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
        sys.exit(1)
    except typer.TyperException as e:  # usage errors from the command-line parser
        if debug:
            raise
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        if message:  # a bare `offload` has printed its help already
            print(f"offload: {message}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    except Exception as e:
        if debug:
            raise
        print(f"offload: unexpected error: {type(e).__name__}: {e} (set OFFLOAD_DEBUG=1 for the traceback)",
              file=sys.stderr)
        sys.exit(1)
    if isinstance(rc, int) and rc:
        sys.exit(rc)


# Command modules register themselves on `app` when imported (so `app` is complete for CliRunner too); each
# keeps its heavy imports inside its commands.
from offload.cli import agent, fleet, init, jobs, outputs, results, run, serve, sshconfig  # noqa: E402,F401
