"""The Typer app as a library: complete on import, usable through Typer's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_help_stays_fast_and_free_of_pulumi() -> None:
    code = ("import sys, offload.cli.app; "
            "bad = [m for m in ('pulumi', 'pulumi_gcp', 'google.cloud', 'fabric', 'paramiko') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
