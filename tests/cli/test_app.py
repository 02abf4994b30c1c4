"""The Typer app as a library: complete on import, usable through Typer's CliRunner."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from offload import errors
from offload.cli.app import EXIT_CODES, WAIT_FAILURE_BASE, app
from tests.cli.conftest import RunCli

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


def test_help_ends_with_every_exit_code_offload_gives() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    epilog = " ".join(result.output[result.output.index("Exit codes:"):].split())
    assert epilog.startswith("Exit codes: 0 success 1 a failure")
    for code, meaning in EXIT_CODES.items():
        assert f" {code} {meaning}" in epilog
    assert "run --wait: the job's own exit code, and 200 + N for offload's own failure N" in epilog
    # Every exit code an error of offload's can carry is one the epilog explains.
    raised = {cls.exit_code for cls in _subclasses(errors.OffloadError) if cls.__module__.startswith("offload.")}
    assert raised <= set(EXIT_CODES), sorted(raised - set(EXIT_CODES))


def _subclasses(cls: type) -> set[type]:
    import offload.runtime.results  # noqa: F401  (ResultUnverified and the apply errors live outside errors.py)
    import offload.runtime.apply  # noqa: F401

    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


@pytest.mark.parametrize(("args", "code"), [
    (["run", "--wait", "--", "true"], WAIT_FAILURE_BASE + 2),     # offload's own failure under --wait
    (["run", "--", "true"], 2),
    (["run", "--wait", "--bogus", "--", "true"], WAIT_FAILURE_BASE + 2),  # a line the parser refused
    (["run", "--wait", "--keep-jobs", "x", "--", "true"], WAIT_FAILURE_BASE + 2),
    (["run", "--bogus", "--", "true"], 2),
    (["run", "echo", "--wait"], 2),  # that --wait is the command's, as the parser read it
    (["status", "--wait"], 2),
])
def test_offloads_own_failures_under_run_wait_exit_200_plus_their_code(cli: RunCli, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       args: list[str], code: int) -> None:
    monkeypatch.chdir(tmp_path)  # not a repository: `run` fails before dialling anything
    result = cli(*args)
    assert result.exit_code == code, result.stderr


def test_one_invocations_wait_does_not_reach_the_next(cli: RunCli, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that runs several command lines (the warm server's children, tests) judges each on its own."""
    monkeypatch.chdir(tmp_path)
    assert cli("run", "--wait", "--", "true").exit_code == WAIT_FAILURE_BASE + 2
    assert cli("outputs", "--outputs", str(tmp_path / "missing.json")).exit_code == 2


def test_no_command_module_imports_the_composed_app() -> None:
    """Each command module owns its Typer app and app.py composes them: nothing it composes imports it back."""
    import offload.cli.app as composed

    for name, module in vars(composed).items():
        if inspect.ismodule(module) and module.__name__.startswith("offload.cli."):
            source = Path(module.__file__ or "").read_text()
            assert "offload.cli.app" not in source, f"{module.__name__} imports the app that composes it"
