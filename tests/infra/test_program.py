"""The Pulumi program under mocks: every provider type builds from its example stack, exports the contract,
and every GCE worker keeps the security baseline."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from offload.stackconfig import STACK_PROVIDERS, default_name_prefix, read_stack_config
from offload.outputs import IAP_RANGE, StackOutputs
from tests.infra.conftest import STACK_FILES, stack_file
from tests.infra.mocks import ACCOUNT, DISK, FIREWALL, INSTANCE, Run, run_program, stack_config

DEV = "dev@example.com"
W = default_name_prefix(DEV, "test")  # offload-dev-<hash of the email and the stack `test`>
GCE_MINIMAL = {"offload:developer": DEV, "gcp:project": "p-offload", "gcp:zone": "us-west1-a"}
DEFAULT_COMPUTE_SA = "-compute@developer.gserviceaccount.com"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
REPO_IAM = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
SERVICE = "gcp:projects/service:Service"
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
def test_the_args_take_the_stack_configs_values_as_they_are(path: Path) -> None:
    """The stack config checks every value once, where it is read; a component's Args carry them unchanged."""
    from offload.infra.gce_cos import GceCosArgs
    from offload.infra.gce_linux import GceLinuxArgs
    from offload.infra.local import LocalWorkerArgs
    from offload.infra.local_docker import LocalDockerArgs
    from offload.infra.ssh_hosts import SshHostsArgs
    from offload.infra.workstation import WorkstationArgs

    config = read_stack_config(stack_config(path))
    args_class = {"gce-cos": GceCosArgs, "gce-linux": GceLinuxArgs, "workstation": WorkstationArgs,
                  "local-docker": LocalDockerArgs, "ssh": SshHostsArgs, "local": LocalWorkerArgs}[config.provider.value]
    args = args_class.from_config(config)
    shared = [f.name for f in dataclasses.fields(args) if hasattr(config, f.name)]
    assert [getattr(args, name) for name in shared] == [getattr(config, name) for name in shared]


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
        "name": f"{W}-0", "host": "10.10.0.2", "port": 22, "user": "dev_example_com",
        "container": "offload-worker", "workspace": "/mnt/disks/data/offload",
        "instance": f"{W}-0", "project": "p-offload", "zone": "us-west1-a",
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
    assert worker["instance"] == f"{W}-0" and worker["zone"] == "us-west1-a"
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
    grants = [g for g in gce_run.of_type(PROJECT_IAM) if g.inputs["member"].startswith("serviceAccount:")]
    assert {g.inputs["role"] for g in grants} == {"roles/logging.logWriter", "roles/monitoring.metricWriter"}
    assert {g.inputs["member"] for g in grants} == {f"serviceAccount:{email}"}
    # An image on Docker Hub needs no registry grant at all.
    assert REPO_IAM not in gce_run.types


@pytest.mark.parametrize("image,repository", [
    ("us-west1-docker.pkg.dev/team-images/workers/offload@sha256:" + "a" * 64, ("team-images", "us-west1", "workers")),
    ("europe-docker.pkg.dev/img-proj/base/worker:1.2", ("img-proj", "europe", "base")),
    ("eu.gcr.io/legacy-proj/worker:3", ("legacy-proj", "europe", "eu.gcr.io")),
])
def test_image_pulls_are_granted_on_the_images_repository_only(image: str, repository: tuple[str, ...]) -> None:
    run = run_program(gce("gce-cos", **{"offload:image": image}))
    (grant,) = run.of_type(REPO_IAM)
    email = f"{run.one(ACCOUNT).inputs['accountId']}@p-offload.iam.gserviceaccount.com"
    assert (grant.inputs["project"], grant.inputs["location"], grant.inputs["repository"]) == repository
    assert grant.inputs["role"] == "roles/artifactregistry.reader"
    assert grant.inputs["member"] == f"serviceAccount:{email}"
    assert "roles/artifactregistry.reader" not in {g.inputs["role"] for g in run.of_type(PROJECT_IAM)}
    # The instance boots only once it may pull.
    assert f"{REPO_IAM}::{grant.name}" in run.waits_for(run.one(INSTANCE))


