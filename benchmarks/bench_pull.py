#!/usr/bin/env python3
"""What `offload pull` receives: bytes for a job that changed one line of a 5,000-file repository, next to a job
that changed nothing, against a real sshd worker on loopback, in one run.

Target: the one-line change costs <= 4 KiB more than the job that changed nothing. Also prints the wall time of
each pull next to one plain `ssh host true`.

Run as root on a machine with openssh-server, git and tmux: `python3 benchmarks/bench_pull.py`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from bench_common import Bench, stop_agent  # noqa: E402  (also puts the project on sys.path)
from tests.workers import make_repo, sshd_record, start_sshd, write_outputs  # noqa: E402

FILES = 5000
ROUNDS = 5


def main() -> None:
    bench = Bench.create("offload-bench-pull-")
    worker = start_sshd(base=bench.base / "sshd", user=bench.user, client_key=bench.key)
    outputs = write_outputs(bench.base / "outputs.json", "ssh", [sshd_record(worker)])
    offload = [sys.executable, "-m", "offload"]
    try:
        repo = make_repo(bench.base / "repo", files=FILES)

        def run(job: str, command: str) -> None:
            bench.timed(offload + ["run", "--outputs", str(outputs), "--job", job, "--wait", "--", command], cwd=repo)

        def pull(job: str) -> tuple[int, float]:
            start = time.perf_counter()
            p = subprocess.run(offload + ["pull", job, "--json", "--outputs", str(outputs)], cwd=repo,
                               env=bench.env, capture_output=True, check=True)
            return json.loads(p.stdout)["pack_bytes"], time.perf_counter() - start

        known = bench.base / "known_hosts"
        known.write_text(f"[{worker.host}]:{worker.port} {worker.host_key}\n")
        ssh = ["ssh", "-i", str(bench.key.private), "-p", str(worker.port), "-o", f"UserKnownHostsFile={known}",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-F", "/dev/null",
               f"{worker.user}@{worker.host}", "true"]
        same, edit, same_t, edit_t, ssh_t = [], [], [], [], []
        for i in range(ROUNDS):
            run(f"same{i}", "true")
            run(f"edit{i}", f"sed -i 's/content 7/content 7, edited in round {i}/' file7.txt")
            b, t = pull(f"same{i}")
            same.append(b)
            same_t.append(t)
            b, t = pull(f"edit{i}")
            edit.append(b)
            edit_t.append(t)
            ssh_t.append(bench.timed(ssh))
        extra = statistics.median(edit) - statistics.median(same)
        print(f"repository: {FILES} files; sshd worker on loopback; medians of {ROUNDS} rounds")
        print(f"pull of a job that changed nothing:  {statistics.median(same):6.0f} bytes, "
              f"{statistics.median(same_t) * 1000:5.0f} ms")
        print(f"pull of a one-line change:           {statistics.median(edit):6.0f} bytes, "
              f"{statistics.median(edit_t) * 1000:5.0f} ms")
        print(f"the change costs {extra:.0f} bytes more (target <= 4096); one `ssh host true`: "
              f"{statistics.median(ssh_t) * 1000:.0f} ms")
    finally:
        subprocess.run(offload + ["clean", "--all", "--yes", "--outputs", str(outputs)], cwd=bench.base,
                       env=bench.env, capture_output=True)
        stop_agent(bench.env)
        worker.stop()


if __name__ == "__main__":
    main()
