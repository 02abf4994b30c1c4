"""Stack config validation: good stacks read into StackConfig, and every bad key fails naming itself."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from offload.errors import ConfigError
from offload.stackconfig import (DEFAULT_WORKER_IMAGE, DEFAULT_WORKSTATION_IMAGE, default_name_prefix,
                                  email_hash, load_stack_config, os_login_user, read_stack_config)
from offload.outputs import IAP_RANGE, ProviderType, WorkerRecord

DEV = "dev@example.com"
GCE = {"offload:provider": "gce-cos", "offload:developer": DEV, "gcp:project": "p-offload",
       "gcp:zone": "us-west1-a"}
HOST = {"name": "box", "host": "box.example.com", "workspace": "/srv/offload"}
SSH = {"offload:provider": "ssh", "offload:developer": DEV, "offload:hosts": [HOST]}


def read(base: dict[str, Any], **changes: Any) -> Any:
    values = dict(base)
    for key, value in changes.items():
        full = key.replace("__", ":")
        if value is None:
            values.pop(full, None)
        else:
            values[full] = value
    return read_stack_config(values)


def fails(base: dict[str, Any], match: str, **changes: Any) -> str:
    with pytest.raises(ConfigError) as info:
        read(base, **changes)
    assert match in info.value.message, info.value.message
    return info.value.message


def test_a_minimal_gce_stack_takes_secure_defaults() -> None:
    config = read(GCE)
    assert config.provider is ProviderType.GCE_COS
    assert config.developer == DEV
    assert config.workers == 1
    assert config.machine_type == "e2-standard-4"
    assert config.data_disk_gb == 100
    assert config.image == DEFAULT_WORKER_IMAGE
    assert config.ssh_source_ranges == (IAP_RANGE,)
    assert config.idle_stop_minutes == 30
    assert (config.project, config.zone, config.region) == ("p-offload", "us-west1-a", "us-west1")
    assert config.name_prefix == f"offload-dev-{email_hash(DEV)}"
    assert config.os_login_user == "dev_example_com"
    # Workspaces survive `pulumi destroy` and a shrinking fleet unless the stack says otherwise.
    assert config.network is None and config.protect_data_disk is True
    assert config.running_timeout_minutes == 0


def test_values_arrive_as_strings_from_pulumi() -> None:
    config = read(GCE, offload__workers="3", offload__dataDiskGb="250", offload__idleStopMinutes="0",
                  offload__sshSourceRanges=json.dumps(["10.8.0.0/16"]), offload__protectDataDisk="false",
                  offload__runningTimeoutMinutes="720")
    assert (config.workers, config.data_disk_gb, config.idle_stop_minutes) == (3, 250, 0)
    assert config.ssh_source_ranges == (IAP_RANGE, "10.8.0.0/16")
    assert config.protect_data_disk is False
    assert config.running_timeout_minutes == 720


def test_ssh_source_ranges_accept_a_list_or_comma_separated_text_and_keep_iap_first() -> None:
    assert read(GCE, offload__sshSourceRanges=["10.8.0.0/16", IAP_RANGE]).ssh_source_ranges == (
        IAP_RANGE, "10.8.0.0/16")
    assert read(GCE, offload__sshSourceRanges="10.8.0.0/16, 192.168.0.0/24").ssh_source_ranges == (
        IAP_RANGE, "10.8.0.0/16", "192.168.0.0/24")


def test_developer_is_normalised_and_names_things() -> None:
    config = read(GCE, offload__developer="Jane.Doe+ci@Example.COM")
    assert config.developer == "jane.doe+ci@example.com"
    assert config.os_login_user == "jane_doe_ci_example_com"
    assert config.name_prefix == f"offload-jane-doe-{email_hash('jane.doe+ci@example.com')}"


def test_name_helpers() -> None:
    assert os_login_user("dev@example.com") == "dev_example_com"
    long_local = "a.very.long.local.part.indeed@example.com"
    assert default_name_prefix(long_local) == f"offload-a-very-lo-{email_hash(long_local)}"
    assert default_name_prefix("___@example.com") == f"offload-dev-{email_hash('___@example.com')}"


@pytest.mark.parametrize("first,second", [("john-doe@example.com", "john.doe@other.com"),
                                          ("christopher.alexander@example.com",
                                           "christopher.alexandra@example.com")])
def test_emails_that_slug_alike_get_different_names(first: str, second: str) -> None:
    a, b = read(GCE, offload__developer=first), read(GCE, offload__developer=second)
    assert a.name_prefix != b.name_prefix
    for config in (a, b):
        assert len(config.name_prefix) <= 24
        assert re.fullmatch(r"[a-z][-a-z0-9]*[a-z0-9]", config.name_prefix)


def test_a_long_email_gives_names_and_a_login_within_gcp_limits() -> None:
    email = "christopher_alexander_longname_smith@subdomain.corp.example.co.uk"
    config = read(GCE, offload__developer=email)
    assert len(config.name_prefix) <= 24
    # The guess OS Login would make is cut where OS Login cuts it, and is a valid worker login.
    assert config.os_login_user == "christopher_alexander_longname_s"
    WorkerRecord(name=f"{config.name_prefix}-0", host="10.0.0.2", workspace="/w", user=config.os_login_user)


def test_workstation_takes_its_region_from_the_zone_or_region_and_its_own_image() -> None:
    base = {"offload:provider": "workstation", "offload:developer": DEV, "gcp:project": "p-offload"}
    assert read(base, gcp__zone="europe-west4-b").region == "europe-west4"
    config = read(base, gcp__region="us-central1")
    assert config.region == "us-central1" and config.zone is None
    assert config.image == DEFAULT_WORKSTATION_IMAGE


def test_local_docker_and_ssh_need_no_cloud_keys() -> None:
    assert read({"offload:provider": "local-docker", "offload:developer": DEV}).project is None
    config = read(SSH)
    assert [h.name for h in config.hosts] == ["box"]
    assert config.hosts[0].port is None, "left for ~/.ssh/config to give, else 22"


def test_hosts_arrive_as_json_text_from_pulumi() -> None:
    hosts = [{**HOST, "port": 2222, "user": "dev", "container": "worker",
              "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDcx"]}]
    (host,) = read(SSH, offload__hosts=json.dumps(hosts)).hosts
    assert (host.port, host.user, host.container) == (2222, "dev", "worker")
    assert host.host_keys == ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDcx",)


# ---- bad config: each message names its key and says what it accepts ----------------------------------------


def test_bad_provider() -> None:
    message = fails(GCE, "offload:provider", offload__provider="aws")
    assert message == "offload:provider must be one of gce-cos, gce-linux, workstation, local-docker, ssh, local; " \
                      "got 'aws'"


def test_missing_provider() -> None:
    fails(GCE, "offload:provider is required", offload__provider=None)


def test_local_is_a_stack_provider_that_needs_no_developer_and_no_cloud_keys() -> None:
    config = read({"offload:provider": "local"})
    assert (config.provider, config.developer, config.project, config.zone) == (ProviderType.LOCAL, "", None, None)


def test_missing_developer() -> None:
    message = fails(GCE, "offload:developer is required", offload__developer=None)
    assert "email" in message


@pytest.mark.parametrize("value", ["bob", "bob@", "@example.com", "bob@localhost", "a b@example.com"])
def test_bad_developer(value: str) -> None:
    fails(GCE, "offload:developer must be an email address", offload__developer=value)


@pytest.mark.parametrize("value", [0, -1, 21, "abc", "1.5", True, [1]])
def test_bad_workers_count(value: Any) -> None:
    fails(GCE, "offload:workers must be an integer from 1 to 20", offload__workers=value)


@pytest.mark.parametrize("value", ["1.2.3.4/33", "10.0.0.1/8", "not-a-cidr", "2001:db8::/32", 42])
def test_bad_ssh_source_range(value: Any) -> None:
    message = fails(GCE, "offload:sshSourceRanges[0] must be an IPv4 CIDR range", offload__sshSourceRanges=[value])
    assert "10.8.0.0/16" in message


@pytest.mark.parametrize("value", ["0.0.0.0/0", "0.0.0.0/1", "10.0.0.0/7", "8.0.0.0/8", "203.0.113.0/24",
                                   "35.235.0.0/16", "172.32.0.0/16", "1.2.3.4/32"])
def test_ssh_is_never_opened_to_public_ranges(value: str) -> None:
    message = fails(GCE, "offload:sshSourceRanges[0] must be a private range", offload__sshSourceRanges=[value])
    assert "10.0.0.0/8" in message and "no public IP" in message


@pytest.mark.parametrize("value", ["10.0.0.0/8", "172.16.4.0/22", "192.168.1.7/32", "100.64.0.0/10",
                                   "35.235.240.0/24"])
def test_private_ranges_and_the_iap_range_are_accepted(value: str) -> None:
    assert read(GCE, offload__sshSourceRanges=[value]).ssh_source_ranges[-1] == value


@pytest.mark.parametrize("value", [-1, 43201, "12h"])
def test_bad_running_timeout(value: Any) -> None:
    fails(GCE, "offload:runningTimeoutMinutes must be the minutes a workstation may run",
          offload__runningTimeoutMinutes=value)


def test_ssh_source_ranges_must_be_a_list() -> None:
    fails(GCE, "offload:sshSourceRanges must be a list of IPv4 CIDR ranges", offload__sshSourceRanges={"a": 1})
    fails(GCE, "not valid JSON", offload__sshSourceRanges="[10.0.0.0/8")


@pytest.mark.parametrize("value", [-1, "soon", 10081, "2.5"])
def test_bad_idle_stop_minutes(value: Any) -> None:
    message = fails(GCE, "offload:idleStopMinutes must be an integer number of minutes", offload__idleStopMinutes=value)
    assert "0 (never stop)" in message


@pytest.mark.parametrize("value", [5, 70000, "big"])
def test_bad_data_disk_size(value: Any) -> None:
    fails(GCE, "offload:dataDiskGb must be an integer number of GB from 10 to 65536", offload__dataDiskGb=value)


def test_workstation_home_disk_sizes_are_the_ones_cloud_workstations_offers() -> None:
    base = {"offload:provider": "workstation", "offload:developer": DEV, "gcp:project": "p-offload",
            "gcp:region": "us-central1"}
    fails(base, "offload:dataDiskGb must be one of 10, 50, 100, 200, 500, 1000", offload__dataDiskGb=300)


@pytest.mark.parametrize("value", ["E2-STANDARD-4", "e2", "e2 standard", "-x"])
def test_bad_machine_type(value: str) -> None:
    fails(GCE, "offload:machineType must be a Compute Engine machine type", offload__machineType=value)


@pytest.mark.parametrize("value", ["debian bookworm", "-image", "a;b"])
def test_bad_image(value: str) -> None:
    fails(GCE, "offload:image must be a container image reference", offload__image=value)


@pytest.mark.parametrize("provider", ["gce-cos", "gce-linux", "workstation"])
def test_cloud_providers_need_a_project(provider: str) -> None:
    fails(GCE, f"gcp:project is required for provider {provider}", offload__provider=provider, gcp__project=None)


def test_bad_project() -> None:
    fails(GCE, "gcp:project must be a Google Cloud project id", gcp__project="My Project")


@pytest.mark.parametrize("provider", ["gce-cos", "gce-linux"])
def test_gce_needs_a_zone(provider: str) -> None:
    fails(GCE, f"gcp:zone is required for provider {provider}", offload__provider=provider, gcp__zone=None)


def test_bad_zone_and_region() -> None:
    fails(GCE, "gcp:zone must be a Compute Engine zone such as us-west1-a", gcp__zone="us-west1")
    fails(GCE, "gcp:region 'europe-west1' does not contain gcp:zone", gcp__region="europe-west1")
    base = {"offload:provider": "workstation", "offload:developer": DEV, "gcp:project": "p-offload"}
    fails(base, "gcp:zone or gcp:region is required for provider workstation")
    fails(base, "gcp:region must be a Google Cloud region", gcp__region="US")


def test_network_and_subnetwork_go_together() -> None:
    fails(GCE, "offload:network and offload:subnetwork go together", offload__network="shared")
    fails(GCE, "offload:network must be a network name or resource path", offload__network="a b",
          offload__subnetwork="c")


def test_unknown_offload_key_is_reported() -> None:
    message = fails(GCE, "unknown config key offload:machinetype", offload__machinetype="e2-small")
    assert "offload:machineType" in message


@pytest.mark.parametrize("key,value,match", [
    ("offload:namePrefix", "Offload", "offload:namePrefix must be 6-24 lowercase letters"),
    ("offload:namePrefix", "abc", "offload:namePrefix must be 6-24 lowercase letters"),
    ("offload:workspace", "relative/dir", "offload:workspace must be an absolute path"),
    ("offload:workspace", "/srv/../etc", "offload:workspace must be an absolute path"),
    ("offload:protectDataDisk", "yes", "offload:protectDataDisk must be true or false"),
    ("offload:subnetCidr", "8.8.8.0/24", "offload:subnetCidr must be a private IPv4 range"),
])
def test_other_bad_keys(key: str, value: str, match: str) -> None:
    fails({**GCE, key: value}, match)


# ---- offload:hosts -------------------------------------------------------------------------------------------


def test_ssh_needs_hosts() -> None:
    message = fails(SSH, "offload:hosts is required for provider ssh", offload__hosts=None)
    assert "{name, host, port, user, container, workspace, host_keys}" in message


@pytest.mark.parametrize("hosts,match", [
    ("not json", "offload:hosts must be a list of {name, host, port, user, container, workspace, host_keys}"),
    ([], "offload:hosts must be a list"),
    ({"name": "box"}, "offload:hosts must be a list"),
    (["box"], "offload:hosts[0] must be an object"),
    ([{**HOST, "hostname": "x"}], "offload:hosts[0] has unknown key 'hostname'"),
    ([{"name": "box", "host": "box"}], "offload:hosts[0] is missing workspace"),
    ([{**HOST, "port": 70000}], "offload:hosts[0].port must be an integer from 1 to 65535"),
    ([{**HOST, "port": "ssh"}], "offload:hosts[0].port must be an integer"),
    ([{**HOST, "workspace": "srv/offload"}], "offload:hosts[0].workspace must be an absolute path"),
    ([{**HOST, "host": "bad host"}], "offload:hosts[0].host must be a hostname"),
    ([{**HOST, "user": "a b"}], "offload:hosts[0].user must be a login name"),
    ([{**HOST, "host_keys": ["ssh-dss AAAA"]}], "offload:hosts[0].host_keys[0] must be a public key line"),
    ([{**HOST, "host_keys": "ssh-ed25519 AAAA"}], "offload:hosts[0].host_keys must be a list"),
    ([HOST, HOST], "offload:hosts names must be unique; 'box'"),
])
def test_bad_hosts(hosts: Any, match: str) -> None:
    fails(SSH, match, offload__hosts=hosts)


# ---- the adapter over pulumi.Config --------------------------------------------------------------------------


def test_load_stack_config_reads_pulumi_config() -> None:
    from pulumi.runtime.config import set_all_config

    set_all_config({"offload:provider": "gce-linux", "offload:developer": DEV, "gcp:project": "p-offload",
                    "gcp:zone": "us-east1-b", "offload:workers": "2",
                    "offload:sshSourceRanges": '["10.1.0.0/16"]', "aws:region": "ignored"})
    config = load_stack_config()
    assert config.provider is ProviderType.GCE_LINUX and config.workers == 2
    assert config.ssh_source_ranges == (IAP_RANGE, "10.1.0.0/16")


def test_load_stack_config_reports_misspelt_keys() -> None:
    from pulumi.runtime.config import set_all_config

    set_all_config({"offload:provider": "ssh", "offload:developer": DEV, "offload:host": "[]"})
    with pytest.raises(ConfigError, match="unknown config key offload:host;"):
        load_stack_config()


def test_retention_is_the_workers_default_unless_the_stack_says() -> None:
    config = read(GCE)
    assert (config.keep_jobs, config.warm_worktrees) == (None, None)
    config = read(GCE, offload__keepJobs="50", offload__warmWorktrees="0")
    assert (config.keep_jobs, config.warm_worktrees) == (50, 0)
    fails(GCE, "offload:keepJobs must be a number of finished jobs to keep", offload__keepJobs="-1")
    fails(GCE, "offload:warmWorktrees must be a number of idle warm worktrees", offload__warmWorktrees="many")


def test_history_depth_is_one_commit_unless_the_stack_says() -> None:
    assert read(GCE).history_depth is None
    assert read(GCE, offload__historyDepth="50").history_depth == 50
    assert read(GCE, offload__historyDepth="full").history_depth == "full"
    fails(GCE, 'offload:historyDepth takes a number of commits from 1 to 1000000, or "full"; got \'0\'',
          offload__historyDepth="0")
    fails(GCE, "offload:historyDepth takes a number of commits", offload__historyDepth="deep")


def test_the_stack_goes_into_the_default_names_and_without_it_they_are_the_old_ones() -> None:
    from offload.stackconfig import stack_hash

    cos, linux = read_stack_config(GCE, "alice-cos"), read_stack_config(GCE, "alice-linux")
    assert cos.name_prefix == f"offload-dev-{stack_hash(DEV, 'alice-cos')}"
    assert cos.name_prefix != linux.name_prefix
    assert read_stack_config(GCE).name_prefix == f"offload-dev-{email_hash(DEV)}"
    assert read_stack_config({**GCE, "offload:namePrefix": "offload-mine"}, "alice-cos").name_prefix == "offload-mine"


def test_strict_host_keys_and_team_are_validated() -> None:
    assert read(GCE).strict_host_keys is False and read(GCE).team is None
    assert read(GCE, offload__strictHostKeys="true").strict_host_keys is True
    with pytest.raises(ConfigError, match="offload:strictHostKeys must be true or false"):
        read(GCE, offload__strictHostKeys="yes")
    shared = {"offload__network": "team-net", "offload__subnetwork": "team-subnet"}
    assert read(GCE, offload__team="core", **shared).team == "core"
    with pytest.raises(ConfigError, match="offload:team must be a team name"):
        read(GCE, offload__team="Core Team", **shared)
    with pytest.raises(ConfigError, match="offload:team needs offload:network and offload:subnetwork"):
        read(GCE, offload__team="core")
    with pytest.raises(ConfigError, match="offload:sshSourceRanges does not apply with offload:team"):
        read(GCE, offload__team="core", offload__sshSourceRanges=["10.8.0.0/16"], **shared)


def test_a_stack_deployed_under_the_old_names_is_not_renamed_by_accident() -> None:
    from offload.stack import check_names_kept
    from offload.stackconfig import legacy_name_prefix

    old = legacy_name_prefix(DEV)
    deployed = {"provider": "gce-cos", "workers": [{"name": f"{old}-0"}, {"name": f"{old}-1"}]}
    with pytest.raises(ConfigError) as refused:
        check_names_kept("alice", read_stack_config(GCE, "alice"), deployed)
    assert refused.value.line() == (
        f"stack 'alice' has workers named {old}-*, and its config would now name them "
        f"{default_name_prefix(DEV, 'alice')}-*: deploying would replace every resource it named (keep the names "
        f"with `pulumi config set offload:namePrefix {old} --stack alice` (or offload:namePrefix: {old} in its stack "
        "file))")
    # With the old prefix set, a new stack, or one already under the new names, there is nothing to refuse.
    check_names_kept("alice", read_stack_config({**GCE, "offload:namePrefix": old}, "alice"), deployed)
    check_names_kept("alice", read_stack_config(GCE, "alice"), {})
    new = default_name_prefix(DEV, "alice")
    check_names_kept("alice", read_stack_config(GCE, "alice"), {"workers": [{"name": f"{new}-0"}]})
