"""`offload mcp`: serve the job commands to coding agents over the Model Context Protocol."""

from __future__ import annotations

import os
from typing import Annotated, List, Optional

import typer

from offload.cli.common import (IapOpt, IdentityOpt, OutputsOpt, StackOpt, StrictHostKeysOpt, WorkerOpt, current_dir,
                                open_service)


app = typer.Typer()


@app.command(help="Serve offload's job commands to a coding agent as MCP tools on stdin and stdout.\n\n"
                  "Run it from the repository the agent works on: `run` snapshots that working tree. The tools "
                  "(run, status, check, logs, clean, pull, diff, apply, get) return what the commands' --json "
                  "prints, over one connection per worker kept for the session (closed after OFFLOAD_PERSIST "
                  "idle seconds, default 600).\n\n"
                  "A job an agent starts gets none of your environment variables unless you allow them here, by "
                  "name: --allow-env NAME (repeatable) or OFFLOAD_MCP_ALLOW_ENV=NAME,NAME.")
def mcp(stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None, identity: IdentityOpt = None,
        iap: IapOpt = False,
        strict_host_keys: StrictHostKeysOpt = False,
        allow_env: Annotated[Optional[List[str]], typer.Option(
            "--allow-env", help="An environment variable the agent may pass to its jobs (`run` with env); "
                                "repeatable, added to those of OFFLOAD_MCP_ALLOW_ENV (comma-separated). None by "
                                "default.", show_default=False)] = None) -> None:
    from offload.cli.mcpserver import ALLOW_ENV, allowed_env, persist_seconds, serve

    persist_seconds()  # a malformed setting is an error before the client connects
    allowed = allowed_env(allow_env or [], os.environ.get(ALLOW_ENV))
    current_dir()
    serve(lambda: open_service(stack, outputs, worker, identity, iap, strict_host_keys=strict_host_keys),
          current_dir, allowed)
