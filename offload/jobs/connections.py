"""The connection agent as the front ends see it: its state, stopping it, and how long connections persist."""

from __future__ import annotations

from typing import Any

from offload.providers import connection_agent


def persist_seconds() -> float:
    """OFFLOAD_PERSIST: idle seconds before the agent exits and idle connections close (0: no agent)."""
    return connection_agent.persist_seconds()


def agent_status() -> dict[str, Any]:
    """`{"running", "pid", "socket", "connections": [...]}`: what `offload agent status --json` prints."""
    return connection_agent.status()


def stop_agent() -> int | None:
    """Stop the agent and close its connections; its pid, or None when none was running."""
    return connection_agent.stop()
