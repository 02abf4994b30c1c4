"""The stack-outputs contract: parsing, validation with messages that name the field, and round trips."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from offload.errors import ConfigError
from offload.outputs import ProviderType, StackOutputs, WorkerRecord, local_outputs
from offload.runtime.hostkeys import KnownHosts, host_id

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE9pOv8ZbVm7V0b1lHn2wVJkG1mL5C0jz3I9q9b6g4kQ"
CONTRACT_EXAMPLE = {
    "provider": "gce-cos",
    "developer": "dev@example.com",
    "workers": [{
        "name": "offload-dev-0", "host": "10.10.0.2", "port": 22, "user": "dev_example_com",
        "container": "offload-worker", "workspace": "/mnt/disks/data/offload",
        "instance": "offload-dev-0", "project": "p", "zone": "us-west1-a",
        "host_keys": [KEY + " root@worker"], "proxy_command": None,
    }],
}


def test_the_documented_example_parses_and_round_trips() -> None:
    outputs = StackOutputs.from_dict(CONTRACT_EXAMPLE)
    assert outputs.provider is ProviderType.GCE_COS and outputs.provider.is_gce
    (w,) = outputs.workers
    assert (w.name, w.host, w.port, w.user, w.container) == ("offload-dev-0", "10.10.0.2", 22, "dev_example_com",
                                                            "offload-worker")
    assert w.host_keys == (KEY,), "the comment is dropped, the key kept"
    again = StackOutputs.from_dict(json.loads(json.dumps(outputs.to_dict())))
    assert again == outputs


def test_unknown_fields_are_ignored_and_empty_strings_mean_unset() -> None:
    data = json.loads(json.dumps(CONTRACT_EXAMPLE))
    data["workers"][0].update({"future_field": 1, "proxy_command": "", "container": ""})
    (w,) = StackOutputs.from_dict(data).workers
    assert w.proxy_command is None and w.container is None


def test_a_null_port_or_user_stays_null_for_the_runtime_to_take_from_ssh_config() -> None:
    data = {"provider": "ssh", "developer": "", "workers": [{"name": "w", "host": "devbox", "workspace": "/w",
                                                             "port": None, "user": None}]}
    (w,) = StackOutputs.from_dict(data).workers
    assert (w.port, w.user) == (None, None)
    assert (w.to_dict()["port"], w.to_dict()["user"]) == (None, None)
    (absent,) = StackOutputs.from_dict({**data, "workers": [{"name": "w", "host": "h", "workspace": "/w"}]}).workers
    assert absent.port is None


@pytest.mark.parametrize(("change", "message"), [
    ({"provider": "moon"}, "provider must be one of gce-cos, gce-linux, workstation, local-docker, ssh, local"),
    ({"workers": []}, "workers must be a non-empty list"),
    ({"workers": [{"name": "w", "host": "h"}]}, "workers[0] is missing workspace"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "relative/path"}]}, "workspace must be an absolute path"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "port": 70000}]}, "port must be an integer"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "port": "22"}]}, "port must be an integer"),
    ({"workers": [{"name": "a b", "host": "h", "workspace": "/w"}]}, "workers[].name must be"),
    ({"workers": [{"name": "w", "host": "h;rm", "workspace": "/w"}]}, "host must be a hostname"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "user": "a b"}]}, "user must be a login name"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "host_keys": "ssh-ed25519 AAAA"}]},
     "host_keys must be a list"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "host_keys": ["ssh-dss AAAA"]}]},
     "public key line"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w"}, {"name": "w", "host": "g", "workspace": "/w"}]},
     "duplicate names: w"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w\tx"}]}, "without control characters"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "hourly_cost_usd": "cheap"}]},
     "hourly_cost_usd must be a number of dollars or null; got 'cheap'"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "hourly_cost_usd": float("nan")}]},
     "hourly_cost_usd must be a number"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "hourly_cost_usd": -1}]},
     "hourly_cost_usd must be a number"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "idle_stop_minutes": "30"}]},
     "idle_stop_minutes must be a whole number of minutes or null"),
    # A final newline does not end a name: each rule holds for the whole text.
    ({"workers": [{"name": "w\n", "host": "h", "workspace": "/w"}]}, "workers[].name must be"),
    ({"workers": [{"name": "w", "host": "h\n", "workspace": "/w"}]}, "host must be a hostname"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "user": "u\n"}]}, "user must be a login name"),
    ({"workers": [{"name": "w", "host": "h", "workspace": "/w", "container": "c\n"}]}, "container must be"),
])
def test_bad_outputs_name_the_field(change: dict, message: str) -> None:
    data = dict(CONTRACT_EXAMPLE, **change)
    with pytest.raises(ConfigError) as e:
        StackOutputs.from_dict(data)
    assert message in e.value.line()


def test_loading_a_file_reports_the_file_and_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read outputs file"):
        StackOutputs.load(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "provider": "ssh",\n  oops\n}')
    with pytest.raises(ConfigError, match=r"not valid JSON: line 3"):
        StackOutputs.load(bad)


def test_worker_lookup_lists_the_names_on_a_miss() -> None:
    outputs = StackOutputs.from_dict(CONTRACT_EXAMPLE)
    assert outputs.worker("offload-dev-0").instance == "offload-dev-0"
    with pytest.raises(ConfigError, match="no worker named 'x'; this stack has offload-dev-0"):
        outputs.worker("x")


def test_local_outputs_default_to_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))
    (w,) = local_outputs().workers
    assert w.name == "local" and w.workspace == str(tmp_path / "cache" / "local") and w.container is None


def test_known_hosts_is_private_openssh_format_and_idempotent(tmp_path: Path) -> None:
    known = KnownHosts(tmp_path / "cfg" / "known_hosts")
    name = host_id("10.0.0.1", 2222)
    assert name == "[10.0.0.1]:2222" and host_id("10.0.0.1", 22) == "10.0.0.1"
    known.add(name, KEY + " comment")
    known.add(name, KEY)
    assert known.lookup(name) == [KEY]
    assert known.path.read_text() == f"{name} {KEY}\n"
    assert stat.S_IMODE(os.stat(known.path).st_mode) == 0o600
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBt4zQ0mJ9n0d3a7v3s5m4q1n6b8k2c9x0z7y5w3u1t2"
    known.replace(name, [other])
    assert known.lookup(name) == [other]
    with pytest.raises(ConfigError):
        known.add(name, "not a key")
