#!/usr/bin/env python3
"""How long `offload mcp` takes from spawn to its `initialize` answer, and to its `tools/list` answer, against
the floor: a bare MCP SDK server with no tools, started the same way, in the same run, interleaved.

A checkout given with `--baseline DIR` (another offload tree, such as an older commit's worktree) is timed in
the same run too, with the same interpreter.

Run: `python3 benchmarks/bench_mcp_start.py [--runs 10] [--baseline DIR]`. Nothing needs a worker: the outputs
are read at the first tool call, which this benchmark never makes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLOOR = "from mcp.server.mcpserver import MCPServer\nMCPServer('floor').run('stdio')\n"


def message(id_: int | None, method: str, params: dict | None = None) -> bytes:
    body: dict = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        body["id"] = id_
    if params is not None:
        body["params"] = params
    return json.dumps(body).encode() + b"\n"


INITIALIZE = message(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "bench", "version": "0"}})


def one(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawn to the initialize answer, and to the tools/list answer."""
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
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return initialized, listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline", type=Path, help="another offload checkout to time in the same run")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="offload-bench-mcp-start-", dir="/dev/shm"))
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
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (argv, case_env) in cases.items():
            times[name].append(one(argv, repo, case_env))

    floor = statistics.median(t[0] for t in times["bare MCP SDK server (floor)"])
    print(f"{args.runs} runs each, interleaved; medians; ratio of the initialize answer to the floor's")
    print(f"{'':30s} {'initialize':>11s} {'tools/list':>11s} {'ratio':>6s} {'above floor':>12s}")
    for name, ts in times.items():
        init = statistics.median(t[0] for t in ts)
        listed = statistics.median(t[1] for t in ts)
        print(f"{name:30s} {init * 1000:8.0f} ms {listed * 1000:8.0f} ms {init / floor:5.2f}x "
              f"{(init - floor) * 1000:+9.0f} ms")


if __name__ == "__main__":
    main()
