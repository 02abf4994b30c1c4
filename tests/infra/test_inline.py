"""The packaged program: what the Automation API runs inline (so an installed offload needs no checkout), the
stacks that need no Pulumi at all, and the JSON Schema of what every stack exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from offload.infra.program import program
from offload.outputs import SCHEMA_PATH, StackOutputs
from offload.stack import PROJECT_FILE, StackDir, read_stack_file, stack_outputs
from offload.stackconfig import read_stack_config, static_outputs
from tests.fakes.pulumi_cli import fake_pulumi_on_path
from tests.infra.conftest import STACK_FILES, stack_file
from tests.infra.mocks import REPO, run_program, stack_config

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def _without_hosts(outputs: dict[str, Any]) -> dict[str, Any]:
    """OUTPUTS without what differs between two runs: the mocks' addresses and the time of the run."""
    return {**outputs, "workers": [{**w, "host": None} for w in outputs["workers"]],
            "deployed_at": "deployed_at" in outputs}


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_the_inline_program_is_the_checkouts_program(path: Path) -> None:
    config = stack_config(path)
    by_checkout = run_program(config)
    inline = run_program(config, inline=program)
    # The mocks hand out addresses in the order resources resolve, which is not fixed: compare them as a set.
    assert _without_hosts(inline.outputs) == _without_hosts(by_checkout.outputs)
    assert sorted(w["host"] for w in inline.outputs["workers"]) == \
        sorted(w["host"] for w in by_checkout.outputs["workers"])
    assert sorted((d.typ, d.name) for d in inline.declared) == sorted((d.typ, d.name) for d in by_checkout.declared)


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_stack_exports_what_the_schema_says(path: Path) -> None:
    outputs = run_program(stack_config(path), inline=program).outputs
    jsonschema.validate(outputs, SCHEMA)


@pytest.mark.parametrize("provider", ["ssh", "local"])
@pytest.mark.parametrize("retention", [{}, {"offload:keepJobs": 3, "offload:warmWorktrees": 1},
                                       {"offload:historyDepth": 20}])
def test_static_stacks_give_the_programs_outputs_without_pulumi(provider: str, retention: dict[str, Any]) -> None:
    config = {**stack_config(stack_file(provider)), **retention}
    assert static_outputs(read_stack_config(config)).to_dict() == run_program(config).outputs


