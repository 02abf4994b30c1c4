"""`offload mcp` driven by the MCP SDK's own client over stdio, against real sshd and container workers: the
tools, one SSH login for a whole session, connections opened again after a drop and closed when idle, tool
errors in one line, results equal to what the CLI's --json prints, and nothing on stdout but the protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.e2e.helpers import offload
from tests.workers import SshdWorker, make_repo, sshd_record, wait_for, write_outputs

TOOLS = {"run", "status", "check", "logs", "clean", "pull", "diff", "apply", "get"}
FINISHED = {"success", "failed", "skipped"}


@pytest.fixture(params=["sshd", "container"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[SshdWorker, Path, Path]:
    """A worker (plain sshd, or sshd in front of a worker container), its outputs file, and a repository."""
    w: Any = request.getfixturevalue("sshd_worker" if request.param == "sshd" else "ssh_docker_worker")
    ssh: SshdWorker = w if request.param == "sshd" else w.ssh
    out = write_outputs(tmp_path / "outputs.json", "ssh", [sshd_record(w)])
    return ssh, out, make_repo(tmp_path / "repo")


@asynccontextmanager
async def mcp_session(repo: Path, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """`offload mcp ARGS` started by the SDK's stdio client in REPO."""
    full = dict(os.environ, **(env or {}))
    params = StdioServerParameters(command=sys.executable, args=["-m", "offload", "mcp", *args], cwd=str(repo),
                                   env=full)
    async with Client(params) as client:
        yield client


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    """The one line of a tool error."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = "".join(getattr(c, "text", "") for c in result.content)
    assert text.startswith("offload: ") and "\n" not in text.strip(), text
    return text


def drive(main: Any, timeout: float = 180) -> None:
    """Run the client coroutine MAIN on an event loop of its own thread: the test process's main thread keeps
    its event loop state for the tests that follow (the Pulumi mocks use it)."""
    failed: list[BaseException] = []

    async def bounded() -> None:
        with anyio.fail_after(timeout):
            await main()

    def client() -> None:
        try:
            anyio.run(bounded)
        except BaseException as e:  # re-raised in the test's thread, assertion errors included
            failed.append(e)

    thread = threading.Thread(target=client, name="mcp-client")
    thread.start()
    thread.join(timeout + 30)
    assert not thread.is_alive(), "the MCP client did not finish"
    if failed:
        raise failed[0]


def test_a_session_runs_polls_and_reads_a_job_over_one_login(served: tuple[SshdWorker, Path, Path]) -> None:
    ssh, out, repo = served
    before = ssh.accepted_count()

    async def main() -> None:
        async with mcp_session(repo, "--outputs", str(out), env={"OFFLOAD_SSH_KEY": str(ssh.key_path)}) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) == TOOLS
            assert set(tools["run"].input_schema["properties"]) >= {"command", "playbook", "worker", "env", "fresh",
                                                                     "ref", "wait_seconds"}
            assert tools["logs"].input_schema["required"] == ["job"]
            assert tools["get"].input_schema["required"] == ["job", "paths"]

            started = await ok(c, "run", command="for i in 1 2 3 4; do echo line $i; sleep 0.3; done; exit 3")
            assert set(started) == {"id", "worker"}
            job = started["id"]

            # Poll check until the job has failed, reading the log as it grows, a few bytes at a time; then read
            # what is left.
            text, offset, reads, states, checks = "", 0, 0, set(), 0
            while True:
                report = await ok(c, "check", job=job)
                checks += 1
                chunk = await ok(c, "logs", job=job, offset=offset, max_bytes=5)
                assert chunk["next_offset"] == offset + len(chunk["data"].encode())
                text, offset, reads = text + chunk["data"], chunk["next_offset"], reads + 1
                states.add(chunk["state"])
                if report["state"] in FINISHED:
                    break
                await anyio.sleep(0.05)
            while not (chunk["state"] in FINISHED and not chunk["more"]):
                chunk = await ok(c, "logs", job=job, offset=offset, max_bytes=5)
                text, offset, reads = text + chunk["data"], chunk["next_offset"], reads + 1
            assert text == "line 1\nline 2\nline 3\nline 4\n"
            assert "running" in states and reads >= 6 and checks >= 2
            assert report["id"] == job and report["state"] == "failed" and report["exit_code"] == 3
            assert report["tasks"] == [{"name": "main", "state": "failed", "exit_code": 3}]
            status = await ok(c, "status")
            assert job in [j["id"] for w in status["workers"] for j in w["jobs"]]

            assert (await refused(c, "check", job="no-such-job")).startswith("offload: no job no-such-job")
            assert "offset" in await refused(c, "logs", job=job, offset=-1)
            assert "nothing to run" in await refused(c, "run")
            # The server lives on after every error.
            assert (await ok(c, "check", job=job))["exit_code"] == 3
            cleaned = await ok(c, "clean", job=job)
            assert cleaned["cleaned"] == [{"worker": report["worker"], "id": job}]
            assert (await refused(c, "check", job=job)).startswith(f"offload: no job {job}")

    drive(main)
    assert ssh.accepted_count() - before == 1, "one SSH login for the whole session"


def test_run_waits_and_the_results_come_home(served: tuple[SshdWorker, Path, Path]) -> None:
    ssh, out, repo = served
    (repo / ".gitignore").write_text("build/\n")
    key = {"OFFLOAD_SSH_KEY": str(ssh.key_path)}
    jobs: dict[str, dict[str, Any]] = {}

    async def main() -> None:
        async with mcp_session(repo, "--outputs", str(out), env=key) as c:
            done = await ok(c, "run", command="echo job >> file0.txt; mkdir -p build; echo art > build/out.txt",
                            wait_seconds=60)
            assert done["state"] == "success" and done["exit_code"] == 0, done
            jobs["done"] = await ok(c, "check", job=done["id"])
            diff = await ok(c, "diff", job=done["id"])
            assert diff["id"] == done["id"] and "+job" in diff["diff"] and "file0.txt" in diff["diff"]
            applied = await ok(c, "apply", job=done["id"])
            assert applied == {"id": done["id"], "files": ["file0.txt"], "skipped": []}
            got = await ok(c, "get", job=done["id"], paths=["build/out.txt"])
            assert got["files"] == ["build/out.txt"]
            assert "offload: " in await refused(c, "get", job=done["id"], paths=["../outside"])

            slow = await ok(c, "run", command="sleep 30", wait_seconds=0.5)
            assert set(slow) == {"id", "worker"}, "a job still running after wait_seconds has no state yet"
            await ok(c, "clean", job=slow["id"])

    drive(main)
    job = jobs["done"]["id"]
    cli = offload("check", "--json", "--outputs", str(out), job, cwd=repo, env=key)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == jobs["done"], "a tool returns what the CLI's --json prints"
    assert (repo / "file0.txt").read_text().endswith("job\n")
    assert (repo / ".offload" / job / "build" / "out.txt").read_text() == "art\n"


def test_a_dropped_connection_is_opened_again(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "outputs.json", "ssh", [sshd_record(sshd_worker)])
    repo = make_repo(tmp_path / "repo")
    before = sshd_worker.accepted_count()

    async def main() -> None:
        async with mcp_session(repo, "--outputs", str(out),
                               env={"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}) as c:
            job = (await ok(c, "run", command="echo one", wait_seconds=30))["id"]
            assert sshd_worker.kill_sessions(), "the session's connection was open"
            assert (await ok(c, "check", job=job))["state"] == "success"
            chunk = await ok(c, "logs", job=job)
            assert chunk["data"] == "one\n"

    drive(main)
    assert sshd_worker.accepted_count() - before == 2, "one login, and one more after the drop"


def test_idle_connections_are_closed_and_opened_on_demand(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "outputs.json", "ssh", [sshd_record(sshd_worker)])
    repo = make_repo(tmp_path / "repo")
    before = sshd_worker.accepted_count()

    async def main() -> None:
        env = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path), "OFFLOAD_PERSIST": "1"}
        async with mcp_session(repo, "--outputs", str(out), env=env) as c:
            await ok(c, "status")
            assert sshd_worker.session_pids()
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: not sshd_worker.session_pids(), timeout=20,
                                                            what="the idle connection to close"))
            assert (await ok(c, "status"))["workers"][0]["state"] == "running"

    drive(main)
    assert sshd_worker.accepted_count() - before == 2


def test_stdout_carries_only_the_protocol(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    """A raw JSON-RPC client: every stdout line is a protocol message, while the first-use host key notice and
    a job's own output go elsewhere; closing stdin ends the server."""
    out = write_outputs(tmp_path / "outputs.json", "ssh", [sshd_record(sshd_worker, host_keys=[])])
    repo = make_repo(tmp_path / "repo")
    env = dict(os.environ, OFFLOAD_SSH_KEY=str(sshd_worker.key_path))
    proc = subprocess.Popen([sys.executable, "-m", "offload", "mcp", "--outputs", str(out)], cwd=repo, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    def send(message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(dict(message, jsonrpc="2.0")).encode() + b"\n")
        proc.stdin.flush()

    def answer(id_: int) -> dict[str, Any]:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line, "the server closed stdout"
            message = json.loads(line)
            assert message["jsonrpc"] == "2.0"
            if message.get("id") == id_:
                return message

    try:
        send({"id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                                          "clientInfo": {"name": "raw", "version": "0"}}})
        assert "result" in answer(1)
        send({"method": "notifications/initialized"})
        send({"id": 2, "method": "tools/call", "params": {"name": "run", "arguments": {
            "command": "echo to the job log; echo and its stderr >&2", "wait_seconds": 30}}})
        started = answer(2)["result"]
        assert not started.get("isError") and started["structuredContent"]["state"] == "success", started
        send({"id": 3, "method": "tools/call", "params": {"name": "check", "arguments": {"job": "missing"}}})
        assert answer(3)["result"]["isError"] is True
        rest, err = proc.communicate(timeout=30)  # closes stdin: the client is gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in rest.splitlines():
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert proc.returncode == 0, err
    assert b"trusting host key" in err, "notices go to stderr"
    assert b"to the job log" not in rest


def test_a_bad_setting_stops_the_server_before_it_serves(tmp_path: Path) -> None:
    p = offload("mcp", cwd=make_repo(tmp_path / "repo"), env={"OFFLOAD_PERSIST": "soon"})
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode().startswith("offload: OFFLOAD_PERSIST is a number of seconds; got 'soon'")
