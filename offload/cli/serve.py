"""`offload mcp`: serve the job commands to coding agents over the Model Context Protocol."""

from __future__ import annotations

from offload.cli.app import app
from offload.cli.common import IapOpt, IdentityOpt, OutputsOpt, StackOpt, WorkerOpt, current_dir, open_service


@app.command(help="Serve offload's job commands to a coding agent as MCP tools on stdin and stdout.\n\n"
                  "Run it from the repository the agent works on: `run` snapshots that working tree. The tools "
                  "(run, status, check, logs, clean, pull, diff, apply, get) return what the commands' --json "
                  "prints, over one connection per worker kept for the session (closed after OFFLOAD_PERSIST "
                  "idle seconds, default 600).")
def mcp(stack: StackOpt = None, outputs: OutputsOpt = None, worker: WorkerOpt = None, identity: IdentityOpt = None,
        iap: IapOpt = False) -> None:
    from offload.cli.mcpserver import persist_seconds, serve

    persist_seconds()  # a malformed setting is an error before the client connects
    current_dir()
    serve(lambda: open_service(stack, outputs, worker, identity, iap), current_dir)
