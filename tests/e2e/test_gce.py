"""GCE workers end to end: a real sshd + Docker worker stands in for the VM, the Compute API is the local fake."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from offload.runtime.hostkeys import KnownHosts, host_id
from tests.e2e.helpers import SSH_LIBRARIES, container_hostname, offload, stderr_line, top_modules_loaded
from tests.fakes.compute_api import ComputeFake
from tests.fakes.oslogin_api import OsLoginFake
from tests.workers import SshDockerWorker, make_repo, path_without, sshd_record, wait_for, write_outputs


def _b64(key_line: str) -> str:
    return key_line.split()[1]


@pytest.fixture
def gce(ssh_docker_worker: SshDockerWorker, compute_fake: ComputeFake, tmp_path: Path):
    ssh = ssh_docker_worker.ssh
    inst = compute_fake.add("offload-dev-0", status="RUNNING", host_keys={"ssh-ed25519": _b64(ssh.host_key)})
    record = sshd_record(ssh_docker_worker, name="offload-dev-0", instance="offload-dev-0", project="p",
                         zone="us-west1-a", host_keys=[], image=ssh_docker_worker.container.image)
    out = write_outputs(tmp_path / "outputs.json", "gce-cos", [record])
    repo = make_repo(tmp_path / "repo")
    return ssh_docker_worker, inst, out, repo


def test_stopped_instance_is_woken_through_the_compute_api(gce, compute_fake: ComputeFake) -> None:
    worker, inst, out, repo = gce
    ssh = worker.ssh
    inst.status = "TERMINATED"
    ssh.stop()

    def boot_when_started() -> None:
        wait_for(lambda: compute_fake.calls("POST", "instances/offload-dev-0/start"), timeout=60,
                 what="the start call")
        ssh.restart()

    booter = threading.Thread(target=boot_when_started, daemon=True)
    booter.start()
    p = offload("run", "--outputs", str(out), "--wait", "--", "sh", "-c", "echo woke in $(hostname)",
                cwd=repo, key=ssh.key_path)
    booter.join(timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == f"woke in {container_hostname(worker.container.name)}\n"
    assert len(compute_fake.calls("POST", "instances/offload-dev-0/start")) == 1
    assert inst.status == "RUNNING"
    assert b"first use" not in p.stderr, "GCE host keys come from guest attributes, not first use"
    known = KnownHosts.default().lookup(host_id(ssh.host, ssh.port))
    assert known == [ssh.host_key]


def test_running_instance_needs_no_api_call_once_keys_are_known(gce, compute_fake: ComputeFake) -> None:
    worker, inst, out, repo = gce
    ssh = worker.ssh
    assert offload("run", "--outputs", str(out), "--wait", "--", "true", cwd=repo, key=ssh.key_path).returncode == 0
    assert compute_fake.calls("GET", "instances/offload-dev-0/getGuestAttributes")
    compute_fake.requests.clear()
    before = ssh.accepted_count()
    p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "warm", cwd=repo, key=ssh.key_path)
    assert p.returncode == 0 and p.stdout == b"warm\n", p.stderr
    assert compute_fake.requests == []
    assert ssh.accepted_count() - before == 0, "the connection agent holds the connection of the first run"


def test_a_warm_command_loads_no_ssh_library_to_read_ssh_config(gce, isolated_home: Path) -> None:
    """Every dial of a GCE worker looks its host up in ~/.ssh/config (the name its keys are known by); with the
    agent up, the agent parses the file, and the command loads no SSH library."""
    worker, inst, out, repo = gce
    key = worker.ssh.key_path
    (isolated_home / ".ssh").mkdir(mode=0o700)
    (isolated_home / ".ssh" / "config").write_text("Host elsewhere\n    User someone\n")
    assert offload("run", "--outputs", str(out), "--job", "g1", "--wait", "--", "true", cwd=repo,
                   key=key).returncode == 0
    for args in (["check", "g1"], ["run", "--wait", "--", "true"]):
        loaded = top_modules_loaded(args[0], "--outputs", str(out), *args[1:], cwd=repo,
                                    env={"OFFLOAD_SSH_KEY": str(key)})
        assert "offload" in loaded and not loaded & SSH_LIBRARIES, args


def test_key_not_in_guest_attributes_is_refused(gce, compute_fake: ComputeFake) -> None:
    worker, inst, out, repo = gce
    inst.host_keys = {"ssh-ed25519": "AAAAC3NzaC1lZDI1NTE5AAAAIE9pOv8ZbVm7V0b1lHn2wVJkG1mL5C0jz3I9q9b6g4kQ"}
    p = offload("run", "--outputs", str(out), "--wait", "--", "true", cwd=repo, key=worker.ssh.key_path)
    assert p.returncode == 204, "4, moved out of the job's exit codes by --wait"
    assert "host key" in stderr_line(p)
    assert "does not match the host keys its instance publishes in its guest attributes" in stderr_line(p)


def test_status_reports_machine_and_cost_from_the_api(gce, compute_fake: ComputeFake) -> None:
    import json

    worker, inst, out, repo = gce
    assert offload("run", "--outputs", str(out), "--job", "s1", "--wait", "--", "true", cwd=repo,
                   key=worker.ssh.key_path).returncode == 0
    p = offload("status", "--json", "--outputs", str(out), cwd=repo, key=worker.ssh.key_path)
    assert p.returncode == 0, p.stderr
    w = json.loads(p.stdout)["workers"][0]
    assert w["state"] == "running" and w["machine_type"] == "e2-standard-4" and w["hourly_cost_usd"] > 0
    assert w["idle_stop_in_minutes"] is None, "nothing published yet"
    assert [j["id"] for j in w["jobs"]] == ["s1"]
    assert w["jobs"][0]["tasks"] == [{"name": "main", "state": "success", "exit_code": 0}]
    inst.attributes["offload"] = {"minutes-until-stop": "17"}
    p = offload("status", "--json", "--outputs", str(out), cwd=repo, key=worker.ssh.key_path)
    assert json.loads(p.stdout)["workers"][0]["idle_stop_in_minutes"] == 17
    inst.status = "TERMINATED"
    p = offload("status", "--json", "--outputs", str(out), cwd=repo, key=worker.ssh.key_path)
    assert json.loads(p.stdout)["workers"][0]["state"] == "stopped"


def test_pinned_keys_need_no_api_call(gce, compute_fake: ComputeFake, tmp_path: Path) -> None:
    worker, inst, out, repo = gce
    ssh = worker.ssh
    record = sshd_record(worker, name="offload-dev-0", instance="offload-dev-0", project="p", zone="us-west1-a")
    pinned = write_outputs(tmp_path / "pinned.json", "gce-cos", [record])
    p = offload("run", "--outputs", str(pinned), "--wait", "--", "echo", "pinned", cwd=repo, key=ssh.key_path)
    assert p.returncode == 0 and p.stdout == b"pinned\n", p.stderr
    assert compute_fake.requests == []


def test_unreachable_running_instance_falls_back_to_an_iap_tunnel(compute_fake: ComputeFake, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    compute_fake.add("offload-dev-0", status="RUNNING")
    out = write_outputs(tmp_path / "o.json", "gce-cos", [{
        "name": "offload-dev-0", "host": "127.0.0.1", "port": port, "user": "dev_example_com",
        "container": "offload-worker", "workspace": "/mnt/disks/data/offload", "instance": "offload-dev-0",
        "project": "p", "zone": "us-west1-a", "host_keys": [], "proxy_command": None}])
    repo = make_repo(tmp_path / "repo")
    # gcloud may be installed here: take it out of PATH, so the tunnel's failure is known.
    p = offload("run", "--outputs", str(out), "--", "true", cwd=repo,
                env={"PATH": path_without("gcloud", tmp_path / "path")})
    assert p.returncode == 3
    line = stderr_line(p)
    # Direct dialling failed, the instance is running, so the IAP tunnel was tried: gcloud's own command.
    assert "offload-dev-0" in line and "through `gcloud ...`: cannot run it" in line, line
    assert not compute_fake.calls("POST"), "a running instance is not started again"


def test_run_prefers_a_running_worker_and_wakes_one_only_when_none_runs(start_sshd, compute_fake: ComputeFake,
                                                                        tmp_path: Path) -> None:
    import json

    a, b = start_sshd(), start_sshd()
    records = []
    for name, worker in (("offload-dev-0", a), ("offload-dev-1", b)):
        compute_fake.add(name, status="TERMINATED" if name.endswith("0") else "RUNNING",
                         host_keys={"ssh-ed25519": _b64(worker.host_key)})
        records.append(sshd_record(worker, name=name, instance=name, project="p", zone="us-west1-a", host_keys=[]))
    out = write_outputs(tmp_path / "o.json", "gce-linux", records)
    repo = make_repo(tmp_path / "repo")
    p = offload("run", "--outputs", str(out), "--json", "--", "true", cwd=repo, key=a.key_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["worker"] == "offload-dev-1"
    assert not compute_fake.calls("POST")

    compute_fake.instances[("p", "us-west1-a", "offload-dev-1")].status = "TERMINATED"
    b.stop()
    p = offload("run", "--outputs", str(out), "--json", "--", "true", cwd=repo, key=a.key_path)
    assert p.returncode == 0, p.stderr
    woken = json.loads(p.stdout)["worker"]
    assert [c.target for c in compute_fake.calls("POST")] == [f"instances/{woken}/start"]
    assert woken == "offload-dev-0", "the first stopped worker is woken; it answers on its address"


@pytest.mark.parametrize("command", [["logs", "some-job"], ["check", "some-job"], ["clean", "some-job"],
                                     ["clean", "--all", "--yes"], ["status"],
                                     ["pull", "some-job"], ["diff", "some-job"], ["apply", "some-job"],
                                     ["get", "some-job", "out.txt"]])
def test_reading_never_wakes_a_stopped_worker(compute_fake: ComputeFake, tmp_path: Path, command: list[str]) -> None:
    import socket

    records = []
    for name in ("offload-dev-0", "offload-dev-1"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        compute_fake.add(name, status="TERMINATED")
        records.append({"name": name, "host": "127.0.0.1", "port": port, "user": "dev_example_com",
                        "container": "offload-worker", "workspace": "/mnt/disks/data/offload", "instance": name,
                        "project": "p", "zone": "us-west1-a", "host_keys": [], "proxy_command": None})
    out = write_outputs(tmp_path / "o.json", "gce-cos", records)
    repo = make_repo(tmp_path / "repo")
    p = offload(*command, "--outputs", str(out), cwd=repo)
    assert p.returncode == (0 if command == ["status"] else 1 if command[1] == "--all" else 5), p.stderr
    assert not compute_fake.calls("POST"), "a read started a worker"
    if command[0] == "status":
        states = {w["name"]: w["state"] for w in json.loads(offload("status", "--json", "--outputs", str(out),
                                                                    cwd=repo).stdout)["workers"]}
        assert states == {"offload-dev-0": "stopped", "offload-dev-1": "stopped"}
    else:
        assert "offload-dev-0 is stopped" in p.stderr.decode(), p.stderr


def test_the_first_login_registers_the_key_with_os_login_and_uses_the_profiles_name(
        gce, compute_fake: ComputeFake, oslogin_fake: OsLoginFake, tmp_path: Path) -> None:
    worker, inst, _, repo = gce
    ssh = worker.ssh
    # The outputs can only guess the name; OS Login gave this developer another (an external account's ext_).
    # On the host (gce-linux): a COS login under a name the boot did not put in the docker group runs docker
    # through sudo, which this test host's user may not.
    record = sshd_record(worker, name="offload-dev-0", instance="offload-dev-0", project="p", zone="us-west1-a",
                         user="ext_guess_is_wrong", container=None, workspace=f"{ssh.workspace}/host")
    out = write_outputs(tmp_path / "guess.json", "gce-linux", [record], developer="dev@partner.example")
    user = oslogin_fake.add("dev@partner.example", ssh.user)
    p = offload("run", "--outputs", str(out), "--wait", "--", "id", "-un", cwd=repo, key=ssh.key_path,
                env={"OFFLOAD_PERSIST": "0"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().strip() == ssh.user
    # The key offered is the one registered, with the project, so OS Login makes the POSIX account.
    (imported,) = oslogin_fake.calls("POST")
    assert imported.query["projectId"] == "p"
    assert imported.body["key"] == " ".join(ssh_public_key(ssh.key_path).split()[:2])
    assert list(user.keys.values()) == [imported.body["key"]]
    # The next command logs in as the remembered name at once: no OS Login call, no refused login.
    oslogin_fake.requests.clear()
    p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "again", cwd=repo, key=ssh.key_path,
                env={"OFFLOAD_PERSIST": "0"})
    assert p.returncode == 0 and p.stdout == b"again\n", p.stderr
    assert oslogin_fake.requests == []


def test_a_refused_os_login_lookup_is_one_line_that_says_what_to_do(
        gce, compute_fake: ComputeFake, oslogin_fake: OsLoginFake, tmp_path: Path) -> None:
    worker, inst, _, repo = gce
    record = sshd_record(worker, name="offload-dev-0", instance="offload-dev-0", project="p", zone="us-west1-a",
                         user="nobody_here")
    out = write_outputs(tmp_path / "o.json", "gce-cos", [record], developer="someone@example.com")
    p = offload("run", "--outputs", str(out), "--wait", "--", "true", cwd=repo, key=worker.ssh.key_path,
                env={"OFFLOAD_PERSIST": "0"})
    assert p.returncode != 0
    line = stderr_line(p)
    assert "OS Login profile of someone@example.com" in line and "gcloud auth application-default login" in line


def ssh_public_key(private: Path) -> str:
    pub = Path(f"{private}.pub")
    if pub.is_file():
        return pub.read_text()
    import paramiko

    key = paramiko.PKey.from_path(private)
    return f"{key.get_name()} {key.get_base64()}"
