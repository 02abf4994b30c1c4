"""`offload doctor`: a fresh GCP project against the API fakes shows each ✗ with its fix and a ready one is all ✓;
real sshd workers show a wrong pinned key, a refused login and a read-only workspace as one ✗ each."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from offload.deploy import BOOTSTRAP_APIS, DEPLOY_ROLES, DEVELOPER_INSTANCE_PERMISSIONS, GCE_APIS, TUNNEL_PERMISSION
from offload.errors import AUTH_HINT
from tests.cli.conftest import RunCli
from tests.conftest import StartSshd
from tests.fakes.compute_api import ComputeFake
from tests.fakes.oslogin_api import OsLoginFake, oslogin_fake  # noqa: F401  (a fixture)
from tests.fakes.project_api import ProjectApiFake, project_api_fake  # noqa: F401  (a fixture)
from tests.fakes.pulumi_cli import fake_pulumi_on_path
from tests.workers import SshDockerWorker, SshdWorker, generate_keypair, run, sshd_record, write_outputs

REPO = Path(__file__).resolve().parents[2]
STEP_0 = "gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com --project p"
STACK = """\
config:
  offload:provider: gce-cos
  offload:developer: dev@example.com
  gcp:project: p
  gcp:zone: us-west1-a
"""
DEPLOY_PERMISSIONS = {p for r in DEPLOY_ROLES if not r.workstation_only for p in r.permissions}
# What a new project's quotas leave for one e2-standard-4 worker (4 vCPUs, 130 GB of pd-balanced).
ROOMY = {("CPUS", "us-west1"): (24, 0), ("SSD_TOTAL_GB", "us-west1"): (500, 0),
         ("IN_USE_ADDRESSES", "us-west1"): (8, 0), ("CPUS_ALL_REGIONS", None): (32, 0),
         ("NETWORKS", None): (15, 1), ("FIREWALLS", None): (100, 4)}


def _lines(stdout: str) -> list[str]:
    return stdout.splitlines()


def _by_name(stdout: str) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


@pytest.fixture
def gcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path, project_api_fake: ProjectApiFake,
        compute_fake: ComputeFake) -> tuple[ProjectApiFake, ComputeFake]:
    """A developer's machine before `fleet up`: gcloud with an account, a pulumi CLI, the stack file `dev`, and
    the project and compute fakes (the project `p` still to be added by the test)."""
    gcloud = tmp_path / "gcloud"
    (gcloud / "configurations").mkdir(parents=True)
    (gcloud / "active_config").write_text("default")
    (gcloud / "configurations" / "config_default").write_text("[core]\naccount = dev@example.com\nproject = p\n")
    # `gcloud auth login` keeps the account's credentials in this database of gcloud's config directory.
    with sqlite3.connect(gcloud / "credentials.db") as db:
        db.execute("CREATE TABLE credentials (account_id TEXT PRIMARY KEY, value BLOB)")
        db.execute("INSERT INTO credentials VALUES (?, ?)", ("dev@example.com", json.dumps(
            {"type": "authorized_user", "client_id": "id.apps.googleusercontent.com", "client_secret": "s",
             "refresh_token": "r"})))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(gcloud))
    stacks = isolated_home / ".config" / "offload" / "stacks"
    stacks.mkdir(parents=True)
    (stacks / "Pulumi.dev.yaml").write_text(STACK)
    pulumi = tmp_path / "pulumi"
    pulumi.mkdir()
    fake_pulumi_on_path(pulumi, monkeypatch)
    return project_api_fake, compute_fake


def _adc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quota_project: str | None) -> None:
    """User Application Default Credentials as `gcloud auth application-default login` writes them."""
    data = {"type": "authorized_user", "client_id": "id.apps.googleusercontent.com", "client_secret": "s",
            "refresh_token": "r"}
    if quota_project:
        data["quota_project_id"] = quota_project
    path = tmp_path / "adc.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))


def _quotas(compute: ComputeFake, **override: tuple[float, float]) -> None:
    for (metric, region), (limit, usage) in ROOMY.items():
        limit, usage = override.get(metric, (limit, usage))
        compute.quota(metric, limit, usage, region=region)


def test_a_fresh_project_shows_step_0_and_the_quota_project_with_their_fixes(
        cli: RunCli, gcp: tuple[ProjectApiFake, ComputeFake], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    projects, compute = gcp
    projects.add("p")  # Service Usage on, Resource Manager off, nothing else: a new project
    compute.disable("p")
    _adc(tmp_path, monkeypatch, quota_project=None)
    r = cli("doctor", "--stack", "dev")
    assert (r.exit_code, r.stderr) == (1, "")
    lines = _lines(r.stdout)
    assert lines[0] == "✓ gcloud: /usr/bin/gcloud, logged in as dev@example.com"
    assert lines[1] == "✓ iap tunnel: gcloud compute start-iap-tunnel is installed"
    assert lines[2].startswith("✓ pulumi: ")
    assert lines[3] == "✓ gcp libraries: the Google clients, pulumi and pulumi_gcp are installed"
    assert lines[4:] == [
        "✗ credentials: Application Default Credentials (user) have no quota project",
        "    gcloud auth application-default set-quota-project p",
        "✗ step 0: off in p: cloudresourcemanager.googleapis.com (`pulumi up` needs them on first)",
        f"    {STEP_0}",
        "✗ project: cannot read p: cloudresourcemanager.googleapis.com is off",
        f"    {STEP_0}",
        "3 of 7 checks failed",
    ]


def test_step_0_names_the_quota_project_too_when_it_is_another(
        cli: RunCli, gcp: tuple[ProjectApiFake, ComputeFake], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    projects, _ = gcp
    projects.add("p")
    _adc(tmp_path, monkeypatch, quota_project="billing-q")
    checks = _by_name(cli("doctor", "--stack", "dev", "--json").stdout)
    assert checks["credentials"]["detail"] == "Application Default Credentials (user, quota project billing-q)"
    assert checks["step 0"]["fix"] == f"{STEP_0}\n{STEP_0.replace('--project p', '--project billing-q')}"


def test_after_step_0_the_missing_roles_and_a_short_quota_each_give_their_fix(
        cli: RunCli, gcp: tuple[ProjectApiFake, ComputeFake], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    projects, compute = gcp
    held = DEPLOY_PERMISSIONS - {"iam.roles.create", "iap.tunnelInstances.setIamPolicy"}
    projects.add("p", enabled={*BOOTSTRAP_APIS, "compute.googleapis.com"}, permissions=held)
    _quotas(compute, CPUS_ALL_REGIONS=(12, 10))
    _adc(tmp_path, monkeypatch, quota_project="p")
    r = cli("doctor", "--stack", "dev")
    assert (r.exit_code, r.stderr) == (1, "")
    lines = _lines(r.stdout)
    assert "✓ step 0: serviceusage.googleapis.com and cloudresourcemanager.googleapis.com are on" in lines
    assert "✓ project: p is ACTIVE" in lines
    assert "✓ apis: off now, and enabled by `fleet up`: iam, iap, oslogin, logging, monitoring" in lines
    at = lines.index("✗ deploy permissions: dev@example.com lack roles/iam.roleAdmin (iam.roles.create); "
                     "roles/iap.admin (iap.tunnelInstances.setIamPolicy)")
    assert lines[at + 1:at + 3] == [
        "    gcloud projects add-iam-policy-binding p --member user:dev@example.com --role roles/iam.roleAdmin",
        "    gcloud projects add-iam-policy-binding p --member user:dev@example.com --role roles/iap.admin"]
    at = lines.index("✗ quota CPUS_ALL_REGIONS: needs 4, 2 of 12 left")
    assert lines[at + 1].startswith("    ask for more CPUS_ALL_REGIONS: https://console.cloud.google.com/iam-admin/"
                                    "quotas?project=p")
    assert "✓ quota CPUS: needs 4 in us-west1, 24 of 24 left" in lines
    assert "✓ quota SSD_TOTAL_GB: needs 130 in us-west1, 500 of 500 left" in lines
    assert [line[2:].split(":")[0] for line in lines if line.startswith("✗")] == [
        "deploy permissions", "quota CPUS_ALL_REGIONS"]
    asked = projects.calls("POST")[0].body["permissions"]
    assert set(asked) == DEPLOY_PERMISSIONS  # a gce-cos stack is not asked for the workstation roles


def test_quotas_need_the_compute_api_and_say_how_to_turn_it_on(
        cli: RunCli, gcp: tuple[ProjectApiFake, ComputeFake], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    projects, compute = gcp
    projects.add("p", enabled=set(BOOTSTRAP_APIS), permissions=DEPLOY_PERMISSIONS)
    compute.disable("p")
    _adc(tmp_path, monkeypatch, quota_project="p")
    r = cli("doctor", "--stack", "dev", "--json")
    assert r.exit_code == 1
    checks = _by_name(r.stdout)
    assert checks["quotas"] == {
        "name": "quotas", "ok": False, "detail": "cannot read quotas: compute.googleapis.com is off in p",
        "fix": "gcloud services enable compute.googleapis.com --project p (or `offload fleet up` enables it; quotas "
               "are then checked)"}
    assert [n for n, c in checks.items() if not c["ok"]] == ["quotas"]


def test_a_ready_project_is_all_green_in_text_and_json(
        cli: RunCli, gcp: tuple[ProjectApiFake, ComputeFake], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    projects, compute = gcp
    projects.add("p", enabled={*BOOTSTRAP_APIS, *GCE_APIS}, permissions=DEPLOY_PERMISSIONS)
    _quotas(compute)
    _adc(tmp_path, monkeypatch, quota_project="p")
    r = cli("doctor", "--stack", "dev")
    assert (r.exit_code, r.stderr) == (0, ""), r.stdout
    lines = _lines(r.stdout)
    assert all(line.startswith("✓ ") for line in lines[:-1]) and lines[-1] == "nothing blocks"
    assert "✓ apis: the stack's 6 APIs are on" in lines
    assert "✓ deploy permissions: dev@example.com may deploy: 7 roles' permissions held" in lines
    assert lines[-2] == ("✓ workers: not deployed yet (cannot read stack 'dev': error: no stack named 'dev' found); "
                         "after `offload fleet up --stack dev` doctor checks them too")
    names = [line[2:].split(":")[0] for line in lines[:-1]]
    assert names == ["gcloud", "iap tunnel", "pulumi", "gcp libraries", "credentials", "step 0", "project", "apis",
                     "deploy permissions", "quota CPUS", "quota CPUS_ALL_REGIONS", "quota SSD_TOTAL_GB",
                     "quota NETWORKS", "quota IN_USE_ADDRESSES", "quota FIREWALLS", "workers"]

    j = cli("doctor", "--stack", "dev", "--json")
    assert (j.exit_code, j.stderr) == (0, "")
    data = json.loads(j.stdout)
    assert list(data) == ["checks"]
    assert [c["name"] for c in data["checks"]] == names
    for c in data["checks"]:
        assert list(c) == ["name", "ok", "detail", "fix"] and c["ok"] is True and c["fix"] is None


def test_a_gcloud_account_without_credentials_is_not_logged_in(
        cli: RunCli, gcp: tuple[ProjectApiFake, ComputeFake], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    projects, _ = gcp
    projects.add("p")
    (tmp_path / "gcloud" / "credentials.db").unlink()
    _adc(tmp_path, monkeypatch, quota_project="p")
    checks = _by_name(cli("doctor", "--stack", "dev", "--json").stdout)
    assert checks["gcloud"] == {"name": "gcloud", "ok": False, "fix": "gcloud auth login",
                                "detail": "/usr/bin/gcloud: account dev@example.com has no credentials here"}


def test_without_the_gcp_extra_doctor_names_it_and_asks_no_api(
        cli: RunCli, gcp: tuple[ProjectApiFake, ComputeFake], monkeypatch: pytest.MonkeyPatch) -> None:
    projects, _ = gcp
    projects.add("p")
    monkeypatch.setitem(sys.modules, "pulumi_gcp", None)  # as if `pip install offload` left it out
    r = cli("doctor", "--stack", "dev")
    assert r.exit_code == 1
    assert _lines(r.stdout)[-3:] == ["✗ gcp libraries: not installed: pulumi_gcp", "    pip install 'offload[gcp]'",
                                     "1 of 4 checks failed"]
    assert not projects.calls()


def test_without_gcloud_and_credentials_doctor_says_how_to_get_them(
        cli: RunCli, gcp: tuple[ProjectApiFake, ComputeFake], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    projects, _ = gcp
    projects.add("p")
    bin_dir = tmp_path / "pulumi" / "bin"  # the pulumi stand-in alone (/bin is /usr/bin here, with gcloud)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    r = cli("doctor", "--stack", "dev", "--json")
    checks = _by_name(r.stdout)
    assert r.exit_code == 1
    assert checks["gcloud"]["ok"] is False
    assert checks["gcloud"]["fix"] == "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
    assert checks["credentials"]["ok"] is False
    assert checks["credentials"]["fix"] == "gcloud auth application-default login"


# -- a deployed GCE worker, through the Compute and OS Login fakes ------------------------------------------------


def _gce_outputs(tmp_path: Path) -> Path:
    return write_outputs(tmp_path / "gce.json", "gce-cos", [{
        "name": "offload-dev-0", "host": "10.10.0.2", "port": 22, "user": "dev_example_com",
        "container": "offload-worker", "workspace": "/mnt/disks/data/offload", "instance": "offload-dev-0",
        "project": "p", "zone": "us-west1-a", "host_keys": [], "proxy_command": None}])


def test_a_deployed_worker_without_its_grants_or_host_keys(cli: RunCli, compute_fake: ComputeFake,
                                                             oslogin_fake: OsLoginFake,
                                                             project_api_fake: ProjectApiFake, tmp_path: Path) -> None:
    oslogin_fake.add("dev@example.com", "ext_dev_example_com", has_account=True)
    # The tunnel is granted on IAP's resource for the instance, not on the instance: it is tested there.
    project = project_api_fake.add("p", tunnel={})
    instance = compute_fake.add("offload-dev-0", status="TERMINATED",
                                permissions=set(DEVELOPER_INSTANCE_PERMISSIONS) - {"compute.instances.start"})
    r = cli("doctor", "--outputs", str(_gce_outputs(tmp_path)))
    assert (r.exit_code, r.stderr) == (1, "")
    assert _lines(r.stdout) == [
        f"✗ offload-dev-0: permissions: you lack compute.instances.start, {TUNNEL_PERMISSION} on offload-dev-0",
        "    `offload fleet up` grants them to dev@example.com; run `gcloud auth application-default login` as "
        "dev@example.com",
        "✓ offload-dev-0: instance: offload-dev-0 is stopped; `offload run` wakes it",
        "✓ offload-dev-0: os login: dev@example.com logs in as ext_dev_example_com",
        "1 of 3 checks failed"]

    instance.permissions = None  # every permission held
    project.tunnel["offload-dev-0"] = {TUNNEL_PERMISSION}
    r = cli("doctor", "--outputs", str(_gce_outputs(tmp_path)))
    # Stopped: doctor reports it and wakes nothing.
    assert (r.exit_code, _lines(r.stdout)) == (0, [
        f"✓ offload-dev-0: permissions: you hold the {len(DEVELOPER_INSTANCE_PERMISSIONS) + 1} permissions offload "
        "uses on offload-dev-0",
        "✓ offload-dev-0: instance: offload-dev-0 is stopped; `offload run` wakes it",
        "✓ offload-dev-0: os login: dev@example.com logs in as ext_dev_example_com",
        "nothing blocks"])
    assert not compute_fake.calls("POST", "instances/offload-dev-0/start")

    instance.status = "RUNNING"  # running, but its guest has published no host keys
    r = cli("doctor", "--outputs", str(_gce_outputs(tmp_path)))
    assert r.exit_code == 1
    assert _lines(r.stdout)[-3:] == [
        "✗ offload-dev-0: host keys: offload-dev-0 has published no host keys in its guest attributes",
        "    wait for it to finish booting; if it stays so, `offload fleet up` (the stack turns guest attributes on)",
        "1 of 4 checks failed"]


# -- ssh workers: real sshd ------------------------------------------------------------------------------------


def _ssh_doctor(cli: RunCli, tmp_path: Path, worker: SshdWorker | SshDockerWorker,
                **record: object) -> tuple[int, list[str]]:
    outputs = write_outputs(tmp_path / "ssh.json", "ssh", [sshd_record(worker, name="box", **record)])
    r = cli("doctor", "--outputs", str(outputs))
    assert r.stderr == ""
    return r.exit_code, _lines(r.stdout)


def _failed(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("✗")]


def test_a_healthy_ssh_worker_is_all_green(cli: RunCli, sshd_worker: SshdWorker, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(sshd_worker.key_path))
    code, lines = _ssh_doctor(cli, tmp_path, sshd_worker)
    assert code == 0, lines
    assert [line.split(":")[1].strip() for line in lines[:-1]] == [
        "address", "tcp", "host key", "login", "workspace", "disk", "git", "tmux"]
    assert all(line.startswith("✓ box: ") for line in lines[:-1]) and lines[-1] == "nothing blocks"
    assert lines[0] == "✓ box: address: 127.0.0.1"
    assert lines[2].endswith("matches the pinned key")
    assert lines[3] == f"✓ box: login: logged in as {sshd_worker.user}"
    assert lines[4] == f"✓ box: workspace: {sshd_worker.workspace} is writable"
    assert lines[6].startswith("✓ box: git: git version ") and lines[7].startswith("✓ box: tmux: tmux ")


def test_a_wrong_pinned_key_is_one_failure_with_how_to_repin(cli: RunCli, sshd_worker: SshdWorker, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(sshd_worker.key_path))
    _, other = generate_keypair(tmp_path / "other_host_key")
    code, lines = _ssh_doctor(cli, tmp_path, sshd_worker, host_keys=[other])
    assert code == 1
    (failed,) = _failed(lines)
    assert failed.startswith("✗ box: host key: it presents ssh-ed25519 SHA256:")
    assert ", not the pinned SHA256:" in failed
    assert lines[lines.index(failed) + 1] == ("    if the host's key changed on purpose (ask its admin), pin the new "
                                              "one: update host_keys in the stack outputs")
    assert sshd_worker.accepted_count() == 0  # no login with a key that does not match


def test_a_refused_login_is_one_failure_with_the_identity_hint(cli: RunCli, sshd_worker: SshdWorker, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    stranger, _ = generate_keypair(tmp_path / "stranger")
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(stranger))
    code, lines = _ssh_doctor(cli, tmp_path, sshd_worker)
    assert code == 1
    (failed,) = _failed(lines)
    assert failed.startswith("✗ box: login: ")
    assert lines[lines.index(failed) + 1] == f"    {AUTH_HINT}"
    assert lines[-1] == "1 of 4 checks failed"


def test_a_read_only_workspace_is_one_failure_with_its_fix(cli: RunCli, sshd_worker: SshdWorker, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(sshd_worker.key_path))
    os.chmod(sshd_worker.workspace, 0o555)
    try:
        code, lines = _ssh_doctor(cli, tmp_path, sshd_worker)
    finally:
        os.chmod(sshd_worker.workspace, 0o755)
    assert code == 1
    (failed,) = _failed(lines)
    assert failed == f"✗ box: workspace: {sshd_worker.workspace} is not writable by {sshd_worker.user}"
    assert lines[lines.index(failed) + 1] == (
        f"    make {sshd_worker.workspace} writable by {sshd_worker.user} there (`chmod u+w {sshd_worker.workspace}` "
        "as its owner), or set `workspace` in the stack's offload:hosts to a directory it may write")


def test_each_worker_is_checked_and_reported_in_order_whatever_the_others_do(
        cli: RunCli, start_sshd: StartSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = start_sshd(), start_sshd()
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(first.key_path))
    second.stop()  # its port now refuses
    outputs = write_outputs(tmp_path / "two.json", "ssh", [sshd_record(first, name="a"),
                                                             sshd_record(second, name="b")])
    r = cli("doctor", "--outputs", str(outputs))
    assert (r.exit_code, r.stderr) == (1, "")
    lines = _lines(r.stdout)
    names = [line[2:].split(":")[0] for line in lines if line[:1] in "✓✗"]
    assert names == ["a"] * 8 + ["b"] * 2
    assert _failed(lines) == [f"✗ b: tcp: 127.0.0.1:{second.port} does not answer: Connection refused"]


def test_a_closed_port_on_an_ssh_stack_and_no_google_or_pulumi_loaded(tmp_path: Path,
                                                                      isolated_home: Path) -> None:
    stacks = isolated_home / ".config" / "offload" / "stacks"
    stacks.mkdir(parents=True)
    (stacks / "Pulumi.box.yaml").write_text(
        "config:\n  offload:provider: ssh\n  offload:hosts:\n    - {name: box, host: 127.0.0.1, port: 1, "
        "user: nobody, "
        "workspace: /tmp/offload}\n")
    probe = ("import sys\nfrom offload.cli.app import main\ntry:\n    main(['doctor', '--stack', 'box'])\n"
             "except SystemExit as e:\n    code = e.code\n"
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pulumi_gcp') or "
             "m.startswith('google.'))\nprint('exit', code, 'heavy', heavy)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ})
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "✓ box: address: 127.0.0.1"
    assert lines[1].startswith("✗ box: tcp: 127.0.0.1:1 does not answer: Connection refused")
    assert lines[2] == "    start sshd on 127.0.0.1, or check the port (1) and the firewalls between"
    assert lines[-1] == "exit 1 heavy []"


def test_a_deployed_worker_that_answers_is_all_green_and_says_how_it_was_reached(
        cli: RunCli, sshd_worker: SshdWorker, compute_fake: ComputeFake, oslogin_fake: OsLoginFake,
        project_api_fake: ProjectApiFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real sshd stands in for the VM, reached on its "internal address" directly.
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(sshd_worker.key_path))
    project_api_fake.add("p", tunnel={"offload-dev-0": {TUNNEL_PERMISSION}})
    oslogin_fake.add("dev@example.com", sshd_worker.user, has_account=True)
    compute_fake.add("offload-dev-0", status="RUNNING",
                     host_keys={"ssh-ed25519": sshd_worker.host_key.split()[1]})
    outputs = write_outputs(tmp_path / "gce.json", "gce-linux", [sshd_record(
        sshd_worker, name="offload-dev-0", instance="offload-dev-0", project="p", zone="us-west1-a", host_keys=[])])
    r = cli("doctor", "--outputs", str(outputs))
    assert (r.exit_code, r.stderr) == (0, ""), r.stdout
    lines = _lines(r.stdout)
    assert [line.split(":")[1].strip() for line in lines[:-1]] == [
        "permissions", "instance", "os login", "host keys", "login", "workspace", "disk", "git", "tmux"]
    assert "✓ offload-dev-0: host keys: 1 published in guest attributes" in lines
    assert f"✓ offload-dev-0: login: logged in as {sshd_worker.user} directly" in lines
    assert lines[-1] == "nothing blocks"


def test_a_container_worker_shows_docker_and_the_tools_inside_and_a_stopped_container(
        cli: RunCli, ssh_docker_worker: SshDockerWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ssh, container = ssh_docker_worker.ssh, ssh_docker_worker.container
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(ssh.key_path))
    code, lines = _ssh_doctor(cli, tmp_path, ssh_docker_worker)
    assert code == 0, lines
    docker = next(line for line in lines if line.startswith("✓ box: docker: "))
    assert docker.startswith("✓ box: docker: Docker version ") and docker.endswith(
        f"; container {container.name} is running")
    assert [line.split(":")[1].strip() for line in lines[-3:-1]] == ["git", "tmux"]

    run(["docker", "stop", container.name], timeout=60)
    code, lines = _ssh_doctor(cli, tmp_path, ssh_docker_worker)
    assert code == 1
    (failed,) = _failed(lines)
    assert failed.endswith(f"; container {container.name} is not running")
    assert lines[lines.index(failed) + 1] == "    `offload run` starts it (or recreates it from the stack's image)"
    assert lines[-1] == "1 of 7 checks failed"  # no git or tmux looked for in a container that is not there


def test_what_a_worker_answered_reaches_the_terminal_without_its_control_characters(
        cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import offload.cli.doctor as doctor_cli
    from offload.jobs.doctor import Check

    hostile = "git version 2\x1b]52;c;ZWNobyBoaQ==\x07\x1b[2J"  # would set the clipboard and clear the screen
    monkeypatch.setattr(doctor_cli, "_checks", lambda *a: [Check("box: git", False, hostile, "fix\x1b[1m it")])
    r = cli("doctor", "--outputs", str(tmp_path / "unused.json"))
    assert r.exit_code == 1 and "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert _lines(r.stdout)[:2] == ["✗ box: git: git version 2\\x1b]52;c;ZWNobyBoaQ==\\x07\\x1b[2J", "    fix\\x1b[1m it"]
    assert json.loads(cli("doctor", "--json", "--outputs", str(tmp_path / "unused.json")).stdout)["checks"][0][
        "detail"] == hostile  # JSON escapes it itself, and keeps what was seen
