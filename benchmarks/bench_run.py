#!/usr/bin/env python3
"""How much a warm `offload run` costs against a real sshd worker, next to baselines taken in the same run.

Prints:
  - SSH connections per warm `offload run` (sshd's "Accepted publickey" lines; the target is 1);
  - warm `offload run` wall time / one plain `ssh host true` to the same worker (target <= 3);
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

from bench_common import Bench  # noqa: E402  (also puts the project on sys.path)
from tests.workers import make_repo, sshd_record, start_sshd, write_outputs  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
FILES = 5000


def main() -> None:
    bench = Bench.create("offload-bench-run-")
    base, env, private = bench.base, bench.env, bench.key.private
    worker = start_sshd(base=base / "sshd", user=bench.user, client_key=bench.key)
    outputs = write_outputs(base / "outputs.json", "ssh", [sshd_record(worker)])
    try:
        repo = make_repo(base / "repo", files=FILES)
        known = base / "known_hosts"
        known.write_text(f"[{worker.host}]:{worker.port} {worker.host_key}\n")
        offload = [sys.executable, "-m", "offload", "run", "--outputs", str(outputs), "--", "true"]
        ssh = ["ssh", "-i", str(private), "-p", str(worker.port), "-o", f"UserKnownHostsFile={known}",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-F", "/dev/null",
               f"{worker.user}@{worker.host}", "true"]

        bench.timed(offload, cwd=repo)          # cold: first sync of the whole repository
        bench.timed(ssh)
        counts, run_times, ssh_times = [], [], []
        for _ in range(ROUNDS):                    # interleaved, so machine noise hits both alike
            before = worker.accepted_count()
            run_times.append(bench.timed(offload, cwd=repo))
            counts.append(worker.accepted_count() - before)
            ssh_times.append(bench.timed(ssh))
        run_med, ssh_med = statistics.median(run_times), statistics.median(ssh_times)

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

        print(f"repository: {FILES} files; rounds: {ROUNDS} (medians)")
        print(f"SSH connections per warm offload run: {statistics.mode(counts)} (all rounds: {sorted(set(counts))})")
        print(f"warm offload run: {run_med * 1000:.0f} ms; plain ssh true: {ssh_med * 1000:.0f} ms; "
              f"ratio {run_med / ssh_med:.2f} (target <= 3)")
        print(f"incremental sync after a one-line change: offload {stats.pack_bytes} bytes of pack in "
              f"{stats.round_trips} round trip(s) (target <= 4096); rsync -az sent {sent} bytes; "
              f"ratio rsync/offload {sent / max(stats.pack_bytes, 1):.0f}x")
    finally:
        # `clean --all` ends every job's tmux server on the worker; then the worker itself goes.
        subprocess.run([sys.executable, "-m", "offload", "clean", "--all", "--yes", "--outputs", str(outputs)],
                       cwd=base, env=env, capture_output=True, check=False)
        worker.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
