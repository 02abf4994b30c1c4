"""The Typer app as a library: complete on import, usable through Typer's CliRunner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from offload.cli.app import app

COMMANDS = ("run", "status", "logs", "attach", "shell", "check", "clean", "fleet", "init", "ssh-config")


def test_every_command_is_registered_on_import() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f" {command} " in result.output


def test_status_json_on_the_default_local_worker() -> None:
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    (worker,) = json.loads(result.output)["workers"]
    assert worker["name"] == "local" and worker["state"] == "running" and worker["jobs"] == []


def test_the_detach_keys_depend_on_whether_the_user_is_inside_tmux(monkeypatch) -> None:
    from offload.cli.ui import attach_note, detach_keys

    monkeypatch.delenv("TMUX", raising=False)
    assert detach_keys() == "C-b d"
    assert attach_note("j1") == "attaching to job j1; detach with C-b d, and the job keeps running"
    monkeypatch.setenv("TMUX", "/tmp/tmux-0/default,123,0")
    assert detach_keys() == "C-b C-b d"