def test_gce_data_disk_is_separate_and_outlives_the_instance(gce_run: Run) -> None:
    disk = gce_run.one(DISK)
    instance = gce_run.one(INSTANCE)
    assert disk.inputs["type"] == "pd-balanced" and disk.inputs["size"] == 100
    (attached,) = instance.inputs["attachedDisks"]
    assert attached["source"] == disk.inputs["name"] == f"{W}-0-data"
    assert attached["deviceName"] == "offload-data"
    assert attached.get("autoDelete") in (None, False)
    assert instance.inputs["bootDisk"]["autoDelete"] is True
    # Protected by default: `pulumi destroy` or fewer workers must not take a workspace with them.
    assert disk.protect
    # The instance's name is fixed, so a replacement deletes the old one first; the disk is untouched.
    assert instance.delete_before_replace and not disk.delete_before_replace


def test_protect_data_disk_false_leaves_it_unprotected() -> None:
    run = run_program(gce("gce-cos", **{"offload:protectDataDisk": False}))
    assert not run.one(DISK).protect


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
    # Aimed at the workers' service account, not a network tag anyone who may edit an instance can add.
    assert firewall["targetServiceAccounts"] == [gce_run.one(INSTANCE).inputs["serviceAccount"]["email"]]
    assert not firewall.get("targetTags") and not gce_run.one(INSTANCE).inputs.get("tags")
    assert firewall["project"] == "p-offload"


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
    roles = custom_roles(gce_run)
    worker_role = f"projects/p-offload/roles/{W.replace('-', '_')}_worker"
    fleet_role = f"projects/p-offload/roles/{W.replace('-', '_')}_fleet"
    # The only project-level grant is the custom role of what exists only at project level.
    (project_grant,) = [g for g in developer_grants if g.typ == PROJECT_IAM]
    assert project_grant.inputs["role"] == fleet_role
    assert roles[fleet_role] == {"compute.instances.list", "compute.zoneOperations.get"}
    on_instance = {(g.typ, g.inputs["role"]) for g in developer_grants
                   if g.inputs.get("instanceName", g.inputs.get("instance")) == instance["name"]}
    assert on_instance == {(IAM_TYPES[0], "roles/iap.tunnelResourceAccessor"),
                           (IAM_TYPES[1], "roles/compute.osAdminLogin"),
                           (IAM_TYPES[1], worker_role)}
    # gcloud's tunnel looks the instance up first; waking, stopping and host keys need the rest.
    assert roles[worker_role] >= {"compute.instances.get", "compute.instances.start", "compute.instances.stop",
                                  "compute.instances.getGuestAttributes"}
    assert all(p.startswith("compute.instances.") for p in roles[worker_role])
    for grant in developer_grants:
        if grant.typ not in ("gcp:serviceaccount/iAMMember:IAMMember", PROJECT_IAM):
            assert grant.inputs["zone"] == "us-west1-a" and grant.inputs["project"] == "p-offload"
            assert grant.inputs.get("instanceName", grant.inputs.get("instance")) == instance["name"]
    (sa_user,) = gce_run.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert sa_user.inputs["role"] == "roles/iam.serviceAccountUser"
    assert sa_user.inputs["serviceAccountId"].endswith(worker_sa.removeprefix("serviceAccount:"))


def custom_roles(run: Run) -> dict[str, set[str]]:
    return {f"projects/{r.inputs['project']}/roles/{r.inputs['roleId']}": set(r.inputs["permissions"])
            for r in run.of_type(CUSTOM_ROLE)}


@pytest.mark.parametrize("provider,apis", [
    ("gce-cos", {"compute", "iam", "iap", "oslogin", "logging", "monitoring"}),
    ("gce-linux", {"compute", "iam", "iap", "oslogin", "logging", "monitoring"}),
    ("workstation", {"compute", "iam", "iap", "oslogin", "logging", "monitoring", "workstations"}),
])
def test_the_apis_are_enabled_and_everything_waits_for_them(provider: str, apis: set[str]) -> None:
    run = run_program(gce(provider))
    services = run.of_type(SERVICE)
    assert {s.inputs["service"] for s in services} == {f"{api}.googleapis.com" for api in apis}
    # Enabling a service needs Service Usage, and the provider reads the project through Resource Manager before
    # it enables anything: a resource of the stack that enabled either would fail in a fresh project (step 0).
    assert not {s.inputs["service"] for s in services} & {"serviceusage.googleapis.com",
                                                          "cloudresourcemanager.googleapis.com"}
    for service in services:
        # Other stacks in the project use them too: destroying this one leaves them on.
        assert service.inputs["disableOnDestroy"] is False and service.inputs["project"] == "p-offload"
    enabled = {f"{SERVICE}::{s.name}" for s in services}
    for declared in run.declared:
        if declared.custom and declared.typ != SERVICE:
            assert enabled <= run.waits_for(declared), f"{declared.typ} {declared.name} does not wait for the APIs"


