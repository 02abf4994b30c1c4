#!/usr/bin/env python3
"""What `offload doctor` costs, in one run: on a healthy sshd worker on loopback (wall time and sshd logins, with
no connection agent), next to one `ssh host true` and one `offload status`; and a GCP stack's preflight against
the local API fakes, next to one `gcloud auth list`, the one gcloud command it runs.

Run as root on a machine with openssh-server, git, tmux and gcloud: `python3 benchmarks/bench_doctor.py`.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time

from bench_common import Bench, stop_agent  # noqa: E402  (also puts the project on sys.path)
from offload.deploy import BOOTSTRAP_APIS, DEPLOY_ROLES, GCE_APIS  # noqa: E402
from tests.fakes.compute_api import ComputeFake  # noqa: E402
from tests.fakes.project_api import ProjectApiFake  # noqa: E402
from tests.workers import sshd_record, start_sshd, write_outputs  # noqa: E402

RUNS = 10
STACK = """\
config:
  offload:provider: gce-cos
  offload:developer: dev@example.com
  gcp:project: p
  gcp:zone: us-west1-a
"""


def main() -> None:
    bench = Bench.create("offload-bench-doctor-")
    env = dict(bench.env, OFFLOAD_PERSIST="0")  # every command logs in itself: what doctor costs alone
    worker = start_sshd(base=bench.base / "sshd", user=bench.user, client_key=bench.key)
    outputs = write_outputs(bench.base / "outputs.json", "ssh", [sshd_record(worker)])
    offload = [sys.executable, "-m", "offload"]
    try:
        known = bench.base / "known_hosts"
        known.write_text(f"[{worker.host}]:{worker.port} {worker.host_key}\n")
        ssh = ["ssh", "-i", str(bench.key.private), "-p", str(worker.port), "-o", f"UserKnownHostsFile={known}",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-F", "/dev/null",
               f"{worker.user}@{worker.host}", "true"]
        ssh_t = [bench.timed(ssh, env=env) for _ in range(RUNS)]
        logins = worker.accepted_count()
        status_t = [bench.timed(offload + ["status", "--outputs", str(outputs)], env=env) for _ in range(RUNS)]
        status_logins = (worker.accepted_count() - logins) / RUNS
        logins = worker.accepted_count()
        doctor_t = [bench.timed(offload + ["doctor", "--outputs", str(outputs)], env=env) for _ in range(RUNS)]
        doctor_logins = (worker.accepted_count() - logins) / RUNS

        gcloud_t, preflight_t, checks = _preflight(bench, env, offload)

        base = statistics.median(ssh_t)
        print(f"{RUNS} runs each, medians; sshd worker on loopback, no connection agent (OFFLOAD_PERSIST=0)")
        print(f"ssh host true:              {base * 1000:7.1f} ms  1.00x  logins 1")
        print(f"offload status:             {statistics.median(status_t) * 1000:7.1f} ms  "
              f"{statistics.median(status_t) / base:5.2f}x  logins {status_logins:g}")
        print(f"offload doctor (8 checks):  {statistics.median(doctor_t) * 1000:7.1f} ms  "
              f"{statistics.median(doctor_t) / base:5.2f}x  logins {doctor_logins:g}")
        g = statistics.median(gcloud_t)
        print(f"gcloud auth list:           {g * 1000:7.1f} ms  1.00x")
        print(f"doctor, GCP preflight ({checks} checks, API fakes): {statistics.median(preflight_t) * 1000:7.1f} ms  "
              f"{statistics.median(preflight_t) / g:5.2f}x")
    finally:
        stop_agent(env)
        worker.stop()
        shutil.rmtree(bench.base, ignore_errors=True)


def _preflight(bench: Bench, env: dict[str, str], offload: list[str]) -> tuple[list[float], list[float], int]:
    """A ready project behind the fakes: every check ✓, so every call is made."""
    gcloud = bench.base / "gcloud"
    (gcloud / "configurations").mkdir(parents=True)
    (gcloud / "active_config").write_text("default")
    (gcloud / "configurations" / "config_default").write_text("[core]\naccount = dev@example.com\nproject = p\n")
    adc = bench.base / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "i", "client_secret": "s",
                               "refresh_token": "r", "quota_project_id": "p"}))
    stacks = bench.base / "cfg" / "stacks"
    stacks.mkdir(parents=True, exist_ok=True)
    (stacks / "Pulumi.dev.yaml").write_text(STACK)
    with ProjectApiFake() as projects, ComputeFake() as compute:
        projects.add("p", enabled={*BOOTSTRAP_APIS, *GCE_APIS},
                     permissions={p for r in DEPLOY_ROLES for p in r.permissions})
        for metric, region, limit in (("CPUS", "us-west1", 24), ("SSD_TOTAL_GB", "us-west1", 500),
                                      ("IN_USE_ADDRESSES", "us-west1", 8), ("CPUS_ALL_REGIONS", None, 32),
                                      ("NETWORKS", None, 15), ("FIREWALLS", None, 100)):
            compute.quota(metric, limit, region=region)
        genv = dict(env, CLOUDSDK_CONFIG=str(gcloud), GOOGLE_APPLICATION_CREDENTIALS=str(adc),
                    OFFLOAD_SERVICEUSAGE_ENDPOINT=projects.endpoint, OFFLOAD_RESOURCEMANAGER_ENDPOINT=projects.endpoint,
                    OFFLOAD_COMPUTE_ENDPOINT=compute.endpoint)
        # Without a pulumi CLI that check fails (and doctor exits 1), but every API call is still made.
        gcloud_t = [bench.timed(["gcloud", "auth", "list", "--format=json"], env=genv) for _ in range(RUNS)]
        preflight_t = [_timed_any(offload + ["doctor", "--stack", "dev", "--json"], genv) for _ in range(RUNS)]
        out = subprocess.run(offload + ["doctor", "--stack", "dev", "--json"], env=genv, capture_output=True,
                             text=True)
        checks = len(json.loads(out.stdout)["checks"])
    return gcloud_t, preflight_t, checks


def _timed_any(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of a doctor run, which exits 1 when a check fails; anything else ends the benchmark."""
    start = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, env=env)
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed: {p.stderr.decode().strip()}")
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
