"""`offload outputs`, and where --stack finds a stack: ssh and local stacks straight from their file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from offload.outputs import SCHEMA_PATH
from tests.cli.conftest import RunCli

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "stacks"


@pytest.fixture
def stacks(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """offload's config directory as a stack directory holding the example ssh and local stacks; no pulumi CLI."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    root = isolated_home / ".config" / "offload"
    (root / "stacks").mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", root)
    for name in ("erin-ssh", "frank-local", "alice-cos"):
        shutil.copy(EXAMPLES / f"Pulumi.{name}.yaml", root / "stacks")
    return root / "stacks"


def test_outputs_of_an_ssh_stack_need_no_pulumi(cli: RunCli, stacks: Path) -> None:
    r = cli("outputs", "--stack", "erin-ssh")
    assert (r.exit_code, r.stderr) == (0, "")
    data = json.loads(r.stdout)
    assert (data["provider"], data["developer"]) == ("ssh", "erin@example.com")
    assert [(w["name"], w["host"], w["port"], w["container"]) for w in data["workers"]] == [
        ("buildbox", "buildbox.internal.example.com", 22, None), ("gpu", "10.20.0.15", 2222, "offload-worker")]


def test_outputs_of_a_local_stack_and_the_environment(cli: RunCli, stacks: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_STACK", "frank-local")
    r = cli("outputs")
    assert r.exit_code == 0, r.stderr
    [worker] = json.loads(r.stdout)["workers"]
    assert (worker["name"], worker["workspace"]) == ("local", "/var/tmp/offload-frank")


def test_what_outputs_prints_is_an_outputs_file(cli: RunCli, stacks: Path, tmp_path: Path) -> None:
    printed = cli("outputs", "--stack", "erin-ssh").stdout
    (tmp_path / "out.json").write_text(printed)
    again = cli("outputs", "--outputs", str(tmp_path / "out.json"))
    assert (again.exit_code, again.stdout) == (0, printed)


def test_a_cloud_stack_needs_pulumi(cli: RunCli, stacks: Path) -> None:
    r = cli("outputs", "--stack", "alice-cos")
    assert r.exit_code == 6
    assert r.stderr.startswith("offload: cannot read stack 'alice-cos': the pulumi CLI is not installed")


def test_fleet_up_of_a_stack_that_creates_nothing_says_no_pulumi_is_needed(cli: RunCli, stacks: Path) -> None:
    r = cli("fleet", "up", "--stack", "erin-ssh")
    assert (r.exit_code, r.stderr) == (6, "offload: cannot deploy stack 'erin-ssh': the pulumi CLI is not installed "
                                          "(provider ssh creates nothing and needs no Pulumi: `offload run --stack "
                                          "erin-ssh -- COMMAND` reads its file)\n")


def test_a_bad_stack_file_names_the_file_and_the_key(cli: RunCli, stacks: Path) -> None:
    (stacks / "Pulumi.bad.yaml").write_text("config:\n  offload:provider: ssh\n")
    r = cli("run", "--stack", "bad", "--", "true")
    assert (r.exit_code, r.stderr) == (2, f"offload: stack file {stacks}/Pulumi.bad.yaml: offload:hosts is required "
                                          "for provider ssh: a list of {name, host, port, user, container, "
                                          "workspace, host_keys}\n")


def test_a_stack_file_given_as_outputs_says_what_to_pass(cli: RunCli, stacks: Path) -> None:
    r = cli("run", "--outputs", str(EXAMPLES / "Pulumi.erin-ssh.yaml"), "--", "true")
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == (f"offload: outputs file {EXAMPLES}/Pulumi.erin-ssh.yaml is a stack file, not stack outputs "
                        f"(pass --stack erin-ssh instead; stack files are read from {stacks})\n")


def test_schema_is_printed_from_the_package(cli: RunCli) -> None:
    r = cli("outputs", "--schema")
    assert r.exit_code == 0
    assert r.stdout == SCHEMA_PATH.read_text()
    assert json.loads(r.stdout)["required"] == ["provider", "workers"]