def test_instances_wait_for_nat_the_firewall_and_the_service_accounts_grants(gce_run: Run) -> None:
    waits = gce_run.waits_for(gce_run.one(INSTANCE))
    assert f"gcp:compute/routerNat:RouterNat::{gce_run.one('gcp:compute/routerNat:RouterNat').name}" in waits
    assert f"{FIREWALL}::{gce_run.one(FIREWALL).name}" in waits
    for grant in gce_run.of_type(PROJECT_IAM):
        if grant.inputs["member"].startswith("serviceAccount:"):
            assert f"{PROJECT_IAM}::{grant.name}" in waits


def test_every_worker_gets_its_own_disk_instance_and_grants() -> None:
    run = run_program(gce("gce-linux", **{"offload:workers": 3}))
    names = [w["name"] for w in run.outputs["workers"]]
    assert names == [f"{W}-0", f"{W}-1", f"{W}-2"]
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
    # A Shared VPC's rules live in its host project: GCE refuses a rule that references another project's network.
    assert firewall["project"] == "host"
    assert run.one(INSTANCE).inputs["project"] == "p-offload"


def test_an_existing_network_in_the_stacks_own_project_keeps_its_firewall_there() -> None:
    run = run_program(gce("gce-linux", **{"offload:network": "team-net", "offload:subnetwork": "team-subnet"}))
    assert run.one(FIREWALL).inputs["project"] == "p-offload"


def test_gce_outputs_are_complete_when_mocks_only_echo_inputs() -> None:
    run = run_program(gce("gce-cos"), echo_only=True)
    (worker,) = run.outputs["workers"]
    # No address yet: the zonal DNS name reaches the same instance.
    assert worker["host"] == f"{W}-0.us-west1-a.c.p-offload.internal"
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
    assert grant.inputs["workstationId"] == workstation["workstationId"] == f"{W}-0"
    assert FIREWALL not in run.types
    (worker,) = run.outputs["workers"]
    assert worker["name"] == worker["host"] == f"{W}-0" and worker["port"] == 22
    assert worker["user"] == "user" and worker["container"] is None
    assert worker["workspace"] == "/home/user/offload"
    # The outputs say which workstation it is; how to reach it is the runtime's business.
    assert worker["proxy_command"] is None
    assert worker["instance"] == f"{W}-0" and worker["project"] == "p-offload" and worker["zone"] is None
    assert (worker["region"], worker["workstation_cluster"], worker["workstation_config"]) == (
        "us-central1", f"{W}-cluster", f"{W}-config")


def test_local_docker_runs_a_long_lived_container_with_the_workspace_at_the_same_path(tmp_path: Path) -> None:
    run = run_program({"offload:provider": "local-docker", "offload:developer": DEV,
                       "offload:image": "offload-worker:test", "offload:workspace": str(tmp_path)})
    image = run.one("docker:index/remoteImage:RemoteImage").inputs
    assert image == {"name": "offload-worker:test", "keepLocally": True}
    container = run.one("docker:index/container:Container").inputs
    workspace = f"{tmp_path}/{W}-0"
    assert container["name"] == f"{W}-0" and container["image"] == "offload-worker:test"
    assert container["restart"] == "always" and container["mustRun"] is True
    assert container["volumes"] == [{"hostPath": workspace, "containerPath": workspace}]
    assert container["command"][-1].endswith("exec sleep infinity")
    (worker,) = run.outputs["workers"]
    assert worker["host"] == "localhost" and worker["container"] == f"{W}-0"
    assert worker["workspace"] == workspace and worker["image"] == "offload-worker:test"


