#!/usr/bin/env python3
"""A large untracked file: what `offload run` costs to place it on a real sshd worker on loopback, next to a plain
`ssh host 'cat > FILE'` of the same file over the same sshd, in one run.

For each size (BENCH_MB, megabytes of random data, comma-separated; default 200) prints the wall time and this
machine's CPU time of:
  - `ssh host 'cat > FILE'` (the baseline: what the link and sshd cost);
  - `offload run --wait -- sha256sum FILE` through the connection agent (the command's own CPU and the agent's);
  - the same with OFFLOAD_PERSIST=0 (every command its own connection);
and offload's wall time as a ratio to the baseline. Each offload run places a new file, so every sync sends it;
the job's checksum proves it arrived whole. A run that has not finished after BENCH_LIMIT seconds (default 600)
is stopped and reported as such.

Run as root on a machine with openssh-server, git and tmux: `python3 benchmarks/bench_big_file.py`. To measure
another checkout of offload against the same baseline, put it first on the path: `PYTHONPATH=DIR python3 ...`.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_common import Bench, stop_agent  # noqa: E402  (also puts the project on sys.path)
from tests.workers import make_repo, sshd_record, start_sshd, write_outputs  # noqa: E402

SIZES = [int(s) for s in os.environ.get("BENCH_MB", "200").split(",")]
LIMIT = float(os.environ.get("BENCH_LIMIT", "600"))
# The command line itself, not the `offload` entry point: its CPU is then this process's child's, not a warm
# server's.
CLI = [sys.executable, "-c", "import sys; from offload.cli.app import main; main(sys.argv[1:])"]


@dataclass
class Figures:
    wall: float
    cpu: float              # this machine: the command and what it waited for (git), plus the agent's share
    agent_cpu: float = 0.0
    finished: bool = True
    error: str = ""         # the last line on stderr of a command that failed


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _agent_pid(env: dict[str, str]) -> int | None:
    p = subprocess.run([sys.executable, "-m", "offload", "agent", "status", "--json"], env=env, capture_output=True)
    return json.loads(p.stdout).get("pid") if p.returncode == 0 else None


def measure(argv: list[str], env: dict[str, str], cwd: Path, *, expect: bytes = b"") -> Figures:
    """Run ARGV to its end or for LIMIT seconds; with the agent running, its CPU counts too."""
    agent = _agent_pid(env) if env.get("OFFLOAD_PERSIST") != "0" else None
    agent_before, cpu_before = _process_cpu(agent), _children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and the git it runs; the agent is not in its group
        proc.communicate()
        agent_cpu = _process_cpu(agent) - agent_before
        return Figures(time.perf_counter() - start, _children_cpu() - cpu_before + agent_cpu, agent_cpu,
                       finished=False)
    wall = time.perf_counter() - start
    agent_cpu = _process_cpu(agent) - agent_before
    figures = Figures(wall, _children_cpu() - cpu_before + agent_cpu, agent_cpu)
    if proc.returncode != 0 or expect not in out:
        lines = err.decode(errors="replace").strip().splitlines() or [f"no {expect.decode()} in its output"]
        figures.error = f"exit {proc.returncode}: {lines[-1]}"
    return figures


def line(name: str, f: Figures, baseline: Figures | None = None) -> str:
    agent = f" (agent {f.agent_cpu:5.1f} s)" if f.agent_cpu else ""
    if not f.finished:
        return f"  {name:42s} not finished after {f.wall:6.1f} s, {f.cpu:6.1f} s CPU so far{agent}"
    if f.error:
        return f"  {name:42s} failed after {f.wall:6.1f} s, {f.cpu:6.1f} s CPU: {f.error}"
    ratio = f"   {f.wall / baseline.wall:5.1f}x the baseline" if baseline else ""
    return f"  {name:42s} {f.wall:6.1f} s wall, {f.cpu:6.1f} s CPU{agent}{ratio}"


def main() -> None:
    bench = Bench.create("offload-bench-big-")
    worker = start_sshd(base=bench.base / "sshd", user=bench.user, client_key=bench.key)
    outputs = write_outputs(bench.base / "outputs.json", "ssh", [sshd_record(worker)])
    no_agent = dict(bench.env, OFFLOAD_PERSIST="0")
    try:
        repo = make_repo(bench.base / "repo")
        known = bench.base / "known_hosts"
        known.write_text(f"[{worker.host}]:{worker.port} {worker.host_key}\n")
        ssh = ["ssh", "-i", str(bench.key.private), "-p", str(worker.port), "-o", f"UserKnownHostsFile={known}",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-F", "/dev/null",
               f"{worker.user}@{worker.host}"]
        run = CLI + ["run", "--outputs", str(outputs), "--wait", "--", "sha256sum big.bin"]
        bench.timed(CLI + ["status", "--outputs", str(outputs)], cwd=repo)  # the agent is up and connected
        where = subprocess.run([sys.executable, "-c", "import offload; print(offload.__path__[0])"], env=bench.env,
                               capture_output=True, text=True).stdout.strip()
        print(f"a random untracked file, sshd worker on loopback; offload from {where}")
        for mb in SIZES:
            big = repo / "big.bin"
            results: dict[str, Figures] = {}
            for name, env in (("ssh cat >", None), ("offload run, agent", bench.env),
                              ("offload run, OFFLOAD_PERSIST=0", no_agent)):
                with open(big, "wb") as f:  # a new file each time: every sync sends all of it
                    for _ in range(mb):
                        f.write(os.urandom(1 << 20))
                digest = hashlib.sha256(big.read_bytes()).hexdigest().encode()
                if env is None:
                    target = f"{worker.workspace}/baseline.bin"
                    with open(big, "rb") as data:
                        start, cpu = time.perf_counter(), _children_cpu()
                        subprocess.run(ssh + [f"cat > {target}"], stdin=data, check=True)
                        results[name] = Figures(time.perf_counter() - start, _children_cpu() - cpu)
                    subprocess.run(ssh + [f"rm -f {target}"], check=True)
                else:
                    results[name] = measure(run, env, repo, expect=digest)
                    if not results[name].finished or results[name].error:
                        stop_agent(bench.env)  # whatever it still holds for the command
            baseline = results["ssh cat >"]
            print(f"{mb} MB:")
            for name, figures in results.items():
                print(line(name, figures, None if figures is baseline else baseline), flush=True)
    finally:
        subprocess.run([sys.executable, "-m", "offload", "clean", "--all", "--yes", "--outputs", str(outputs)],
                       env=bench.env, capture_output=True)
        stop_agent(bench.env)
        worker.stop()
        shutil.rmtree(bench.base, ignore_errors=True)  # hundreds of megabytes on tmpfs


if __name__ == "__main__":
    main()
