#!/usr/bin/env python3
"""How much a warm `offload run` costs against a real sshd worker, next to baselines taken in the same run.

Prints:
  - for a worker reached through a ProxyCommand relay (a process per connection and a hop, as an IAP tunnel is):
    a warm `offload run` with the connection agent and the warm command server, and without them
    (OFFLOAD_PERSIST=0), the SSH logins each took
    (sshd's "Accepted publickey" lines; targets: 0 with the agent, 1 without), and their wall time against one
    plain `ssh host true` through the same proxy command (target with the agent: <= 1.0);
  - the same without a proxy, next to a direct `ssh host true`;
  - bytes offload sends for an incremental sync after a one-line change in a 5,000-file repository
    (target <= 4 KiB), next to what `rsync -az` sends for the same change.

Run as root on a machine with openssh-server, git, tmux and rsync: `python3 benchmarks/bench_run.py`.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys

from pathlib import Path

from bench_common import Bench, stop_agent  # noqa: E402  (also puts the project on sys.path)
from tests.workers import make_repo, proxy_relay, sshd_record, start_sshd, write_outputs  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
FILES = 5000


def main() -> None:
    bench = Bench.create("offload-bench-run-")
    base, env, private = bench.base, bench.env, bench.key.private
    worker = start_sshd(base=base / "sshd", user=bench.user, client_key=bench.key)
    outputs = write_outputs(base / "outputs.json", "ssh", [sshd_record(worker)])
    relay = proxy_relay(base, python="/usr/bin/python3")
    proxied = write_outputs(base / "proxied.json", "ssh", [sshd_record(worker, proxy_command=relay)])
    try:
        repo = make_repo(base / "repo", files=FILES)
        known = base / "known_hosts"
        known.write_text(f"[{worker.host}]:{worker.port} {worker.host_key}\n")
        ssh = ["ssh", "-i", str(private), "-p", str(worker.port), "-o", f"UserKnownHostsFile={known}",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-F", "/dev/null",
               f"{worker.user}@{worker.host}", "true"]
        ssh_proxied = ssh[:1] + ["-o", f"ProxyCommand={relay}"] + ssh[1:]
        no_agent = dict(env, OFFLOAD_PERSIST="0")

        def run(out: Path) -> list[str]:
            return [sys.executable, "-m", "offload", "run", "--outputs", str(out), "--", "true"]

        cases = {  # name: (argv, env)
            "ssh true, through the proxy": (ssh_proxied, env),
            "offload run, through the proxy, agent+warm": (run(proxied), env),
            "offload run, through the proxy, neither": (run(proxied), no_agent),
            "ssh true, direct": (ssh, env),
            "offload run, direct, agent+warm": (run(outputs), env),
            "offload run, direct, neither": (run(outputs), no_agent),
        }
        for argv, e in cases.values():      # cold: the first sync of the whole repository, the agent's first dial
            bench.timed(argv, env=e, cwd=repo)
        times: dict[str, list[float]] = {name: [] for name in cases}
        logins: dict[str, list[int]] = {name: [] for name in cases}
        for _ in range(ROUNDS):                # interleaved, so machine noise hits all of them alike
            for name, (argv, e) in cases.items():
                before = worker.accepted_count()
                times[name].append(bench.timed(argv, env=e, cwd=repo))
                logins[name].append(worker.accepted_count() - before)
        med = {name: statistics.median(t) for name, t in times.items()}

        # incremental sync: offload's pack payload vs rsync -az for the same one-line change
        os.environ.update({k: env[k] for k in ("HOME", "OFFLOAD_CONFIG_DIR", "OFFLOAD_CACHE_DIR")})
        from offload.worker.layout import JobPaths
        from offload.outputs import WorkerRecord
        from offload.runtime.connection import ConnectOptions, open_connection
        from offload.runtime.sync import push_snapshot, take_snapshot
        from offload.runtime.transport import SshTransport

        record = WorkerRecord.from_dict(sshd_record(worker))
        conn = open_connection(record, ConnectOptions(identity=private))
        transport = SshTransport(record.name, conn)
        cache_key = f"ssh:{record.name}:{record.host}:{record.port}:{record.workspace}"
        push_snapshot(transport, take_snapshot(repo), JobPaths(record.workspace, "bench-a"), cache_key)
        with open(repo / "file42.txt", "a") as f:
            f.write("one more line\n")
        stats = push_snapshot(transport, take_snapshot(repo), JobPaths(record.workspace, "bench-b"), cache_key)
        conn.close()

        dest = f"{worker.user}@{worker.host}:{worker.workspace}/rsync-copy/"
        rsh = f"ssh -i {private} -p {worker.port} -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -F /dev/null"
        (repo / "file42.txt").write_text("content 42\n")
        rsync = ["rsync", "-az", "--stats", "--exclude=.git", "-e", rsh, f"{repo}/", dest]
        subprocess.run(rsync, check=True, capture_output=True, env=env)
        with open(repo / "file42.txt", "a") as f:
            f.write("one more line\n")
        out = subprocess.run(rsync, check=True, capture_output=True, text=True, env=env).stdout
        sent = int(re.search(r"Total bytes sent: ([\d,.]+)", out).group(1).replace(",", "").replace(".", ""))

        print(f"repository: {FILES} files; rounds: {ROUNDS} (medians); ratios against `ssh host true` the same way")
        for name in cases:
            base_name = "ssh true, through the proxy" if "proxy" in name else "ssh true, direct"
            print(f"  {name:<42} {med[name] * 1000:6.0f} ms  ratio {med[name] / med[base_name]:5.2f}  "
                  f"logins {statistics.mode(logins[name])} (all rounds: {sorted(set(logins[name]))})")
        print("targets: warm offload run through the proxy with the agent <= 1.0x and 0 logins")
        print(f"incremental sync after a one-line change: offload {stats.pack_bytes} bytes of pack in "
              f"{stats.round_trips} round trip(s) (target <= 4096); rsync -az sent {sent} bytes; "
              f"ratio rsync/offload {sent / max(stats.pack_bytes, 1):.0f}x")
    finally:
        # `clean --all` ends every job's tmux server on the worker; then the worker itself goes.
        subprocess.run([sys.executable, "-m", "offload", "clean", "--all", "--yes", "--outputs", str(outputs)],
                       cwd=base, env=env, capture_output=True, check=False)
        stop_agent(env)
        worker.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