def test_local_docker_workspaces_default_under_the_offload_cache(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))
    run = run_program({"offload:provider": "local-docker", "offload:developer": DEV, "offload:workers": 2})
    assert [w["workspace"] for w in run.outputs["workers"]] == [
        f"{tmp_path}/cache/workers/{W}-0", f"{tmp_path}/cache/workers/{W}-1"]


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
                       "offload:keepJobs": 5, "offload:warmWorktrees": 2, "offload:historyDepth": "full"})
    (worker,) = run.outputs["workers"]
    assert (worker["keep_jobs"], worker["warm_worktrees"], worker["history_depth"]) == (5, 2, "full")
    plain = run_program({"offload:provider": "ssh", "offload:developer": DEV,
                         "offload:hosts": [{"name": "box", "host": "box.example.com", "workspace": "/srv/o"}]})
    assert "keep_jobs" not in plain.outputs["workers"][0]


def test_the_local_docker_container_keeps_home_and_caches_on_the_workspace(tmp_path: Path) -> None:
    run = run_program({"offload:provider": "local-docker", "offload:developer": DEV,
                       "offload:image": "offload-worker:test", "offload:workspace": str(tmp_path)})
    container = run.one("docker:index/container:Container").inputs
    workspace = f"{tmp_path}/{W}-0"
    assert sorted(container["envs"]) == [f"HOME={workspace}/home", f"XDG_CACHE_HOME={workspace}/cache"]
    assert {(lab["label"], lab["value"]) for lab in container["labels"]} == {
        ("offload.worker", f"{W}-0"), ("offload.owner", DEV)}


def gce_names(run: Run) -> set[str]:
    """Every name the stack gives a GCP resource explicitly (autonamed resources get a random suffix)."""
    names = {d.inputs["name"] for d in run.declared if d.custom and isinstance(d.inputs.get("name"), str)}
    names |= {d.inputs["accountId"] for d in run.of_type(ACCOUNT)}
    names |= {d.inputs["roleId"] for d in run.of_type(CUSTOM_ROLE)}
    return names


@pytest.mark.parametrize("first,second", [("john-doe@example.com", "john.doe@other.com"),
                                          ("christopher.alexander@example.com",
                                           "christopher.alexandra@example.com")])
@pytest.mark.parametrize("provider", ["gce-cos", "workstation"])
def test_two_developers_whose_emails_slug_alike_share_no_name(provider: str, first: str, second: str) -> None:
    a = run_program(gce(provider, **{"offload:developer": first}))
    b = run_program(gce(provider, **{"offload:developer": second}))
    assert gce_names(a) and not gce_names(a) & gce_names(b)
    assert not {w["name"] for w in a.outputs["workers"]} & {w["name"] for w in b.outputs["workers"]}


LONG_EMAIL = "christopher_alexander_longname_smith@subdomain.corp.example.co.uk"


@pytest.mark.parametrize("provider", ["gce-cos", "gce-linux", "workstation"])
def test_a_long_email_builds_names_within_gcp_limits(provider: str) -> None:
    run = run_program(gce(provider, **{"offload:developer": LONG_EMAIL, "offload:workers": 3}))
    for declared in run.declared:
        if declared.typ in (INSTANCE, DISK):
            assert len(declared.inputs["name"]) <= 63
        for key in ("workstationId", "workstationClusterId", "workstationConfigId"):
            if key in declared.inputs:
                assert len(declared.inputs[key]) <= 63
    for account in run.of_type(ACCOUNT):
        assert 6 <= len(account.inputs["accountId"]) <= 30
        assert len(account.inputs["displayName"]) <= 100
    for role in run.of_type(CUSTOM_ROLE):
        assert 3 <= len(role.inputs["roleId"]) <= 64 and len(role.inputs["title"]) <= 100
    outputs = StackOutputs.from_dict(run.outputs)
    assert len(outputs.workers) == 3
    if provider != "workstation":
        # OS Login's guess is cut to 32; the runtime reads the real name from the login profile.
        assert {w.user for w in outputs.workers} == {"christopher_alexander_longname_s"}


