"""`offload mcp` driven by the MCP SDK's own client over stdio, against real sshd and container workers: the
tools, one SSH login for a whole session, connections opened again after a drop and closed when idle, tool
errors in one line, results equal to what the CLI's --json prints and valid against each tool's declared
outputSchema, and nothing on stdout but the protocol. `run`'s wait cap with progress, a cancel and a closed stdin
ending the wait while the job goes on, unknown arguments refused, and a playbook's artifacts brought home; and a
client built on the TypeScript SDK, as most agents are, with its default request timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, TextIO

import anyio
import jsonschema
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from offload import __version__ as offload_version
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
async def mcp_session(repo: Path, *args: str, env: dict[str, str] | None = None,
                      errlog: TextIO | None = None) -> AsyncIterator[Client]:
    """`offload mcp ARGS` started by the SDK's stdio client in REPO (its stderr into ERRLOG when given)."""
    full = dict(os.environ, **(env or {}))
    params = StdioServerParameters(command=sys.executable, args=["-m", "offload", "mcp", *args], cwd=str(repo),
                                   env=full)
    async with Client(params if errlog is None else stdio_client(params, errlog=errlog)) as client:
        try:
            yield client
        finally:
            _SCHEMAS.pop(id(client), None)


_SCHEMAS: dict[int, dict[str, dict[str, Any]]] = {}


async def output_schema(client: Client, tool: str) -> dict[str, Any]:
    """The outputSchema TOOL declares (listed once per client)."""
    if id(client) not in _SCHEMAS:
        _SCHEMAS[id(client)] = {t.name: t.output_schema or {} for t in (await client.list_tools()).tools}
    return _SCHEMAS[id(client)][tool]


async def ok(client: Client, tool: str, progress: Any = None, **arguments: Any) -> dict[str, Any]:
    """The structured result of a call that succeeded, checked against the tool's own declared outputSchema."""
    result = await client.call_tool(tool, arguments, progress_callback=progress)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    schema = await output_schema(client, tool)
    assert schema.get("required") and schema.get("properties"), f"{tool} declares a real outputSchema"
    jsonschema.validate(result.structured_content, schema)
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
            assert slow["state"] == "running" and "exit_code" not in slow, slow
            assert f"poll `check` with job '{slow['id']}'" in slow["note"] and "at most" not in slow["note"]
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
    for bad in ("soon", "-1", "nan", "4000"):
        p = offload("mcp", cwd=tmp_path / "repo", env={"OFFLOAD_MCP_MAX_WAIT": bad})
        assert p.returncode == 2 and p.stdout == b""
        assert p.stderr.decode().startswith(f"offload: OFFLOAD_MCP_MAX_WAIT is a number of seconds from 0 to 3600; "
                                            f"got '{bad}'"), p.stderr


# A job held open until the test cleans it: it says one line, then idles.
HOLD = "echo waiting for the test; while :; do sleep 0.2; done"


