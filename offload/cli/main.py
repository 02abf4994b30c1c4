"""The `offload` executable: a job command goes to this installation's warm command server when one answers
(`offload.cli.warm`), else runs in this process, which then starts a server for the next command.

This is the first module the executable imports: it loads nothing heavy unless the command runs here.
"""

from __future__ import annotations

import sys

from offload.cli.warm.client import forward, start_server

WARM_COMMANDS = frozenset({"run", "status", "check", "logs", "clean", "pull", "diff", "apply", "get"})


def main() -> None:
    """The `offload` executable: a warm server's child runs the command when one answers, else this process."""
    argv = sys.argv[1:]
    code = forward(argv) if eligible(argv) else None
    if code is not None:
        sys.exit(code)
    from offload.cli.app import main as cli_main

    try:
        cli_main(argv)
    finally:
        if eligible(argv):
            start_server()


def eligible(argv: list[str]) -> bool:
    """A job command that needs no terminal of its own (not `run --attach`)."""
    if not argv or argv[0] not in WARM_COMMANDS:
        return False
    words = argv[:argv.index("--")] if "--" in argv else argv
    return not (argv[0] == "run" and "--attach" in words)