def test_workstation_settings_keep_long_jobs_and_homes_and_let_the_developer_act_as_its_account() -> None:
    run = run_program(gce("workstation"))
    config = run.one("gcp:workstations/workstationConfig:WorkstationConfig").inputs
    assert config["runningTimeout"] == "0s"
    (home,) = config["persistentDirectories"]
    assert home["gcePd"]["reclaimPolicy"] == "RETAIN"
    account = run.one(ACCOUNT).inputs
    email = f"{account['accountId']}@p-offload.iam.gserviceaccount.com"
    assert config["host"]["gceInstance"]["serviceAccount"] == email
    (act_as,) = run.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert act_as.inputs == {"serviceAccountId": f"projects/p-offload/serviceAccounts/{email}",
                             "role": "roles/iam.serviceAccountUser", "member": f"user:{DEV}"}
    # A Google-published image needs no registry grant (and nobody outside Google could make one).
    assert REPO_IAM not in run.types


def test_workstation_running_timeout_and_home_reclaim_follow_the_stack() -> None:
    run = run_program(gce("workstation", **{"offload:runningTimeoutMinutes": 720,
                                            "offload:protectDataDisk": False}))
    config = run.one("gcp:workstations/workstationConfig:WorkstationConfig").inputs
    assert config["runningTimeout"] == "43200s"
    assert config["persistentDirectories"][0]["gcePd"]["reclaimPolicy"] == "DELETE"


@pytest.mark.parametrize("ranges", [["8.0.0.0/8"], ["203.0.113.0/24"], ["10.8.0.0/16", "0.0.0.0/0"]])
def test_public_source_ranges_fail_the_program_naming_the_key(ranges: list[str]) -> None:
    from offload.errors import ConfigError

    with pytest.raises(ConfigError, match=r"offload:sshSourceRanges\[\d\] must be a private range"):
        run_program(gce("gce-cos", **{"offload:sshSourceRanges": ranges}))


@pytest.mark.parametrize("provider", ["gce-cos", "gce-linux", "workstation"])
def test_two_stacks_of_one_developer_share_no_name(provider: str) -> None:
    """A `gce-cos` and a `gce-linux` stack of one developer in one project: the service account, the custom role
    ids and the instance and disk names would answer 409 if the stacks shared any."""
    cos = run_program(gce("gce-cos"), stack="alice-cos")
    other = run_program(gce(provider), stack="alice-linux")
    assert gce_names(cos) and gce_names(other)
    assert not gce_names(cos) & gce_names(other)
    assert not {w["name"] for w in cos.outputs["workers"]} & {w["name"] for w in other.outputs["workers"]}
    # The logical names (the URNs) differ too, so one state file could even hold both.
    assert not {d.name for d in cos.declared} & {d.name for d in other.declared}


def test_name_prefix_keeps_the_names_a_stack_had_before_stacks_were_hashed() -> None:
    from offload.stackconfig import email_hash, legacy_name_prefix

    old = legacy_name_prefix(DEV)
    assert old == f"offload-dev-{email_hash(DEV)}"
    run = run_program(gce("gce-cos", **{"offload:namePrefix": old}), stack="alice-cos")
    assert [w["name"] for w in run.outputs["workers"]] == [f"{old}-0"]
    assert run.one(ACCOUNT).inputs["accountId"] == f"{old}-sa"[:30]
    assert default_name_prefix(DEV, "alice-cos") != old


def test_a_cloud_stack_exports_when_it_was_deployed_and_a_static_one_does_not() -> None:
    run = run_program(gce("gce-cos"))
    ago = StackOutputs.from_dict(run.outputs).deployed_seconds_ago()
    assert ago is not None and -5 < ago < 600
    ssh = run_program(stack_config(stack_file("ssh")))
    assert "deployed_at" not in ssh.outputs


def test_a_team_stack_adds_no_firewall_rule_and_tags_its_workers_for_the_teams_one() -> None:
    team = run_program(gce("gce-cos", **{"offload:team": "core", "offload:network": "team-net",
                                         "offload:subnetwork": "team-subnet", "offload:workers": 2}))
    assert not team.of_type(FIREWALL)
    assert [d.inputs.get("tags") for d in team.of_type(INSTANCE)] == [["offload-core"], ["offload-core"]]
    assert {nic["subnetwork"] for d in team.of_type(INSTANCE) for nic in d.inputs["networkInterfaces"]} == {"team-subnet"}
    alone = run_program(gce("gce-cos", **{"offload:network": "team-net", "offload:subnetwork": "team-subnet"}))
    assert len(alone.of_type(FIREWALL)) == 1 and not alone.one(INSTANCE).inputs.get("tags")
