"""The Pulumi program under mocks: every provider type builds from its example stack, exports the contract,
and every GCE worker keeps the security baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from offload.stackconfig import STACK_PROVIDERS
from offload.outputs import IAP_RANGE, StackOutputs
from tests.infra.conftest import STACK_FILES, stack_file
from tests.infra.mocks import ACCOUNT, DISK, FIREWALL, INSTANCE, Run, run_program, stack_config

DEV = "dev@example.com"
GCE_MINIMAL = {"offload:developer": DEV, "gcp:project": "p-offload", "gcp:zone": "us-west1-a"}
DEFAULT_COMPUTE_SA = "-compute@developer.gserviceaccount.com"
IAM_TYPES = ("gcp:iap/tunnelInstanceIAMMember:TunnelInstanceIAMMember",
             "gcp:compute/instanceIAMMember:InstanceIAMMember",
             "gcp:serviceaccount/iAMMember:IAMMember",
             "gcp:projects/iAMMember:IAMMember",
             "gcp:workstations/workstationIamMember:WorkstationIamMember")


def gce(provider: str, **extra: Any) -> dict[str, Any]:
    return {"offload:provider": provider, **GCE_MINIMAL, **extra}


@pytest.fixture(scope="module")
def cos() -> Run:
    return run_program(gce("gce-cos"))


@pytest.fixture(scope="module")
def linux() -> Run:
    return run_program(gce("gce-linux"))


@pytest.fixture(params=["gce-cos", "gce-linux"])
def gce_run(request: pytest.FixtureRequest) -> Run:
    return request.getfixturevalue("cos" if request.param == "gce-cos" else "linux")


def test_there_is_an_example_stack_for_every_provider_type() -> None:
    providers = {stack_config(p)["offload:provider"] for p in STACK_FILES}
    assert providers == {p.value for p in STACK_PROVIDERS}


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_no_example_stack_suggests_scanning_for_the_keys_it_pins(path: Path) -> None:
    """A key scanned over the network is trust on first use; pinned keys must come from a source already trusted."""
    assert "keyscan" not in path.read_text()


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_example_stack_builds_and_exports_the_contract(path: Path) -> None:
    config = stack_config(path)
    run = run_program(config, stack=path.name.split(".")[1])
    outputs = StackOutputs.from_dict(run.outputs)
    assert run.outputs["provider"] == config["offload:provider"]
    assert run.outputs["developer"] == config["offload:developer"]
    assert outputs.workers
    assert run.mocks.calls == []
    prefix = "offload-" + config["offload:developer"].split("@")[0]
    for declared in run.declared:
        # Stable names derived from the component's, and every resource parented to a component.
        assert declared.name.startswith(prefix), declared.name
        if declared.custom:
            assert declared.parent_type.startswith("offload:infra:"), (declared.typ, declared.parent)


def test_gce_cos_worker_record_matches_the_contract(cos: Run) -> None:
    (worker,) = cos.outputs["workers"]
    assert worker == {
        "name": "offload-dev-0", "host": "10.10.0.2", "port": 22, "user": "dev_example_com",
        "container": "offload-worker", "workspace": "/mnt/disks/data/offload",
        "instance": "offload-dev-0", "project": "p-offload", "zone": "us-west1-a",
        "host_keys": [], "proxy_command": None,
        "image": "docker.io/library/debian:bookworm", "machine_type": "e2-standard-4",
        "hourly_cost_usd": worker["hourly_cost_usd"], "idle_stop_minutes": 30,
    }
    assert 0.05 < worker["hourly_cost_usd"] < 0.5
    assert cos.outputs["provider"] == "gce-cos" and cos.outputs["developer"] == DEV


def test_gce_linux_runs_jobs_on_the_host(linux: Run) -> None:
    (worker,) = linux.outputs["workers"]
    assert worker["container"] is None
    assert worker["workspace"] == "/var/lib/offload"
    assert worker["user"] == "dev_example_com"
    assert worker["instance"] == "offload-dev-0" and worker["zone"] == "us-west1-a"
    metadata = linux.one(INSTANCE).inputs["metadata"]
    assert "apt-get" in metadata["startup-script"] and "tmux" in metadata["startup-script"]
    assert linux.one(INSTANCE).inputs["bootDisk"]["initializeParams"]["image"] == "debian-cloud/debian-12"


def test_gce_cos_boots_container_optimized_os_with_user_data(cos: Run) -> None:
    instance = cos.one(INSTANCE).inputs
    assert instance["bootDisk"]["initializeParams"]["image"] == "cos-cloud/cos-stable"
    user_data = instance["metadata"]["user-data"]
    assert user_data.startswith("#cloud-config\n")
    assert "docker.io/library/debian:bookworm" in user_data and "offload-worker" in user_data


def test_gce_instance_has_no_external_ip(gce_run: Run) -> None:
    for nic in gce_run.one(INSTANCE).inputs["networkInterfaces"]:
        assert "accessConfigs" not in nic or not nic["accessConfigs"]
        assert not nic.get("ipv6AccessConfigs")


def test_gce_instance_is_a_shielded_vm_with_os_login(gce_run: Run) -> None:
    instance = gce_run.one(INSTANCE).inputs
    assert instance["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableVtpm": True,
                                                  "enableIntegrityMonitoring": True}
    assert instance["metadata"]["enable-oslogin"] == "TRUE"
    assert instance["metadata"]["enable-guest-attributes"] == "TRUE"
    assert instance["labels"] == {"owner": "dev_example_com", "purpose": "offload-worker", "managed-by": "pulumi"}


def test_gce_instance_runs_as_a_dedicated_narrow_service_account(gce_run: Run) -> None:
    account = gce_run.one(ACCOUNT).inputs
    email = f"{account['accountId']}@p-offload.iam.gserviceaccount.com"
    service_account = gce_run.one(INSTANCE).inputs["serviceAccount"]
    assert service_account["email"] == email
    assert not service_account["email"].endswith(DEFAULT_COMPUTE_SA)
    assert not any("cloud-platform" in s for s in service_account["scopes"])
    grants = gce_run.of_type("gcp:projects/iAMMember:IAMMember")
    assert {g.inputs["role"] for g in grants} == {"roles/logging.logWriter", "roles/monitoring.metricWriter",
                                                 "roles/artifactregistry.reader"}
    assert {g.inputs["member"] for g in grants} == {f"serviceAccount:{email}"}


def test_gce_data_disk_is_separate_and_outlives_the_instance(gce_run: Run) -> None:
    disk = gce_run.one(DISK)
    instance = gce_run.one(INSTANCE)
    assert disk.inputs["type"] == "pd-balanced" and disk.inputs["size"] == 100
    (attached,) = instance.inputs["attachedDisks"]
    assert attached["source"] == disk.inputs["name"] == "offload-dev-0-data"
    assert attached["deviceName"] == "offload-data"
    assert attached.get("autoDelete") in (None, False)
    assert instance.inputs["bootDisk"]["autoDelete"] is True
    assert not disk.protect
    # The instance's name is fixed, so a replacement deletes the old one first; the disk is untouched.
    assert instance.delete_before_replace and not disk.delete_before_replace


def test_protect_data_disk_protects_it() -> None:
    run = run_program(gce("gce-cos", **{"offload:protectDataDisk": True}))
    assert run.one(DISK).protect


def test_gce_private_network_with_nat_and_private_google_access(gce_run: Run) -> None:
    assert gce_run.one("gcp:compute/network:Network").inputs["autoCreateSubnetworks"] is False
    subnet = gce_run.one("gcp:compute/subnetwork:Subnetwork").inputs
    assert subnet["privateIpGoogleAccess"] is True and subnet["region"] == "us-west1"
    nat = gce_run.one("gcp:compute/routerNat:RouterNat").inputs
    assert nat["natIpAllocateOption"] == "AUTO_ONLY"
    gce_run.one("gcp:compute/router:Router")


def test_firewall_admits_ssh_from_the_iap_range_only(gce_run: Run) -> None:
    firewall = gce_run.one(FIREWALL).inputs
    assert firewall["sourceRanges"] == [IAP_RANGE]
    assert firewall["allows"] == [{"protocol": "tcp", "ports": ["22"]}]
    assert firewall["direction"] == "INGRESS"
    assert firewall["targetTags"] == gce_run.one(INSTANCE).inputs["tags"]


def test_ssh_source_ranges_are_added_to_the_iap_range() -> None:
    run = run_program(gce("gce-cos", **{"offload:sshSourceRanges": ["10.8.0.0/16", "192.168.4.0/24"]}))
    assert run.one(FIREWALL).inputs["sourceRanges"] == [IAP_RANGE, "10.8.0.0/16", "192.168.4.0/24"]


def test_iam_grants_are_instance_scoped_and_name_only_the_developer(gce_run: Run) -> None:
    account = gce_run.one(ACCOUNT).inputs
    worker_sa = f"serviceAccount:{account['accountId']}@p-offload.iam.gserviceaccount.com"
    instance = gce_run.one(INSTANCE).inputs
    grants = [d for d in gce_run.declared if d.typ in IAM_TYPES]
    developer_grants = [g for g in grants if g.inputs["member"] != worker_sa]
    assert {g.inputs["member"] for g in developer_grants} == {f"user:{DEV}"}
    for grant in developer_grants:
        assert grant.typ != "gcp:projects/iAMMember:IAMMember", "no project-wide grant to the developer"
    on_instance = {(g.typ, g.inputs["role"]) for g in developer_grants
                   if g.inputs.get("instanceName", g.inputs.get("instance")) == instance["name"]}
    assert on_instance == {(IAM_TYPES[0], "roles/iap.tunnelResourceAccessor"),
                           (IAM_TYPES[1], "roles/compute.osAdminLogin")}
    for grant in developer_grants:
        if grant.typ != "gcp:serviceaccount/iAMMember:IAMMember":
            assert grant.inputs["zone"] == "us-west1-a" and grant.inputs["project"] == "p-offload"
            assert grant.inputs.get("instanceName", grant.inputs.get("instance")) == instance["name"]
    (sa_user,) = gce_run.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert sa_user.inputs["role"] == "roles/iam.serviceAccountUser"
    assert sa_user.inputs["serviceAccountId"].endswith(worker_sa.removeprefix("serviceAccount:"))


def test_every_worker_gets_its_own_disk_instance_and_grants() -> None:
    run = run_program(gce("gce-linux", **{"offload:workers": 3}))
    names = [w["name"] for w in run.outputs["workers"]]
    assert names == ["offload-dev-0", "offload-dev-1", "offload-dev-2"]
    assert len({w["host"] for w in run.outputs["workers"]}) == 3
    assert len(run.of_type(DISK)) == 3 and len(run.of_type(INSTANCE)) == 3
    tunnels = run.of_type("gcp:iap/tunnelInstanceIAMMember:TunnelInstanceIAMMember")
    assert sorted(t.inputs["instance"] for t in tunnels) == names
    assert len(run.of_type(FIREWALL)) == 1 and len(run.of_type(ACCOUNT)) == 1


def test_an_existing_network_is_used_instead_of_a_new_one() -> None:
    network = "projects/host/global/networks/shared"
    subnetwork = "projects/host/regions/us-west1/subnetworks/dev"
    run = run_program(gce("gce-cos", **{"offload:network": network, "offload:subnetwork": subnetwork}))
    assert not run.types & {"gcp:compute/network:Network", "gcp:compute/subnetwork:Subnetwork",
                            "gcp:compute/router:Router", "gcp:compute/routerNat:RouterNat"}
    assert run.one(INSTANCE).inputs["networkInterfaces"] == [{"subnetwork": subnetwork}]
    firewall = run.one(FIREWALL).inputs
    assert firewall["network"] == network and firewall["sourceRanges"] == [IAP_RANGE]


def test_gce_outputs_are_complete_when_mocks_only_echo_inputs() -> None:
    run = run_program(gce("gce-cos"), echo_only=True)
    (worker,) = run.outputs["workers"]
    # No address yet: the zonal DNS name reaches the same instance.
    assert worker["host"] == "offload-dev-0.us-west1-a.c.p-offload.internal"
    email = run.one(INSTANCE).inputs["serviceAccount"]["email"]
    assert email == f"{run.one(ACCOUNT).inputs['accountId']}@p-offload.iam.gserviceaccount.com"


def test_the_program_previews() -> None:
    run = run_program(gce("gce-cos"), preview=True)
    assert INSTANCE in run.types and FIREWALL in run.types


def test_workstation_is_private_and_reached_through_its_tunnel() -> None:
    run = run_program({"offload:provider": "workstation", "offload:developer": DEV,
                       "gcp:project": "p-offload", "gcp:zone": "us-central1-b", "offload:idleStopMinutes": 45})
    cluster = run.one("gcp:workstations/workstationCluster:WorkstationCluster").inputs
    config = run.one("gcp:workstations/workstationConfig:WorkstationConfig").inputs
    workstation = run.one("gcp:workstations/workstation:Workstation").inputs
    assert cluster["location"] == "us-central1"
    gce_instance = config["host"]["gceInstance"]
    assert gce_instance["disablePublicIpAddresses"] is True
    assert gce_instance["shieldedInstanceConfig"]["enableSecureBoot"] is True
    assert not gce_instance["serviceAccount"].endswith(DEFAULT_COMPUTE_SA)
    assert config["idleTimeout"] == "2700s"
    assert config["container"]["image"].endswith("/predefined/code-oss:latest")
    (grant,) = run.of_type("gcp:workstations/workstationIamMember:WorkstationIamMember")
    assert grant.inputs["member"] == f"user:{DEV}" and grant.inputs["role"] == "roles/workstations.user"
    assert grant.inputs["workstationId"] == workstation["workstationId"] == "offload-dev-0"
    assert FIREWALL not in run.types
    (worker,) = run.outputs["workers"]
    assert worker["name"] == worker["host"] == "offload-dev-0" and worker["port"] == 22
    assert worker["user"] == "user" and worker["container"] is None
    assert worker["workspace"] == "/home/user/offload"
    # The outputs say which workstation it is; how to reach it is the runtime's business.
    assert worker["proxy_command"] is None
    assert worker["instance"] == "offload-dev-0" and worker["project"] == "p-offload" and worker["zone"] is None
    assert (worker["region"], worker["workstation_cluster"], worker["workstation_config"]) == (
        "us-central1", "offload-dev-cluster", "offload-dev-config")


def test_local_docker_runs_a_long_lived_container_with_the_workspace_at_the_same_path(tmp_path: Path) -> None:
    run = run_program({"offload:provider": "local-docker", "offload:developer": DEV,
                       "offload:image": "offload-worker:test", "offload:workspace": str(tmp_path)})
    image = run.one("docker:index/remoteImage:RemoteImage").inputs
    assert image == {"name": "offload-worker:test", "keepLocally": True}
    container = run.one("docker:index/container:Container").inputs
    workspace = f"{tmp_path}/offload-dev-0"
    assert container["name"] == "offload-dev-0" and container["image"] == "offload-worker:test"
    assert container["restart"] == "always" and container["mustRun"] is True
    assert container["volumes"] == [{"hostPath": workspace, "containerPath": workspace}]
    assert container["command"][-1].endswith("exec sleep infinity")
    (worker,) = run.outputs["workers"]
    assert worker["host"] == "localhost" and worker["container"] == "offload-dev-0"
    assert worker["workspace"] == workspace and worker["image"] == "offload-worker:test"


def test_local_docker_workspaces_default_under_the_offload_cache(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))
    run = run_program({"offload:provider": "local-docker", "offload:developer": DEV, "offload:workers": 2})
    assert [w["workspace"] for w in run.outputs["workers"]] == [
        f"{tmp_path}/cache/workers/offload-dev-0", f"{tmp_path}/cache/workers/offload-dev-1"]


def test_ssh_exports_the_hosts_as_given_and_creates_nothing() -> None:
    config = stack_config(stack_file("ssh"))
    run = run_program(config)
    assert all(not d.custom for d in run.declared)
    exported = run.outputs["workers"]
    assert [w["name"] for w in exported] == [h["name"] for h in config["offload:hosts"]]
    for given, worker in zip(config["offload:hosts"], exported):
        for key, value in given.items():
            assert worker[key] == value
    assert exported[0]["container"] is None and exported[1]["container"] == "offload-worker"


def test_a_bad_config_fails_the_program_with_the_key_named() -> None:
    from offload.errors import ConfigError

    with pytest.raises(ConfigError, match="gcp:zone"):
        run_program({"offload:provider": "gce-cos", "offload:developer": DEV, "gcp:project": "p-offload"})


def test_first_network_ip_reads_typed_outputs_and_plain_dicts() -> None:
    from offload.infra.gce import first_network_ip

    assert first_network_ip([{"networkIp": "10.10.0.9"}]) == "10.10.0.9"
    assert first_network_ip([{"subnetwork": "s"}]) is None
    assert first_network_ip([]) is None and first_network_ip(None) is None


def test_the_stacks_retention_reaches_every_worker_record() -> None:
    run = run_program({"offload:provider": "ssh", "offload:developer": DEV,
                       "offload:hosts": [{"name": "box", "host": "box.example.com", "workspace": "/srv/o"}],
                       "offload:keepJobs": 5, "offload:warmWorktrees": 2})
    (worker,) = run.outputs["workers"]
    assert (worker["keep_jobs"], worker["warm_worktrees"]) == (5, 2)
    plain = run_program({"offload:provider": "ssh", "offload:developer": DEV,
                         "offload:hosts": [{"name": "box", "host": "box.example.com", "workspace": "/srv/o"}]})
    assert "keep_jobs" not in plain.outputs["workers"][0]


def test_the_local_docker_container_keeps_home_and_caches_on_the_workspace(tmp_path: Path) -> None:
    run = run_program({"offload:provider": "local-docker", "offload:developer": DEV,
                       "offload:image": "offload-worker:test", "offload:workspace": str(tmp_path)})
    container = run.one("docker:index/container:Container").inputs
    workspace = f"{tmp_path}/offload-dev-0"
    assert sorted(container["envs"]) == [f"HOME={workspace}/home", f"XDG_CACHE_HOME={workspace}/cache"]
    assert {(lab["label"], lab["value"]) for lab in container["labels"]} == {
        ("offload.worker", "offload-dev-0"), ("offload.owner", DEV)}
