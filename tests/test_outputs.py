"""The stack-outputs contract: parsing, validation with messages that name the field, and round trips."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from offload.errors import ConfigError
from offload.outputs import SCHEMA_PATH, ProviderType, StackOutputs, WorkerRecord, local_outputs
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


# --- the reader and the JSON Schema say the same ------------------------------------------------------------------

SCHEMA = json.loads(SCHEMA_PATH.read_text())
DOCS = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"
# Rules the schema cannot say (docs/outputs.md): there the reader is the last word.
READER_ONLY = {"duplicate names"}
BASE = {"provider": "ssh", "developer": "dev@example.com",
        "workers": [{"name": "w", "host": "h", "workspace": "/w"}]}
_FIELD_CASES: dict[str, list[Any]] = {
    "name": ["", None, 5, "w\n", "a b", ".w", "w.x", "x" * 63, "x" * 64],
    "host": ["", None, 5, "h\n", "h;rm", "[::1]", "x" * 253, "x" * 254],
    "workspace": ["", None, 5, "rel", "/", "/w\n", "/w\tx", "/w\x7f", "/a/../b", "/a/..", "/a/.../b"],
    "port": [None, 0, 1, 65535, 65536, -1, "22", True, 22.0, 22.5],
    "user": [None, "", 5, "u\n", "a b", "_u", "x" * 64, "x" * 65],
    "container": [None, "", 5, "c\n", "_c", "x" * 128, "x" * 129],
    "instance": [None, "", 5, "i"],
    "proxy_command": [None, "", 5, "ssh -W %h:%p bastion", "a\nb"],
    "image": [None, "", "offload-worker:latest"],
    "host_keys": [None, [], "k", [5], [KEY], [KEY + " c"], [KEY + "\tc"], ["  " + KEY], [KEY.replace(" ", " \t ")],
                  [KEY + "\n"], [KEY + " a\nb"], ["ssh-dss AAAA"], ["ssh-ed25519 AAAA=x"], ["ssh-ed25519"]],
    "hourly_cost_usd": [None, 0, 0.5, -1, "x", True],
    "idle_stop_minutes": [None, 0, 30, -1, "30", True, 30.0, 30.5],
    "keep_jobs": [None, 0, 3, -1, 3.0, 2.5],
    "warm_worktrees": [None, 0, 3.0, 2.5, False],
    "history_depth": [None, 1, 50, 50.0, 0, -1, 1_000_000, 1_000_001, 2.5, True, "full", "Full", "3", "", []],
    "future_field": [1, None],
}


def _corpus() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = [("contract example", CONTRACT_EXAMPLE), ("least", BASE)]
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S)
    cases += [(f"docs/outputs.md example {i}", json.loads(b)) for i, b in enumerate(blocks) if "..." not in b]
    for key, value in [("provider", "moon"), ("provider", None), ("developer", None), ("developer", ""),
                       ("developer", 5), ("developer", 0), ("developer", False), ("developer", []),
                       ("workers", []), ("workers", None), ("workers", {}), ("workers", ["w"]), ("extra", 1)]:
        cases.append((f"{key}={value!r}", {**BASE, key: value}))
    for key in ("provider", "developer", "workers"):
        cases.append((f"no {key}", {k: v for k, v in BASE.items() if k != key}))
    for key, values in _FIELD_CASES.items():
        cases += [(f"workers[0].{key}={v!r}", {**BASE, "workers": [{**BASE["workers"][0], key: v}]}) for v in values]
    for key in ("name", "host", "workspace"):
        worker = {k: v for k, v in BASE["workers"][0].items() if k != key}
        cases.append((f"no workers[0].{key}", {**BASE, "workers": [worker]}))
    cases.append(("duplicate names", {**BASE, "workers": BASE["workers"] * 2}))
    cases.append(("not an object", ["ssh"]))
    return cases


def _ecma_end(pattern: str) -> str:
    """PATTERN with each `$` that is an anchor made `\\Z`: the end of the text, as in ECMA-262."""
    out, escaped, in_class = [], False, False
    for c in pattern:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == "[":
            in_class = True
        elif c == "]":
            in_class = False
        elif c == "$" and not in_class:
            c = "\\Z"
        out.append(c)
    return "".join(out)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """`pattern` as JSON Schema means it (ECMA-262, where `$` is the end of the text), not as Python's re reads
    it (`$` also before a final newline), which the jsonschema package uses."""
    if validator.is_type(instance, "string") and not re.search(_ecma_end(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


SCHEMA_VALIDATOR = jsonschema.validators.extend(jsonschema.validators.validator_for(SCHEMA),
                                                {"pattern": _ecma_pattern})(SCHEMA)


def test_the_corpus_holds_both_kinds() -> None:
    verdicts = [SCHEMA_VALIDATOR.is_valid(data) for _, data in _corpus()]
    assert verdicts.count(True) >= 30 and verdicts.count(False) >= 50


@pytest.mark.parametrize(("case", "data"), _corpus(), ids=[case for case, _ in _corpus()])
def test_the_reader_and_the_schema_agree(case: str, data: Any) -> None:
    SCHEMA_VALIDATOR.check_schema(SCHEMA)
    try:
        StackOutputs.from_dict(copy.deepcopy(data))
        read = True
    except ConfigError:
        read = False
    assert read == (SCHEMA_VALIDATOR.is_valid(data) and case not in READER_ONLY)