def sshd_served(worker: SshdWorker, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    out = write_outputs(tmp_path / "outputs.json", "ssh", [sshd_record(worker)])
    return out, make_repo(tmp_path / "repo"), {"OFFLOAD_SSH_KEY": str(worker.key_path)}


def test_run_answers_at_the_servers_cap_with_progress_and_the_job_goes_on(sshd_worker: SshdWorker,
                                                                          tmp_path: Path) -> None:
    out, repo, env = sshd_served(sshd_worker, tmp_path)
    notes: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        notes.append((done, total, message))

    async def main() -> None:
        async with mcp_session(repo, "--outputs", str(out), env=dict(env, OFFLOAD_MCP_MAX_WAIT="3")) as c:
            # The login and the warm worktree first: the cap counts from the call, the sync included.
            assert (await ok(c, "run", command="true", wait_seconds=30))["state"] == "success"
            quiet = await ok(c, "run", command="true")
            assert set(quiet) == {"id", "worker"}, "without wait_seconds, run answers once the job has started"

            started = time.monotonic()
            held = await ok(c, "run", progress=progress, command=HOLD, wait_seconds=60)
            took = time.monotonic() - started
            assert held["state"] == "running" and "exit_code" not in held, held
            assert "the server waits at most 3 s" in held["note"] and f"'{held['id']}'" in held["note"]
            assert 3 <= took < 60, f"run answered after {took:.1f} s, with a cap of 3 s and wait_seconds 60"
            # Progress: the seconds waited, rising, out of the cap, and the job's last log line.
            assert notes[0] == (0, 3.0, "snapshotting the working tree and starting the job"), notes
            assert all(total == 3.0 for _, total, _ in notes[1:]), notes
            done = [d for d, _, _ in notes]
            assert done == sorted(done) and len(notes) >= 3 and done[-1] <= 3.0, notes
            assert ("waiting for the test" in [m for _, _, m in notes]), notes

            report = await ok(c, "check", job=held["id"])
            assert report["state"] == "running", "the job goes on after the server stops waiting"
            await ok(c, "clean", job=held["id"])

    drive(main)


def test_a_cancelled_run_stops_waiting_and_the_job_goes_on(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    out, repo, env = sshd_served(sshd_worker, tmp_path)
    err_path = tmp_path / "server.err"

    def stopped() -> str | None:
        for line in err_path.read_text().splitlines():
            if line.startswith("offload: run: stopped waiting for job "):
                return line
        return None

    async def main() -> None:
        with err_path.open("w") as errlog:
            async with mcp_session(repo, "--outputs", str(out), env=dict(env, OFFLOAD_MCP_MAX_WAIT="600"),
                                   errlog=errlog) as c:
                logged = anyio.Event()

                async def progress(done: float, total: float | None, message: str | None) -> None:
                    if message == "waiting for the test":
                        logged.set()

                async def call() -> None:
                    await c.call_tool("run", {"command": HOLD, "wait_seconds": 600}, progress_callback=progress)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await logged.wait()  # the job runs and the server waits for it
                    tg.cancel_scope.cancel()
                cancelled = time.monotonic()
                line = await anyio.to_thread.run_sync(lambda: wait_for(stopped, timeout=2, interval=0.02,
                                                                       what="the server to stop waiting"))
                assert time.monotonic() - cancelled < 2
                job = line.split()[6]
                # The server serves on, and the job goes on.
                assert (await ok(c, "check", job=job))["state"] == "running"
                await ok(c, "clean", job=job)

    drive(main)


def test_a_closed_stdin_ends_the_server_at_once_and_the_job_goes_on(sshd_worker: SshdWorker,
                                                                     tmp_path: Path) -> None:
    """A raw JSON-RPC client, to time the server's own exit: its client goes away in the middle of a wait."""
    out, repo, env = sshd_served(sshd_worker, tmp_path)
    full = dict(os.environ, **env, OFFLOAD_MCP_MAX_WAIT="600")
    proc = subprocess.Popen([sys.executable, "-m", "offload", "mcp", "--outputs", str(out)], cwd=repo, env=full,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    def send(message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(dict(message, jsonrpc="2.0")).encode() + b"\n")
        proc.stdin.flush()

    def read() -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the server closed stdout"
        return json.loads(line)

    job = ""
    try:
        send({"id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                                          "clientInfo": {"name": "raw", "version": "0"}}})
        assert read()["result"]["serverInfo"]["name"] == "offload"
        send({"method": "notifications/initialized"})
        send({"id": 2, "method": "tools/call", "params": {"name": "run", "_meta": {"progressToken": "t"},
                                                          "arguments": {"command": HOLD, "wait_seconds": 600}}})
        while True:
            message = read()
            assert message.get("id") != 2, message
            if message["params"].get("message") == "waiting for the test":
                break
        proc.stdin.close()
        closed = time.monotonic()
        code = proc.wait(timeout=30)
        gone = time.monotonic() - closed
        err = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, err
    assert gone < 2, f"the server took {gone:.2f} s to exit after its stdin closed"
    job = next(line.split()[6] for line in err.splitlines() if line.startswith("offload: run: stopped waiting"))
    p = offload("check", "--json", "--outputs", str(out), job, cwd=repo, env=env)
    assert json.loads(p.stdout)["state"] == "running", p.stderr  # (check exits 7 while the job runs)
    assert offload("clean", "--outputs", str(out), job, cwd=repo, env=env).returncode == 0


def test_a_playbook_run_brings_its_artifacts_home_and_errors_name_the_tools(sshd_worker: SshdWorker,
                                                                           tmp_path: Path) -> None:
    out, repo, env = sshd_served(sshd_worker, tmp_path)
    (repo / ".gitignore").write_text("build/\n")
    (repo / "offload.yaml").write_text(
        "playbooks:\n"
        "  art:\n"
        "    tasks:\n"
        "      make: {run: 'mkdir -p build && echo made > build/out.txt'}\n"
        "      other: {run: 'echo other'}\n"
        "    artifacts: [build/out.txt, build/never-made.txt]\n")

    async def main() -> None:
        async with mcp_session(repo, "--outputs", str(out), env=env) as c:
            done = await ok(c, "run", playbook="art", wait_seconds=60)
            assert done["state"] == "success" and done["exit_code"] == 0, done
            dest = repo / ".offload" / done["id"]
            assert done["artifacts"] == {"to": str(dest), "files": ["build/out.txt"]}, done
            assert (dest / "build" / "out.txt").read_text() == "made\n"

            # get's `to` is taken lexically, and must stay inside the repository.
            said = await refused(c, "get", job=done["id"], paths=["build/out.txt"], to=f"{repo}/../escape")
            assert "is outside the repository" in said, said
            got = await ok(c, "get", job=done["id"], paths=["build/out.txt"], to="sub/../fetched")
            assert got["to"] == str(repo / "fetched") and (repo / "fetched" / "build" / "out.txt").is_file()
            assert not (tmp_path / "escape").exists()

            said = await refused(c, "logs", job=done["id"])
            assert said.endswith("pick one with the `task` argument") and "--" not in said, said
            said = await refused(c, "check", job="no-such-job")
            assert "(see the `status` tool)" in said and "offload status" not in said, said
            said = await refused(c, "run", command="true", ref="no-such-ref")
            assert said.startswith("offload: ref: no-such-ref") and "--ref" not in said, said
            await ok(c, "clean", job=done["id"])

    drive(main)


def test_the_tools_refuse_unknown_arguments_and_describe_themselves(sshd_worker: SshdWorker,
                                                                    tmp_path: Path) -> None:
    out, repo, env = sshd_served(sshd_worker, tmp_path)

    async def main() -> None:
        async with mcp_session(repo, "--outputs", str(out), env=env) as c:
            assert c.server_info is not None and c.server_info.version == offload_version
            for tool in (await c.list_tools()).tools:
                assert tool.input_schema.get("additionalProperties") is False, tool.name
                assert tool.description and "\n " not in tool.description and "  " not in tool.description, \
                    tool.description
                schema = tool.output_schema or {}
                assert schema.get("type") == "object" and schema.get("required"), (tool.name, schema)
                assert schema.get("additionalProperties") is not True, (tool.name, schema)
            said = await refused(c, "run", command="echo hi", wait_second=5)
            assert "unknown argument 'wait_second'" in said and "did you mean wait_seconds?" in said, said
            said = await refused(c, "status", bogus_arg=1)
            assert "unknown argument 'bogus_arg'" in said and "status takes no arguments" in said, said
            said = await refused(c, "check", job="x", bogus_arg=1, other=2)
            assert "unknown arguments 'bogus_arg', 'other'" in said, said
            assert (await ok(c, "status"))["workers"][0]["name"] == f"ssh-{sshd_worker.port}"

    drive(main)


TS_SDK = Path(os.environ.get("OFFLOAD_TEST_MCP_TS_SDK", "/var/cache/offload/mcp-ts-sdk"))


def test_a_typescript_sdk_client_with_its_default_timeout_gets_the_job_id(sshd_worker: SshdWorker,
                                                                          tmp_path: Path) -> None:
    """The TypeScript SDK's client (which most agents use) times a request out after 60 s: a run asked to wait
    60 s on a longer job still answers in time, with the job id."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the TypeScript MCP SDK client needs it)")
    if not (TS_SDK / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        pytest.skip(f"@modelcontextprotocol/sdk is not installed in {TS_SDK}: run scripts/install-test-deps.sh")
    out, repo, env = sshd_served(sshd_worker, tmp_path)
    server = {"command": sys.executable, "args": ["-m", "offload", "mcp", "--outputs", str(out)], "cwd": str(repo)}
    full = dict(os.environ, **env, OFFLOAD_MCP_MAX_WAIT="3", OFFLOAD_TEST_MCP_TS_SDK=str(TS_SDK))
    p = subprocess.run([node, str(Path(__file__).with_name("mcp_ts_client.cjs")), json.dumps(server), '"run"',
                        json.dumps({"command": HOLD, "wait_seconds": 60})], env=full, capture_output=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    said = json.loads(p.stdout)
    result = said["result"]
    assert said["timeout_ms"] == 60000 and not result.get("isError"), said
    job = result["structuredContent"]
    assert job["state"] == "running" and {"id", "worker", "state"} <= set(job), job
    assert said["seconds"] < 60
    check = offload("check", "--json", "--outputs", str(out), job["id"], cwd=repo, env=env)
    assert json.loads(check.stdout)["state"] == "running", check.stderr
    assert offload("clean", "--outputs", str(out), job["id"], cwd=repo, env=env).returncode == 0
