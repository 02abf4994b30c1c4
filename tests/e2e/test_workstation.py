"""A Cloud Workstation end to end: the outputs say which workstation, and the runtime builds the way in.

gcloud's workstation tunnel only listens on a local port. Here a real TCP forwarder plays that part (it
listens on a free port, announces it as gcloud does, and carries the connection to a real sshd), so `offload run`
and plain OpenSSH both go through offload's own relay, `python -m offload.runtime.tunnel`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import offload
from tests.fakes.workstations_api import WorkstationsFake
from tests.workers import SshdWorker, make_repo, sshd_record, write_outputs

TUNNEL = """\
import json, os, socket, subprocess, sys, threading
with open(os.environ["OFFLOAD_TEST_TUNNEL_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["workstations", "ssh"]:
    # gcloud's own login: run the command in the workstation user's home, with stdin passed on.
    command = next(a for a in sys.argv if a.startswith("--command=")).split("=", 1)[1]
    home = os.environ["OFFLOAD_TEST_WS_HOME"]
    sys.exit(subprocess.run(["sh", "-c", command], env={"HOME": home, "PATH": os.environ["PATH"]}).returncode)
running = os.environ.get("OFFLOAD_TEST_WS_RUNNING")
if running and not os.path.exists(running):
    print("ERROR: (gcloud.workstations.start-tcp-tunnel) workstation is not running", file=sys.stderr)
    sys.exit(1)
if sys.argv[1:3] != ["workstations", "start-tcp-tunnel"] or sys.argv[-1] != "--local-host-port=localhost:0":
    print("ERROR: not a workstation tunnel", file=sys.stderr)
    sys.exit(2)
target = int(os.environ["OFFLOAD_TEST_TUNNEL_TARGET"])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(f"Picking local unused port [{srv.getsockname()[1]}].", file=sys.stderr, flush=True)
conn, _ = srv.accept()
up = socket.create_connection(("127.0.0.1", target))
def pipe(a, b):
    while data := a.recv(65536):
        b.sendall(data)
    b.shutdown(socket.SHUT_WR)
threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
pipe(up, conn)
"""


@pytest.fixture
def workstation(sshd_worker: SshdWorker, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Outputs for one workstation, and the environment that puts the local-port tunnel where gcloud would be."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f"#!{sys.executable}\n{TUNNEL}")
    gcloud.chmod(0o755)
    record = sshd_record(sshd_worker, name="offload-dev-0", host="offload-dev-0", port=22, host_keys=[],
                         instance="offload-dev-0", project="p-offload", region="us-central1",
                         workstation_cluster="offload-dev-cluster", workstation_config="offload-dev-config")
    out = write_outputs(tmp_path / "o.json", "workstation", [record])
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OFFLOAD_SSH_KEY": str(sshd_worker.key_path),
           "OFFLOAD_TEST_TUNNEL_TARGET": str(sshd_worker.port), "OFFLOAD_TEST_TUNNEL_LOG": str(tmp_path / "tunnels")}
    return out, env


def test_a_job_runs_through_the_workstation_tunnel(workstation: tuple[Path, dict[str, str]], tmp_path: Path,
                                                   sshd_worker: SshdWorker) -> None:
    out, env = workstation
    repo = make_repo(tmp_path / "repo")
    p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "through the workstation", cwd=repo, env=env)
    assert (p.returncode, p.stdout) == (0, b"through the workstation\n"), p.stderr
    calls = [json.loads(line) for line in (tmp_path / "tunnels").read_text().splitlines()]
    assert calls == [["workstations", "start-tcp-tunnel", "--project=p-offload", "--region=us-central1",
                      "--cluster=offload-dev-cluster", "--config=offload-dev-config", "offload-dev-0", "22",
                      "--local-host-port=localhost:0"]]


def test_plain_ssh_reaches_the_workstation_through_ssh_config(workstation: tuple[Path, dict[str, str]],
                                                              tmp_path: Path, sshd_worker: SshdWorker) -> None:
    out, env = workstation
    home = Path(os.environ["HOME"])
    # The first connection trusts the workstation's key on first use; then ssh checks it strictly.
    repo = make_repo(tmp_path / "repo")
    assert offload("run", "--outputs", str(out), "--wait", "--", "true", cwd=repo, env=env).returncode == 0
    p = offload("ssh-config", "--outputs", str(out), "--identity", str(sshd_worker.key_path), cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert (f"    ProxyCommand {sys.executable} -m offload.runtime.tunnel workstation --project=p-offload "
            "--region=us-central1 --cluster=offload-dev-cluster --config=offload-dev-config %h %p\n") in text
    config = tmp_path / "ssh_config"
    config.write_text(text)
    login = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "offload-dev-0", "echo", "plain ssh"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                           env={**env, "HOME": str(home)})
    assert (login.returncode, login.stdout) == (0, "plain ssh\n"), login.stderr


def test_outputs_without_the_workstation_fields_are_a_clear_error(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    record = sshd_record(sshd_worker, name="offload-dev-0", host="offload-dev-0", port=22, project="p-offload")
    out = write_outputs(tmp_path / "o.json", "workstation", [record])
    p = offload("run", "--outputs", str(out), "--", "true", cwd=make_repo(tmp_path / "repo"))
    assert p.returncode == 2
    assert p.stderr.decode().startswith("offload: worker offload-dev-0 is a workstation but its outputs lack "
                                        "project, region, workstation_cluster or workstation_config")


def _stopped_workstation(worker: SshdWorker, tmp_path: Path, fake: WorkstationsFake) -> tuple[Path, dict[str, str]]:
    """A stopped workstation behind the fake API, whose tunnel answers only once the API has started it."""
    flag = tmp_path / "running"
    fake.on_running = lambda ws: flag.touch()
    fake.add("offload-dev-0", project="p-offload", region="us-central1", cluster="offload-dev-cluster",
             config="offload-dev-config", state="STATE_STOPPED")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f"#!{sys.executable}\n{TUNNEL}")
    gcloud.chmod(0o755)
    record = sshd_record(worker, name="offload-dev-0", host="offload-dev-0", port=22, host_keys=[worker.host_key],
                         instance="offload-dev-0", project="p-offload", region="us-central1",
                         workstation_cluster="offload-dev-cluster", workstation_config="offload-dev-config")
    out = write_outputs(tmp_path / "o.json", "workstation", [record])
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OFFLOAD_SSH_KEY": str(worker.key_path),
           "OFFLOAD_TEST_TUNNEL_TARGET": str(worker.port), "OFFLOAD_TEST_TUNNEL_LOG": str(tmp_path / "tunnels"),
           "OFFLOAD_TEST_WS_RUNNING": str(flag), "OFFLOAD_WORKSTATIONS_ENDPOINT": fake.endpoint}
    return out, env


def test_a_stopped_workstation_is_started_through_the_api_by_run_and_by_nothing_else(
        sshd_worker: SshdWorker, tmp_path: Path) -> None:
    with WorkstationsFake(transition_gets=2) as fake:
        out, env = _stopped_workstation(sshd_worker, tmp_path, fake)
        repo = make_repo(tmp_path / "repo")
        p = offload("check", "some-job", "--outputs", str(out), cwd=repo, env=env)
        assert p.returncode == 3 and "worker offload-dev-0 is stopped" in p.stderr.decode(), p.stderr
        assert not fake.calls("POST"), "a read started the workstation"
        p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "woke", cwd=repo, env=env)
        assert (p.returncode, p.stdout) == (0, b"woke\n"), p.stderr
        assert [c.target for c in fake.calls("POST")] == ["offload-dev-0:start"]
        states = [c.target for c in fake.calls("GET")]
        assert len(states) >= 3, "the start was polled until the workstation ran"
        assert fake.workstations[("p-offload", "us-central1", "offload-dev-cluster", "offload-dev-config",
                                  "offload-dev-0")].state == "STATE_RUNNING"
        p = offload("status", "--json", "--outputs", str(out), cwd=repo, env=env)
        assert json.loads(p.stdout)["workers"][0]["state"] == "running", p.stderr


def test_the_developers_key_is_installed_once_through_gcloud_and_then_logs_in(start_sshd, tmp_path: Path) -> None:
    worker = start_sshd(authorized_keys=[])  # a new workstation: its sshd knows no key of ours
    home = tmp_path / "ws-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").symlink_to(worker.authorized_keys_path)
    with WorkstationsFake() as fake:
        out, env = _stopped_workstation(worker, tmp_path, fake)
        env.update(OFFLOAD_TEST_WS_HOME=str(home), OFFLOAD_PERSIST="0")
        repo = make_repo(tmp_path / "repo")
        p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "in", cwd=repo, env=env)
        assert (p.returncode, p.stdout) == (0, b"in\n"), p.stderr
        assert b"installing your SSH public key on workstation offload-dev-0 (once)" in p.stderr
        public = Path(f"{worker.key_path}.pub").read_text().split()[:2]
        assert worker.authorized_keys_path.read_text().split() == public
        calls = [json.loads(line) for line in (tmp_path / "tunnels").read_text().splitlines()]
        installs = [c for c in calls if c[:2] == ["workstations", "ssh"]]
        assert len(installs) == 1 and installs[0][-1] == "offload-dev-0" and "--user=" + worker.user in installs[0]
        assert not any(public[1] in arg for arg in installs[0]), "the key travels on stdin, not in the argv"
        p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "again", cwd=repo, env=env)
        assert (p.returncode, p.stdout) == (0, b"again\n"), p.stderr
        calls = [json.loads(line) for line in (tmp_path / "tunnels").read_text().splitlines()]
        assert len([c for c in calls if c[:2] == ["workstations", "ssh"]]) == 1, "installed once"
        assert worker.authorized_keys_path.read_text().split() == public, "and never twice"