def test_stack_outputs_reads_an_ssh_stack_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stacks").mkdir()
    shutil.copy(REPO / "Pulumi.yaml", tmp_path)
    shutil.copy(stack_file("ssh"), tmp_path / "stacks" / "Pulumi.erin.yaml")
    monkeypatch.setenv("OFFLOAD_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert stack_outputs("erin") == run_program(stack_config(stack_file("ssh"))).outputs
    jsonschema.validate(stack_outputs("erin"), SCHEMA)


def test_a_stack_file_key_without_namespace_is_the_projects(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.s.yaml"
    path.write_text("config:\n  provider: local\n  offload:workspace: /srv/w\n  gcp:project: p\n")
    assert read_stack_file(path) == {"offload:provider": "local", "offload:workspace": "/srv/w", "gcp:project": "p"}


def test_the_checkout_is_a_stack_directory() -> None:
    where = StackDir(REPO)
    where.check()
    assert where.stack_file("erin-ssh") == REPO / "stacks" / "Pulumi.erin-ssh.yaml"


def test_the_schema_rejects_what_the_contract_rejects() -> None:
    good = {"provider": "ssh", "workers": [{"name": "box", "host": "box.example.com", "workspace": "/srv/offload"}]}
    jsonschema.validate(good, SCHEMA)
    StackOutputs.from_dict(good)
    for bad in ({**good, "provider": "aws"}, {**good, "workers": []},
                {**good, "workers": [{"name": "box", "host": "box", "workspace": "srv"}]},
                {**good, "workers": [{"name": "box", "host": "box", "workspace": "/srv/../etc"}]},
                {**good, "workers": [{"name": "box", "host": "box", "workspace": "/srv", "port": "22"}]},
                {**good, "workers": [{"name": "box", "host": "box", "workspace": "/srv", "host_keys": ["nope"]}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)
        with pytest.raises(Exception):
            StackOutputs.from_dict(bad)


def _calls(fake: Path) -> list[tuple[str, str]]:
    """The fake CLI's calls past `version`, as (directory, arguments)."""
    calls = [line.partition("|") for line in (fake / "calls").read_text().splitlines()]
    return [(where, args) for where, _, args in calls if args != "version"]


def test_fleet_selects_or_creates_the_stack_in_offloads_config_directory_with_the_packaged_program(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    from offload.stack import select_stack

    fake = fake_pulumi_on_path(tmp_path, monkeypatch)
    config = isolated_home / ".config" / "offload"
    (config / "stacks").mkdir(parents=True)
    shutil.copy(stack_file("gce-cos"), config / "stacks" / "Pulumi.dev.yaml")
    stack = select_stack("dev", create=True)
    # The pulumi CLI works in offload's config directory, made a stack directory of project offload on the way.
    assert _calls(fake) == [(str(config), "--non-interactive stack select --stack dev"),
                            (str(config), "--non-interactive stack init dev")]
    assert (config / "Pulumi.yaml").read_text() == PROJECT_FILE
    assert stack.name == "dev" and stack.workspace.program is program
    # Selected again, with or without create, the stack is there and is not created twice.
    for create in (True, False):
        again = select_stack("dev", create=create)
        assert again.workspace.program is program and again.workspace.work_dir == str(config)
    assert _calls(fake)[2:] == [(str(config), "--non-interactive stack select --stack dev")] * 2


def test_fleet_up_needs_the_stack_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    from offload.errors import ConfigError
    from offload.stack import select_stack

    fake_pulumi_on_path(tmp_path, monkeypatch)
    config = isolated_home / ".config" / "offload"
    config.mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", config)
    with pytest.raises(ConfigError) as caught:
        select_stack("dev", create=True, what="cannot deploy stack 'dev'")
    assert caught.value.line() == (f"cannot deploy stack 'dev': there is no stack file {config}/stacks/Pulumi.dev.yaml "
                                   "(create it with `offload init --stack dev`)")


def test_stacks_that_create_nothing_need_no_developer() -> None:
    config = read_stack_config({"offload:provider": "local", "offload:workspace": "/srv/w"})
    assert static_outputs(config).to_dict()["developer"] == ""
    assert run_program({"offload:provider": "local", "offload:workspace": "/srv/w"}).outputs == \
        static_outputs(config).to_dict()
    with pytest.raises(Exception, match="offload:developer is required"):
        read_stack_config({"offload:provider": "local-docker"})


@pytest.mark.parametrize("verb", ["up", "preview"])
def test_fleet_refuses_to_rename_a_stack_deployed_under_the_old_names(
        verb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from offload.cli.app import main
    from offload.stackconfig import legacy_name_prefix

    fake = fake_pulumi_on_path(tmp_path, monkeypatch)
    config = isolated_home / ".config" / "offload"
    (config / "stacks").mkdir(parents=True)
    shutil.copy(stack_file("gce-cos"), config / "stacks" / "Pulumi.dev.yaml")
    developer = read_stack_config(stack_config(stack_file("gce-cos"))).developer
    old = legacy_name_prefix(developer)
    (fake / "outputs").write_text(json.dumps({"provider": "gce-cos", "workers": [{"name": f"{old}-0"}]}))
    with pytest.raises(SystemExit) as exited:
        main(["fleet", verb, "--stack", "dev"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(f"offload: stack 'dev' has workers named {old}-*")
    assert not [args for _, args in _calls(fake) if args.split()[1:2] == [verb]], "pulumi was not asked to deploy"
