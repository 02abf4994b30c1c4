"""`offload mcp`: serve the job commands to coding agents over the Model Context Protocol."""

from __future__ import annotations

import os
import sys
from typing import Annotated, List, Optional

import typer

from offload.cli.common import (IapOpt, IdentityOpt, OutputsOpt, StackOpt, StrictHostKeysOpt, WorkerOpt, current_dir,
                                open_service)


app = typer.Typer()


@app.command(help="Serve offload's job commands to a coding agent as MCP tools on stdin and stdout.\n\n"
                  "Run it from the repository the agent works on: `run` snapshots that working tree. The tools "
                  "(run, status, check, logs, clean, pull, diff, apply, get) return what the commands' --json "
                  "prints, over one connection per worker kept for the session (closed after OFFLOAD_PERSIST "
                  "idle seconds, default 600). `run` waits for its job at most OFFLOAD_MCP_MAX_WAIT seconds "
                  "(default 45), under clients' request timeouts, then answers that the job is running.\n\n"
                  "A job an agent starts gets none of your environment variables unless you allow them here, by "
                  "name: --allow-env NAME (repeatable) or OFFLOAD_MCP_ALLOW_ENV=NAME,NAME.")
def mcp(stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None, identity: IdentityOpt = None,
        iap: IapOpt = False,
        strict_host_keys: StrictHostKeysOpt = False,
        allow_env: Annotated[Optional[List[str]], typer.Option(
            "--allow-env", help="An environment variable the agent may pass to its jobs (`run` with env); "
                                "repeatable, added to those of OFFLOAD_MCP_ALLOW_ENV (comma-separated). None by "
                                "default.", show_default=False)] = None) -> None:
    from offload.cli.mcpserver import ALLOW_ENV, allowed_env, max_wait_seconds, persist_seconds, serve

    persist_seconds()  # a malformed setting is an error before the client connects
    max_wait = max_wait_seconds()
    allowed = allowed_env(allow_env or [], os.environ.get(ALLOW_ENV))
    current_dir()
    from offload.cli.ui import TransferDisplay

    # An agent reads results, not a terminal: no progress and no summary lines from the server.
    quiet = TransferDisplay(live=False, summaries=False)
    serve(lambda: open_service(stack, outputs, worker, identity, iap, meters=quiet,
                               strict_host_keys=strict_host_keys),
          current_dir, allowed, max_wait=max_wait)
    # The client is gone and the connections are closed. The interpreter's own teardown (its modules, the SDK's
    # and SSH's objects) takes up to a second on a loaded machine, which a client that waits for its server to
    # exit would wait too: leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
