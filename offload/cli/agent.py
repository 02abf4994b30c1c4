"""`offload agent`: the background process that keeps your workers' connections open between commands."""

from __future__ import annotations

import typer

from offload.cli.common import JsonOpt

app = typer.Typer(
    name="agent",
    help="The connection agent: it keeps each worker's SSH connection (and tunnel) open between commands, so a "
         "warm command opens none. The first command that dials a worker starts it; it exits after "
         "OFFLOAD_PERSIST idle seconds (default 600; 0 turns it off).",
    no_args_is_help=True,
)


@app.command()
def status(json: JsonOpt = False) -> None:
    """Whether the agent runs, and the connections it holds."""
    from offload.cli.ui import print_json
    from offload.cli.warm.client import server_pid
    from offload.jobs.connections import agent_status

    state = agent_status()
    state["warm_server_pid"] = server_pid()
    if json:
        print_json(state)
        return
    warm = f"warm command server {state['warm_server_pid']}" if state["warm_server_pid"] else "no warm command server"
    if not state["running"]:
        print(f"no agent is running (its socket would be {state['socket']}); {warm}")
        return
    print(f"agent {state['pid']} on {state['socket']}; it exits after {state['persist_seconds']:g} s idle; {warm}")
    for c in state["connections"]:
        where = f"{c['user'] + '@' if c['user'] else ''}{c['host']}:{c['port']}"
        print(f"  {c['worker']:<20} {where:<32} {'open' if c['alive'] else 'closed':<6} "
              f"idle {c['idle_seconds']:g} s  {c['steps']} steps{'  via proxy' if c['proxy'] else ''}")
    if not state["connections"]:
        print("  no connections")


@app.command()
def stop() -> None:
    """Stop the agent (its connections close) and this installation's warm command server. The next command starts
    new ones."""
    from offload.cli.warm.client import stop_server
    from offload.jobs.connections import stop_agent

    warm = stop_server()  # the warm command server goes too: commands it is running go on
    pid = stop_agent()
    print(f"stopped agent {pid}; its connections are closed" if pid else "no agent was running")
    if warm:
        print(f"stopped the warm command server {warm}")
