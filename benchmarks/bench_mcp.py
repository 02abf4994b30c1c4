#!/usr/bin/env python3
"""20 `check` calls through one `offload mcp` session, against 20 `offload check` CLI invocations and 20 plain
`ssh host true`, on a real sshd worker on loopback, in one run. Also counts the sshd logins each way took.

Run as root on a machine with openssh-server, git and tmux: `python3 benchmarks/bench_mcp.py`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from bench_common import Bench, stop_agent  # noqa: E402  (also puts the project on sys.path)
from tests.workers import make_repo, sshd_record, start_sshd, write_outputs  # noqa: E402

CALLS = 20


def main() -> None:
    bench = Bench.create("offload-bench-mcp-")
    worker = start_sshd(base=bench.base / "sshd", user=bench.user, client_key=bench.key)
    outputs = write_outputs(bench.base / "outputs.json", "ssh", [sshd_record(worker)])
    offload = [sys.executable, "-m", "offload"]
    try:
        repo = make_repo(bench.base / "repo", files=100)
        bench.timed(offload + ["run", "--outputs", str(outputs), "--job", "bench", "--wait", "--", "true"], cwd=repo)

        logins = worker.accepted_count()
        cli = [bench.timed(offload + ["check", "bench", "--outputs", str(outputs)], cwd=repo) for _ in range(CALLS)]
        cli_logins = worker.accepted_count() - logins

        mcp_times: list[float] = []
        session: dict[str, float] = {}

        async def through_mcp() -> None:
            params = StdioServerParameters(command=sys.executable, args=["-m", "offload", "mcp", "--outputs",
                                                                         str(outputs)], cwd=str(repo), env=bench.env)
            start = time.perf_counter()
            async with Client(params) as client:
                session["start"] = time.perf_counter() - start
                for _ in range(CALLS):
                    t = time.perf_counter()
                    result = await client.call_tool("check", {"job": "bench"})
                    if result.is_error:
                        raise SystemExit(f"check failed: {result.content}")
                    mcp_times.append(time.perf_counter() - t)

        logins = worker.accepted_count()
        anyio.run(through_mcp)
        mcp_logins = worker.accepted_count() - logins

        known = bench.base / "known_hosts"
        known.write_text(f"[{worker.host}]:{worker.port} {worker.host_key}\n")
        ssh = ["ssh", "-i", str(bench.key.private), "-p", str(worker.port), "-o", f"UserKnownHostsFile={known}",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-F", "/dev/null",
               f"{worker.user}@{worker.host}", "true"]
        ssh_t = [bench.timed(ssh) for _ in range(CALLS)]

        base = statistics.median(ssh_t)
        print(f"{CALLS} calls each; sshd worker on loopback; medians, and ratios to one `ssh host true`")
        print(f"ssh host true:          {base * 1000:7.1f} ms  1.00x")
        print(f"offload check (CLI):    {statistics.median(cli) * 1000:7.1f} ms  "
              f"{statistics.median(cli) / base:5.2f}x  total {sum(cli):6.2f} s  logins {cli_logins}")
        print(f"check through MCP:      {statistics.median(mcp_times) * 1000:7.1f} ms  "
              f"{statistics.median(mcp_times) / base:5.2f}x  total {sum(mcp_times):6.2f} s  logins {mcp_logins} "
              f"(+ {session['start']:.2f} s to start the server)")
        print(f"MCP session is {sum(cli) / (sum(mcp_times) + session['start']):.1f}x faster than the CLI for "
              f"{CALLS} checks, server start included")
    finally:
        subprocess.run(offload + ["clean", "--all", "--yes", "--outputs", str(outputs)], cwd=bench.base,
                       env=bench.env, capture_output=True)
        stop_agent(bench.env)
        worker.stop()


if __name__ == "__main__":
    main()
