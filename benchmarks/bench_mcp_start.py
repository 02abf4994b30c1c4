#!/usr/bin/env python3
"""How long `offload mcp` takes from spawn to its `initialize` answer, and to its `tools/list` answer, against
the floor: a bare MCP SDK server with no tools, started the same way, in the same run, interleaved.

A checkout given with `--baseline DIR` (another offload tree, such as an older commit's worktree) is timed in
the same run too, with the same interpreter. Wall times on a loaded machine swing by hundreds of milliseconds, so
the benchmark also prints the CPU time offload itself spends before it can answer `initialize` (its modules and
building its server, the SDK's import excluded), which holds steady.

Run: `python3 benchmarks/bench_mcp_start.py [--runs 10] [--baseline DIR]`. Nothing needs a worker: the outputs
are read at the first tool call, which this benchmark never makes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLOOR = "from mcp.server.mcpserver import MCPServer\nMCPServer('floor').run('stdio')\n"

# What offload does before it can answer `initialize`, on top of the SDK's import, in CPU seconds of the process
# (steady on a loaded machine, where wall times swing by hundreds of milliseconds): its CLI and server modules,
# and the server built as `offload mcp` builds it.
OFFLOAD_PART = """
import time
from pathlib import Path
import mcp.server.mcpserver
start = time.process_time()
import offload.cli.app
import offload.cli.mcpserver as m
session = m.Session(lambda: None, persist=600)
m.build_server(session, Path.cwd)
print(time.process_time() - start)
"""


def message(id_: int | None, method: str, params: dict | None = None) -> bytes:
    body: dict = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        body["id"] = id_
    if params is not None:
        body["params"] = params
    return json.dumps(body).encode() + b"\n"


INITIALIZE = message(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "bench", "version": "0"}})


def one(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Seconds from spawn to the initialize answer, and to the tools/list answer; and the CPU seconds the server
    used in all (a steadier figure than wall time on a loaded machine)."""
    start = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    assert p.stdin is not None and p.stdout is not None
    try:
        p.stdin.write(INITIALIZE)
        p.stdin.flush()
        answer = json.loads(p.stdout.readline())
        initialized = time.perf_counter() - start
        if answer.get("id") != 1 or "result" not in answer:
            raise SystemExit(f"{argv}: no initialize answer: {answer}")
        p.stdin.write(message(None, "notifications/initialized") + message(2, "tools/list", {}))
        p.stdin.flush()
        while json.loads(p.stdout.readline()).get("id") != 2:
            pass
        listed = time.perf_counter() - start
        p.stdin.close()
        _, _, usage = os.wait4(p.pid, 0)
        p.returncode = 0
    finally:
        if p.returncode is None:
            p.kill()
            p.wait()
    return initialized, listed, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline", type=Path, help="another offload checkout to time in the same run")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="offload-bench-mcp-start-", dir="/dev/shm"))
    try:
        measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(args: argparse.Namespace, scratch: Path) -> None:
    repo = scratch / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    env = dict(os.environ, HOME=str(scratch), OFFLOAD_CONFIG_DIR=str(scratch / "cfg"),
               OFFLOAD_CACHE_DIR=str(scratch / "cache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed offload has its bytecode

    def tree(path: Path) -> dict[str, str]:
        return dict(env, PYTHONPATH=str(path))

    cases = {"bare MCP SDK server (floor)": ([sys.executable, "-c", FLOOR], env),
             "offload mcp (this tree)": ([sys.executable, "-m", "offload", "mcp"], tree(ROOT))}
    if args.baseline:
        cases["offload mcp (baseline)"] = ([sys.executable, "-m", "offload", "mcp"], tree(args.baseline.resolve()))
    for argv, case_env in cases.values():  # warm the page cache and the bytecode
        one(argv, repo, case_env)
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (argv, case_env) in cases.items():
            times[name].append(one(argv, repo, case_env))

    part: dict[str, list[float]] = {name: [] for name in cases if name != "bare MCP SDK server (floor)"}
    for _ in range(args.runs):
        for name in part:
            p = subprocess.run([sys.executable, "-c", OFFLOAD_PART], cwd=repo, env=cases[name][1],
                               capture_output=True, check=True)
            part[name].append(float(p.stdout))

    floor = {i: statistics.median(t[i] for t in times["bare MCP SDK server (floor)"]) for i in range(3)}
    print(f"{args.runs} runs each, interleaved; medians; ratios and differences to the floor's")
    print(f"{'':30s} {'initialize':>11s} {'above floor':>12s} {'tools/list':>11s} {'CPU in all':>11s} "
          f"{'above floor':>12s}")
    for name, ts in times.items():
        init, listed, cpu = (statistics.median(t[i] for t in ts) for i in range(3))
        print(f"{name:30s} {init * 1000:8.0f} ms {(init - floor[0]) * 1000:+9.0f} ms {listed * 1000:8.0f} ms "
              f"{cpu * 1000:8.0f} ms {(cpu - floor[2]) * 1000:+9.0f} ms  ({init / floor[0]:.2f}x)")
    print("CPU offload spends before it can answer initialize, on top of the SDK's import (medians):")
    base = statistics.median(part["offload mcp (baseline)"]) if "offload mcp (baseline)" in part else None
    for name, ts in part.items():
        ratio = f"  {statistics.median(ts) / base:.2f}x the baseline" if base else ""
        print(f"{name:30s} {statistics.median(ts) * 1000:8.0f} ms{ratio}")


if __name__ == "__main__":
    main()
