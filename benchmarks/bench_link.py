#!/usr/bin/env python3
"""Warm commands and big transfers over a simulated wide-area link, next to plain ssh through the same link, in one
run.

Every connection goes through benchmarks/link_relay.py as its ProxyCommand: per direction a queue drained at the
link's rate, then a delay line of half the RTT. Against a plain sshd worker and an sshd host whose jobs run in a
worker container (the shape of a gce-cos VM), it prints:
  - round trips each command adds: (time at BENCH_RTT_MS − time at 0 ms) / BENCH_RTT_MS, for a warm `run` (a
    one-line change to send), `check`, `status` and `logs JOB` (a read), with the connection agent and without
    it (OFFLOAD_PERSIST=0), with the step dispatcher and without it (OFFLOAD_DISPATCH=0: a channel and an exec
    per step, as before), next to a whole `ssh host true` (targets with the agent: <= 1.5 for each command);
  - a warm `run` on the container worker against the same on the plain one (target <= 1.1x);
  - a 30 MB incompressible untracked file: what the sync of `offload run` takes, with and without the agent, against
    `cat FILE | ssh host 'cat >/dev/null'` through the same link (target >= 50% of its throughput), at 0 ms and
    unlimited bandwidth, and at BENCH_RTT_MS and BENCH_MBIT megabits a second each way. Throughput is the file's
    size over the time it adds: to a warm run for offload, to `ssh host true` for ssh;
  - the first sync of a repository whose history is over 20x its tree (benchmarks/bench_first_sync.py), at depth 1
    and in full, in bytes and in time through the link, against `git archive HEAD | gzip` of that tree sent through
    the same link with ssh (target: <= 1.2x its bytes).

Run as root on a machine with openssh-server, git, tmux and docker.io (the worker image is built by
scripts/build-worker-image.sh as the tests build it): `python3 benchmarks/bench_link.py`. BENCH_REPEAT (default 5)
sets the repetitions of each timing (the least is
kept: noise on a loaded machine only adds); BENCH_MB the size of the big file (default 30);
BENCH_PARTS=trips, throughput or first-sync runs only that part.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench_common import ROOT, Bench, stop_agent  # noqa: E402  (also puts the project on sys.path)
from tests.workers import (SshDockerWorker, ensure_in_group, make_repo, sshd_record, start_docker_worker,  # noqa: E402
                           start_sshd, write_outputs)

RTT_MS = float(os.environ.get("BENCH_RTT_MS", "100"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
BIG_MB = int(os.environ.get("BENCH_MB", "30"))
PARTS = os.environ.get("BENCH_PARTS", "all")  # all, trips, throughput or first-sync
MBIT = float(os.environ.get("BENCH_MBIT", "200"))
IMAGE = "offload-worker:test"
RELAY = Path(__file__).resolve().parent / "link_relay.py"


def link(rtt_ms: float, mbit: float = 0.0) -> str:
    """The ProxyCommand of a link with RTT_MS of round trip and MBIT megabits a second each way (0: unlimited)."""
    rate = mbit * 1e6 / 8
    return f"/usr/bin/python3 -S {RELAY} %h %p {rtt_ms:g} {rate:.0f} {rate:.0f}"


def least_of(timed: Callable[[], float], repeat: int = REPEAT) -> float:
    return min(timed() for _ in range(repeat))


def main() -> None:
    bench = Bench.create("offload-bench-link-")
    base, env = bench.base, bench.env
    owner = str(os.getpid())
    docker = subprocess.run([str(ROOT / "scripts" / "dockerd.sh"), "acquire", owner], capture_output=True, text=True)
    if docker.returncode != 0:
        raise SystemExit(f"cannot start a Docker engine: {docker.stderr.strip()}")
    plain = container_host = container = None
    try:
        subprocess.run([str(ROOT / "scripts" / "build-worker-image.sh"), IMAGE], check=True, capture_output=True)
        ensure_in_group(bench.user.name, "docker")
        plain = start_sshd(base=base / "sshd-plain", user=bench.user, client_key=bench.key)
        container_host = start_sshd(base=base / "sshd-container", user=bench.user, client_key=bench.key)
        container = start_docker_worker(Path(container_host.workspace), image=IMAGE, name=f"offload-bench-{owner}")
        boxed = SshDockerWorker(ssh=container_host, container=container)
        repo = make_repo(base / "repo", files=200)
        counter = repo / "counter.txt"
        no_agent = dict(env, OFFLOAD_PERSIST="0")
        old_steps = dict(env, OFFLOAD_DISPATCH="0")
        old_no_agent = dict(no_agent, OFFLOAD_DISPATCH="0")
        modes = {"agent": env, "agent, exec per step": old_steps, "no agent": no_agent,
                 "no agent, exec per step": old_no_agent}

        def outputs(name: str, worker, proxy: str) -> Path:
            return write_outputs(base / f"{name}.json", "ssh", [sshd_record(worker, proxy_command=proxy)])

        def offload(*args: str) -> list[str]:
            return [sys.executable, "-m", "offload", *args]

        def ssh(worker, proxy: str, *command: str) -> list[str]:
            known = base / "known_hosts"
            known.write_text(f"[{worker.host}]:{worker.port} {worker.host_key}\n")
            return ["ssh", "-i", str(bench.key.private), "-p", str(worker.port), "-o", f"UserKnownHostsFile={known}",
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", f"ProxyCommand={proxy}",
                    "-F", "/dev/null", f"{worker.user}@{worker.host}", *command]

        def job_of(out: Path, e: dict[str, str]) -> str:
            job = f"j{time.monotonic_ns()}"
            subprocess.run(offload("run", "--outputs", str(out), "--job", job, "--wait", "--", "echo done"), cwd=repo,
                           env=e, capture_output=True, check=True)
            return job

        def warm_run(out: Path, e: dict[str, str]) -> float:
            counter.write_text(f"{time.monotonic_ns()}\n")  # a one-line change: a small delta to send
            # The worker keeps the jobs `check` and `logs` read (it would prune them among the warm runs' jobs).
            return bench.timed(offload("run", "--outputs", str(out), "--keep-jobs", "200", "--", "true"), env=e,
                               cwd=repo)

        # --- round trips per command -----------------------------------------------------------------------
        # Each figure is the least of REPEAT timings, the two RTTs interleaved: this machine's noise only ever adds.
        figures: dict[tuple[str, str, str, float], float] = {}

        def keep(key: tuple[str, str, str, float], seconds: float) -> None:
            figures[key] = min(figures.get(key, seconds), seconds)

        # Everything interleaved, so that the machine's load falls on every figure alike. A connection the agent has
        # not used for 15 s must answer a probe first: each block starts with an untimed command that pays it.
        trips_wanted = PARTS in ("all", "trips")
        kinds = (("plain", plain), ("container", boxed)) if trips_wanted else ()
        outs = {(kind, rtt): outputs(f"{kind}-{rtt:g}", worker, link(rtt)) for kind, worker in kinds
                for rtt in (0.0, RTT_MS)}
        jobs = {key: job_of(out, env) for key, out in outs.items()}  # warm: the repository is on the worker
        for _ in range(REPEAT if trips_wanted else 0):
            for (kind, rtt), out in outs.items():
                for mode, e in modes.items():
                    if e.get("OFFLOAD_PERSIST") != "0":
                        bench.timed(offload("status", "--outputs", str(out)), env=e, cwd=repo)
                    keep((kind, mode, "run", rtt), warm_run(out, e))
                    for what in ("check", "logs"):
                        keep((kind, mode, what, rtt),
                             bench.timed(offload(what, jobs[(kind, rtt)], "--outputs", str(out)), env=e, cwd=repo))
                    keep((kind, mode, "status", rtt),
                         bench.timed(offload("status", "--outputs", str(out)), env=e, cwd=repo))
            for rtt in (0.0, RTT_MS):
                keep(("ssh", "", "true", rtt), bench.timed(ssh(plain, link(rtt), "true"), cwd=repo))

        def trips(kind: str, mode: str, what: str) -> float:
            return (figures[(kind, mode, what, RTT_MS)] - figures[(kind, mode, what, 0.0)]) / (RTT_MS / 1000)

        if PARTS in ("all", "trips"):
            print(f"link: {RTT_MS:g} ms RTT against 0 ms, unlimited bandwidth; the least of {REPEAT} timings")
            report(figures, modes, trips)
        if PARTS in ("all", "throughput"):
            throughput(bench, plain, repo, outputs, ssh, warm_run, job_of, env, no_agent)
        if PARTS in ("all", "first-sync"):
            first_sync(bench, plain, ssh)
    finally:
        for out in base.glob("*.json"):
            subprocess.run([sys.executable, "-m", "offload", "clean", "--all", "--yes", "--outputs", str(out)],
                           env=env, capture_output=True, check=False)
        stop_agent(env)
        if container is not None:
            container.stop()
        for worker in (plain, container_host):
            if worker is not None:
                worker.stop()
        subprocess.run([str(ROOT / "scripts" / "dockerd.sh"), "release", owner], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)  # the big file's copies on tmpfs


def report(figures: dict[tuple[str, str, str, float], float], modes: dict[str, dict[str, str]],
           trips: Callable[[str, str, str], float]) -> None:
    ssh_trips = (figures[("ssh", "", "true", RTT_MS)] - figures[("ssh", "", "true", 0.0)]) / (RTT_MS / 1000)
    print(f"  ssh host true: {ssh_trips:4.1f} round trips ({figures[('ssh', '', 'true', 0.0)] * 1000:.0f} ms "
          f"at 0 ms)")
    print("round trips each command adds (target with the agent: <= 1.5)")
    print(f"  {'worker, mode':36s} {'run':>6s} {'check':>6s} {'status':>6s} {'logs':>6s}")
    for kind in ("plain", "container"):
        for mode in modes:
            row = "".join(f" {trips(kind, mode, w):6.1f}" for w in ("run", "check", "status", "logs"))
            print(f"  {kind + ', ' + mode:36s}{row}")
    print("warm run, container worker against plain worker (target <= 1.1x)")
    for mode in modes:
        for rtt in (0.0, RTT_MS):
            ratio = figures[("container", mode, "run", rtt)] / figures[("plain", mode, "run", rtt)]
            print(f"  {mode:28s} at {rtt:5g} ms: {ratio:4.2f}x  ({figures[('container', mode, 'run', rtt)] * 1000:.0f}"
                  f" ms against {figures[('plain', mode, 'run', rtt)] * 1000:.0f} ms)")


def throughput(bench: Bench, plain, repo: Path, outputs, ssh, warm_run, job_of, env: dict[str, str],
               no_agent: dict[str, str]) -> None:
    print(f"{BIG_MB} MB incompressible untracked file (target: >= 50% of ssh's throughput)")
    big = repo / "big.bin"
    for rtt, mbit in ((0.0, 0.0), (RTT_MS, MBIT)):
        proxy = link(rtt, mbit)
        out = outputs(f"big-{rtt:g}", plain, proxy)
        for e in (env, no_agent):
            job_of(out, e)  # warm
        big.write_bytes(os.urandom(BIG_MB << 20))

        def by_ssh() -> float:
            with open(big, "rb") as data:
                return bench.timed(ssh(plain, proxy, "cat >/dev/null"), stdin=data)

        ssh_whole, ssh_true = least_of(by_ssh, 3), least_of(lambda: bench.timed(ssh(plain, proxy, "true")), 3)
        ssh_moving = ssh_whole - ssh_true
        where = "0 ms, unlimited" if not mbit else f"{rtt:g} ms, {mbit:g} Mbit/s each way"
        print(f"  link {where}: `cat FILE | ssh host 'cat >/dev/null'` {ssh_whole:5.2f} s, "
              f"{ssh_moving:5.2f} s more than `ssh host true` ({BIG_MB / ssh_moving:6.1f} MB/s)")
        for mode, e in (("agent", env), ("no agent", no_agent)):
            def with_big() -> float:
                big.write_bytes(os.urandom(BIG_MB << 20))  # a new file each time: every sync sends all of it
                return warm_run(out, e)

            def without_big() -> float:
                big.unlink(missing_ok=True)
                return warm_run(out, e)

            whole, warm = least_of(with_big, 3), least_of(without_big, 3)
            moving = whole - warm
            print(f"    offload run, {mode:9s} {whole:5.2f} s, {moving:5.2f} s more than a warm run "
                  f"({BIG_MB / moving:6.1f} MB/s): {100 * ssh_moving / moving:3.0f}% of ssh's throughput; "
                  f"{whole / ssh_whole:4.2f}x its whole time")
        big.unlink(missing_ok=True)
        if rtt:
            stop_agent(env)


def first_sync(bench: Bench, plain, ssh) -> None:
    from bench_first_sync import first_sync_figures, long_history_repo

    proxy = link(RTT_MS, MBIT)
    repo = long_history_repo()
    figures = first_sync_figures(repo, bench=bench, worker=plain, proxy_command=proxy)

    def archive_by_ssh() -> float:
        archive = subprocess.Popen(["git", "archive", "HEAD"], cwd=repo, stdout=subprocess.PIPE)
        gzip = subprocess.Popen(["gzip", "-c"], stdin=archive.stdout, stdout=subprocess.PIPE)
        assert archive.stdout is not None
        archive.stdout.close()
        seconds = bench.timed(ssh(plain, proxy, "cat >/dev/null"), stdin=gzip.stdout)
        gzip.wait()
        archive.wait()
        return seconds

    by_ssh = least_of(archive_by_ssh, 3)
    login = least_of(lambda: bench.timed(ssh(plain, proxy, "true")), 3)  # offload's figures are on a held connection
    print(f"first sync of a repository of {figures.commits} commits and {figures.files} files, {RTT_MS:g} ms and "
          f"{MBIT:g} Mbit/s each way (target: <= 1.2x the archive's bytes)")
    print(f"  `git archive HEAD | gzip | ssh host 'cat >/dev/null'`: {figures.archive_bytes / 1e6:7.2f} MB "
          f"in {by_ssh:5.2f} s, {by_ssh - login:5.2f} s more than `ssh host true`")
    print(f"  offload, depth 1 (the default):                    {figures.depth1_bytes / 1e6:7.2f} MB "
          f"in {figures.depth1_seconds:5.2f} s ({figures.depth1_ratio:.2f}x the bytes)")
    print(f"  offload, --depth full:                             {figures.full_bytes / 1e6:7.2f} MB "
          f"in {figures.full_seconds:5.2f} s ({figures.full_ratio:.2f}x the bytes)")


if __name__ == "__main__":
    main()
