#!/usr/bin/env python3
"""`offload status` over a fleet of 16 workers against the same command over one, measured in one run, with
the connection agent (warm: it holds every worker's connection) and without it (OFFLOAD_PERSIST=0: a login per
worker per command).

Each worker is a real sshd on loopback with its own host key and a few finished jobs. Targets: with the agent,
16 workers answer in at most 1.2x the time of one; without it, in at most 1.5x (workers are queried
concurrently).

Run as root on a machine with openssh-server, git and tmux: `python3 benchmarks/bench_status_fanout.py`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_common import Bench, stop_agent  # noqa: E402  (also puts the project on sys.path)
from tests.workers import make_repo, sshd_record, start_sshd, write_outputs  # noqa: E402

WORKERS = int(os.environ.get("BENCH_WORKERS", "16"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))


def sshd_cpu(listener: int) -> float:
    """CPU seconds the logins of an sshd listener used: its reaped children's user and system time."""
    fields = Path(f"/proc/{listener}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds a process and its descendants used, those still alive and those already reaped (with the
    agent, each worker's connection stays open, so its steps' shells are reaped by a process still alive)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(tree_cpu(int(k)) for k in kids)


def main() -> None:
    bench = Bench.create("offload-bench-fanout-")
    base, env, private = bench.base, bench.env, bench.key.private
    workers = []
    fleet = one = None
    agent = dict(env)
    try:
        for i in range(WORKERS):
            workers.append(start_sshd(base=base / f"sshd{i}", user=bench.user, client_key=bench.key))
        records = [sshd_record(w, name=f"w{i:02d}") for i, w in enumerate(workers)]
        fleet = write_outputs(base / "fleet.json", "ssh", records)
        one = write_outputs(base / "one.json", "ssh", records[:1])
        repo = make_repo(base / "repo")
        cli = [sys.executable, "-m", "offload"]
        for r in records:   # every worker holds two finished jobs, so status has something to read
            for j in range(2):
                subprocess.run(cli + ["run", "--outputs", str(fleet), "--worker", r["name"], "--wait", "--",
                                      "true"], cwd=repo, env=env, check=True, capture_output=True)
        status_one = cli + ["status", "--json", "--outputs", str(one)]
        status_all = cli + ["status", "--json", "--outputs", str(fleet)]
        env = dict(env, OFFLOAD_PERSIST="0")
        bench.env = env
        for e in (env, agent):
            bench.timed(status_one, env=e, cwd=base)
            bench.timed(status_all, env=e, cwd=base)
        sequential = dict(env, OFFLOAD_PARALLEL="1")
        known = base / "known_hosts"
        known.write_text("".join(f"[{w.host}]:{w.port} {w.host_key}\n" for w in workers))
        ssh = [["ssh", "-F", "/dev/null", "-i", str(private), "-o", f"UserKnownHostsFile={known}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(w.port),
                f"{w.user}@{w.host}", "true"] for w in workers]

        def plain_ssh(count: int) -> float:
            start = time.perf_counter()
            procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                     for argv in ssh[:count]]
            for p in procs:
                p.wait()
            return time.perf_counter() - start

        t_one, t_all, t_seq, s_one, s_all, a_one, a_all = [], [], [], [], [], [], []
        logins = {"agent": 0, "no agent": 0}
        server_cpu = step_cpu = 0.0
        for _ in range(ROUNDS):   # interleaved, so machine noise hits all of them alike
            t_one.append(bench.timed(status_one, cwd=base))
            before = sum(sshd_cpu(w.pid) for w in workers)
            t_all.append(bench.timed(status_all, cwd=base))
            time.sleep(0.2)  # let every listener reap its finished login
            server_cpu += sum(sshd_cpu(w.pid) for w in workers) - before
            t_seq.append(bench.timed(status_all, env=sequential, cwd=base))
            before = sum(w.accepted_count() for w in workers)
            a_one.append(bench.timed(status_one, env=agent, cwd=base))
            cpu_before = sum(tree_cpu(w.pid) for w in workers)
            a_all.append(bench.timed(status_all, env=agent, cwd=base))
            time.sleep(0.2)
            step_cpu += sum(tree_cpu(w.pid) for w in workers) - cpu_before
            logins["agent"] += sum(w.accepted_count() for w in workers) - before
            s_one.append(plain_ssh(1))
            s_all.append(plain_ssh(WORKERS))
        m1, mn, ms = statistics.median(t_one), statistics.median(t_all), statistics.median(t_seq)
        p1, pn = statistics.median(s_one), statistics.median(s_all)
        print(f"offload status --json without the agent, medians of {ROUNDS} rounds "
              f"(every sshd shares this machine's {os.cpu_count()} cores with the client):")
        print(f"  1 worker:                  {m1 * 1000:.0f} ms")
        print(f"  {WORKERS} workers, concurrently: {mn * 1000:.0f} ms  ratio {mn / m1:.2f} (target <= 1.5)")
        print(f"  {WORKERS} workers, one by one:   {ms * 1000:.0f} ms  ratio {ms / m1:.2f}")
        a1, an = statistics.median(a_one), statistics.median(a_all)
        print(f"with the connection agent (warm), medians of {ROUNDS} rounds:")
        print(f"  1 worker:                  {a1 * 1000:.0f} ms")
        print(f"  {WORKERS} workers, concurrently: {an * 1000:.0f} ms  ratio {an / a1:.2f} (target <= 1.2); "
              f"{an / mn:.2f}x the time without the agent; new logins in all rounds: {logins['agent']}")
        per_login = server_cpu / (ROUNDS * WORKERS)
        cores = os.cpu_count() or 1
        floor = (m1 + (WORKERS - 1) * per_login / cores) / m1
        print(f"sshd's own CPU per login here: {per_login * 1000:.1f} ms, so with the servers on these {cores} "
              f"cores no client can do better than ratio {floor:.2f}")
        per_step = step_cpu / (ROUNDS * WORKERS)
        floor_agent = (a1 + (WORKERS - 1) * per_step / cores) / a1
        print(f"with the agent, the worker's own CPU per status (its sshd channel and the shell that reads the "
              f"jobs): {per_step * 1000:.1f} ms, so on these {cores} cores no client can do better than ratio "
              f"{floor_agent:.2f}")
        print(f"baseline, OpenSSH `ssh host true`: 1 host {p1 * 1000:.0f} ms; {WORKERS} hosts in parallel "
              f"{pn * 1000:.0f} ms, ratio {pn / p1:.2f} (what this machine allows for {WORKERS} logins at once)")
    finally:
        if fleet is not None:
            subprocess.run([sys.executable, "-m", "offload", "clean", "--all", "--yes", "--outputs", str(fleet)],
                           env=env, cwd=base, capture_output=True)
        stop_agent(agent)
        for w in workers:
            w.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

