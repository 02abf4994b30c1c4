"""What the result commands tell about where a pulled result goes, against the ref `pull` writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from offload.cli.mcpserver import Session, build_server
from offload.worker.layout import pulled_ref
from tests.cli.conftest import RunCli


def test_pull_and_the_mcp_pull_tool_name_the_ref_pull_writes(cli: RunCli) -> None:
    assert f"into the ref {pulled_ref('JOB')} of this repository" in " ".join(cli("pull", "--help").stdout.split())
    session = Session(lambda: None, persist=600)  # type: ignore[arg-type,return-value]  (never called)
    # A loop of its own, never set as the thread's: later tests (the Pulumi mocks) use the thread's own.
    loop = asyncio.new_event_loop()
    try:
        tools = {t.name: t for t in loop.run_until_complete(build_server(session, Path.cwd).list_tools())}
    finally:
        loop.close()
        session.close()
    assert f"into {pulled_ref('JOB')} of this repository" in (tools["pull"].description or "")
