"""`offload fleet`: stop, start and list against the Compute API fake; up, preview and destroy need pulumi."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import RunCli
from tests.fakes.compute_api import ComputeFake
from tests.workers import DockerWorker, docker_record, write_outputs

PROJECT = "offload-test-1"
ZONE = "us-west1-a"


def _gce_worker(name: str, ip: str, **extra: object) -> dict[str, object]:
    return {"name": name, "host": ip, "port": 22, "user": "dev_example_com", "container": "offload-worker",
            "workspace": "/mnt/disks/data/offload", "instance": name, "project": PROJECT, "zone": ZONE,
            "host_keys": [], "proxy_command": None, **extra}


@pytest.fixture
def gce_outputs(tmp_path: Path, compute_fake: ComputeFake) -> Path:
    # One read per transition: the polling itself is covered in tests/providers.
    compute_fake.transition_gets = 0
    compute_fake.add("offload-dev-0", project=PROJECT, zone=ZONE, machine_type="e2-standard-4",
                     network_ip="10.10.0.2")
    compute_fake.add("offload-dev-1", project=PROJECT, zone=ZONE, machine_type="n2-standard-8",
                     network_ip="10.10.0.3", status="TERMINATED")
    return write_outputs(tmp_path / "outputs.json", "gce-cos",
                         [_gce_worker("offload-dev-0", "10.10.0.2"), _gce_worker("offload-dev-1", "10.10.0.3")])


def _status(fake: ComputeFake, name: str) -> str:
    return fake.instances[(PROJECT, ZONE, name)].status


def test_list_json_shows_live_state_machine_type_and_cost(cli: RunCli, gce_outputs: Path) -> None:
    r = cli("fleet", "list", "--outputs", str(gce_outputs), "--json")
    assert (r.exit_code, r.stderr) == (0, "")
    data = json.loads(r.stdout)
    assert data["provider"] == "gce-cos"
    assert [(w["name"], w["provider"], w["state"], w["machine_type"], w["hourly_cost_usd"], w["error"])
            for w in data["workers"]] == [
        ("offload-dev-0", "gce-cos", "running", "e2-standard-4", 0.134012, None),
        ("offload-dev-1", "gce-cos", "stopped", "n2-standard-8", 0.388472, None),
    ]


def test_list_as_a_table_when_piped(cli: RunCli, gce_outputs: Path) -> None:
    r = cli("fleet", "list", "--outputs", str(gce_outputs), "--worker", "offload-dev-1")
    assert r.exit_code == 0
    assert r.stdout == "offload-dev-1\tgce-cos\tstopped\tn2-standard-8\t0.3885\n"


def test_stop_stops_every_worker(cli: RunCli, gce_outputs: Path, compute_fake: ComputeFake) -> None:
    r = cli("fleet", "stop", "--outputs", str(gce_outputs))
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == "offload-dev-0: stopped\noffload-dev-1: stopped\n"
    assert _status(compute_fake, "offload-dev-0") == "TERMINATED"
    # The already stopped one needs no call.
    assert [c.target for c in compute_fake.calls("POST")] == ["instances/offload-dev-0/stop"]


def test_workers_are_handled_concurrently(cli: RunCli, compute_fake: ComputeFake, tmp_path: Path) -> None:
    compute_fake.transition_gets = 0
    names = [f"offload-dev-{i}" for i in range(4)]
    for i, name in enumerate(names):
        compute_fake.add(name, project=PROJECT, zone=ZONE, status="TERMINATED")
    outputs = write_outputs(tmp_path / "four.json", "gce-cos", [_gce_worker(n, f"10.10.0.{i + 2}")
                                                               for i, n in enumerate(names)])
    compute_fake.delay = 0.05
    r = cli("fleet", "start", "--outputs", str(outputs))
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "".join(f"{n}: running\n" for n in names), "results are reported in worker order"
    assert compute_fake.peak_in_flight >= 2


def test_start_one_worker(cli: RunCli, gce_outputs: Path, compute_fake: ComputeFake) -> None:
    r = cli("fleet", "start", "--outputs", str(gce_outputs), "--worker", "offload-dev-1")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "offload-dev-1: running\n", "")
    assert _status(compute_fake, "offload-dev-1") == "RUNNING"
    assert [c.target for c in compute_fake.calls("POST")] == ["instances/offload-dev-1/start"]


def test_each_worker_failure_is_reported_and_the_others_proceed(cli: RunCli, gce_outputs: Path,
                                                                compute_fake: ComputeFake, tmp_path: Path) -> None:
    outputs = write_outputs(tmp_path / "three.json", "gce-cos", [
        _gce_worker("offload-dev-0", "10.10.0.2"), _gce_worker("offload-dev-9", "10.10.0.9")])
    r = cli("fleet", "stop", "--outputs", str(outputs))
    assert r.exit_code == 1
    assert r.stdout == "offload-dev-0: stopped\n"
    assert r.stderr.splitlines() == [
        f"offload: offload-dev-9: cannot read offload-dev-9: not found in project {PROJECT} zone {ZONE} "
        "(check the stack outputs, or run `offload fleet up`)",
        "offload: could not stop 1 of 2 workers",
    ]


def test_a_single_worker_failure_is_one_line(cli: RunCli, gce_outputs: Path, compute_fake: ComputeFake) -> None:
    compute_fake.fail("POST", "/instances/offload-dev-1/start", 403, "Required 'compute.instances.start' permission")
    r = cli("fleet", "start", "--outputs", str(gce_outputs), "-w", "offload-dev-1")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("offload: cannot start offload-dev-1: permission denied")


def test_list_reports_an_api_failure_per_worker(cli: RunCli, gce_outputs: Path, compute_fake: ComputeFake) -> None:
    compute_fake.fail("GET", "/instances/offload-dev-0", 403, "Required 'compute.instances.get' permission")
    r = cli("fleet", "list", "--outputs", str(gce_outputs), "--json")
    assert r.exit_code == 1
    states = {w["name"]: w["state"] for w in json.loads(r.stdout)["workers"]}
    assert states == {"offload-dev-0": "unknown", "offload-dev-1": "stopped"}
    assert r.stderr.startswith("offload: offload-dev-0: cannot read offload-dev-0: permission denied")


def test_stop_and_start_apply_to_gce_workers_only(cli: RunCli, tmp_path: Path) -> None:
    outputs = write_outputs(tmp_path / "ssh.json", "ssh", [
        {"name": "box", "host": "10.0.0.5", "port": 22, "user": "dev", "workspace": "/srv/offload"}])
    for verb in ("stop", "start"):
        r = cli("fleet", verb, "--outputs", str(outputs))
        assert (r.exit_code, r.stdout) == (2, "")
        assert r.stderr == (f"offload: fleet {verb} applies to GCE workers and workstations (gce-cos, gce-linux, "
                            "workstation) only; this stack's provider is ssh\n")
    r = cli("fleet", "stop")
    assert r.exit_code == 2 and "provider is local (pass --stack NAME or --outputs FILE)" in r.stderr


def test_list_of_providers_without_a_cloud_api_does_not_connect(cli: RunCli, tmp_path: Path) -> None:
    # 192.0.2.0/24 is reserved for documentation: a connection attempt would hang until its timeout.
    outputs = write_outputs(tmp_path / "ssh.json", "ssh", [
        {"name": "box", "host": "192.0.2.10", "port": 22, "user": "dev", "workspace": "/srv/offload",
         "machine_type": "e2-standard-2"}])
    r = cli("fleet", "list", "--outputs", str(outputs), "--json")
    assert (r.exit_code, r.stderr) == (0, "")
    [row] = json.loads(r.stdout)["workers"]
    assert (row["name"], row["provider"], row["machine_type"], row["error"]) == ("box", "ssh", "e2-standard-2", None)
    local = cli("fleet", "list", "--json")
    assert [(w["name"], w["state"]) for w in json.loads(local.stdout)["workers"]] == [("local", "running")]


def test_list_local_docker_asks_docker(cli: RunCli, docker_worker: DockerWorker, tmp_path: Path) -> None:
    outputs = write_outputs(tmp_path / "docker.json", "local-docker", [
        docker_record(docker_worker), docker_record(docker_worker, name="gone", container="offload-gone-0")])
    r = cli("fleet", "list", "--outputs", str(outputs), "--json")
    assert r.exit_code == 0, r.stderr
    assert [(w["name"], w["state"]) for w in json.loads(r.stdout)["workers"]] == [
        (docker_worker.name, "running"), ("gone", "missing")]


@pytest.mark.parametrize("verb", ["up", "preview", "destroy"])
def test_pulumi_commands_without_the_pulumi_cli(cli: RunCli, verb: str, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("OFFLOAD_PROJECT_DIR", str(tmp_path))
    r = cli("fleet", verb, "--stack", "dev")
    assert (r.exit_code, r.stdout) == (6, "")
    what = {"up": "deploy", "preview": "preview", "destroy": "destroy"}[verb]
    assert r.stderr == (f"offload: cannot {what} stack 'dev': the pulumi CLI is not installed "
                        "(install the Pulumi CLI: https://www.pulumi.com/docs/install/)\n")


def test_a_named_stack_without_the_pulumi_cli(cli: RunCli, monkeypatch: pytest.MonkeyPatch,
                                              isolated_home: Path) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    stacks = isolated_home / ".config" / "offload" / "stacks"
    r = cli("fleet", "list", "--stack", "dev")
    assert (r.exit_code, r.stderr) == (2, f"offload: cannot read stack 'dev': there is no stack file "
                                          f"{stacks}/Pulumi.dev.yaml (create it with `offload init --stack dev`, "
                                          "or pass --outputs FILE)\n")
    # A cloud stack's outputs come from its deployment, which only Pulumi can read.
    stacks.mkdir(parents=True)
    (stacks / "Pulumi.dev.yaml").write_text("config:\n  offload:provider: gce-cos\n  offload:developer: d@example.com\n"
                                            "  gcp:project: p-1\n  gcp:zone: us-west1-a\n")
    r = cli("fleet", "list", "--stack", "dev")
    assert (r.exit_code, r.stderr) == (6, "offload: cannot read stack 'dev': the pulumi CLI is not installed "
                                          "(install the Pulumi CLI (https://www.pulumi.com/docs/install/) or pass "
                                          "--outputs FILE)\n")


def test_pulumi_commands_need_a_stack(cli: RunCli) -> None:
    r = cli("fleet", "up")
    assert (r.exit_code, r.stderr) == (2, "offload: fleet up needs a stack: pass --stack NAME or set OFFLOAD_STACK\n")


def test_help_documents_exit_codes(cli: RunCli) -> None:
    for verb in ("up", "stop", "list"):
        r = cli("fleet", verb, "--help")
        assert r.exit_code == 0
        assert "Exit codes: 0 ok, 1 failure" in " ".join(r.stdout.split())
    assert "6 the pulumi CLI is missing" in " ".join(cli("fleet", "up", "--help").stdout.split())


def test_stop_and_start_a_workstation_through_its_api(cli: RunCli, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.workstations_api import WorkstationsFake

    outputs = write_outputs(tmp_path / "ws.json", "workstation", [
        {"name": "ws-0", "host": "ws-0", "port": 22, "user": "user", "workspace": "/home/user/offload",
         "instance": "ws-0", "project": "p", "region": "us-central1", "workstation_cluster": "c",
         "workstation_config": "f"}])
    with WorkstationsFake(transition_gets=0) as fake:
        ws = fake.add("ws-0", state="STATE_RUNNING")
        monkeypatch.setenv("OFFLOAD_WORKSTATIONS_ENDPOINT", fake.endpoint)
        r = cli("fleet", "stop", "--outputs", str(outputs))
        assert (r.exit_code, r.stdout, ws.state) == (0, "ws-0: stopped\n", "STATE_STOPPED"), r.stderr
        r = cli("fleet", "start", "--outputs", str(outputs))
        assert (r.exit_code, r.stdout, ws.state) == (0, "ws-0: running\n", "STATE_RUNNING"), r.stderr
    assert [c.target for c in fake.calls("POST")] == ["ws-0:stop", "ws-0:start"]
