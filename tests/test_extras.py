"""The light core and its extras: what pyproject.toml installs for each, where the package may import an extra's
modules, and the one line (exit 2) a command gives when the extra it needs is not installed.

Here every extra is installed, so a missing one is made by blocking its module for the test (a `None` in
`sys.modules` is Python's own "cannot be imported"); tests/test_install.py checks the real core install.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from offload import extras
from offload.errors import MissingExtra
from offload.extras import Extra
from offload.outputs import ProviderType, StackOutputs, local_outputs

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "offload"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# The distribution that installs each module offload imports from an extra.
DISTRIBUTION = {"pulumi": "pulumi", "pulumi_gcp": "pulumi-gcp", "pulumi_docker": "pulumi-docker",
                "google.cloud.compute_v1": "google-cloud-compute", "google.cloud.oslogin_v1": "google-cloud-os-login"}
EXTRA_TOPS = ("pulumi", "pulumi_gcp", "pulumi_docker", "google")
GCE_OUTPUTS = {"provider": "gce-cos", "developer": "dev@example.com", "workers": [
    {"name": "offload-dev-0", "host": "10.10.0.2", "port": 22, "user": "dev_example_com", "container": "offload-worker",
     "workspace": "/mnt/disks/data/offload", "instance": "offload-dev-0", "project": "p", "zone": "us-west1-a"}]}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def _block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_the_core_installs_no_pulumi_or_google_package() -> None:
    core = _names(PROJECT["dependencies"])
    assert not {n for n in core if n.startswith(("pulumi", "google"))}, core
    assert {"fabric", "paramiko", "pyyaml", "typer", "rich", "mcp"} <= core


@pytest.mark.parametrize("extra", list(Extra))
def test_each_extra_installs_what_its_check_looks_for(extra: Extra) -> None:
    assert _names(PROJECT["optional-dependencies"][extra.value]) == {DISTRIBUTION[m] for m in extras.MODULES[extra]}


def test_all_holds_every_extra_and_dev_holds_all() -> None:
    optional = {name: set(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    assert optional["all"] == optional["gcp"] | optional["docker"]
    assert optional["all"] <= optional["dev"]
    assert {"pytest", "pytest-timeout"} <= _names(PROJECT["optional-dependencies"]["dev"])


def test_every_provider_type_is_covered() -> None:
    """A provider type that needs nothing beyond the core is one the core's own tests run (tests/test_install.py)."""
    assert {p.value for p in ProviderType} - set(extras.DEPLOY) == {"ssh", "local"}
    assert {p.value for p in ProviderType} - set(extras.RUN) == {"ssh", "local", "local-docker"}


def _module_level_imports(path: Path) -> list[tuple[int, str]]:
    """The imports a module runs when it is imported: top level, and in top-level if/try (not TYPE_CHECKING)."""
    found: list[tuple[int, str]] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend((node.lineno, a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.lineno, node.module))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(ast.parse(path.read_text(), str(path)).body)
    return found


def test_only_the_pulumi_program_imports_an_extra_at_module_level() -> None:
    """Everything but offload/infra (imported once the extra is checked) loads on a core install."""
    wrong = [f"{path.relative_to(REPO)}:{line} imports {name}"
             for path in sorted(PACKAGE.rglob("*.py")) if "infra" not in path.relative_to(PACKAGE).parts
             for line, name in _module_level_imports(path) if name.split(".")[0] in EXTRA_TOPS]
    assert not wrong, "\n".join(wrong)


def test_the_module_level_scan_sees_an_import(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pulumi\n"
                    "try:\n    import pulumi_gcp\nexcept ImportError:\n    pass\n"
                    "def f():\n    import google.cloud\n")
    assert _module_level_imports(path) == [(1, "typing"), (5, "pulumi_gcp")]


def test_an_installed_extra_passes_and_a_blocked_module_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    for extra in Extra:
        extras.require(extra, "this")
    _block(monkeypatch, "google.cloud.oslogin_v1")
    assert extras.missing(Extra.GCP) == ("google.cloud.oslogin_v1",)
    assert extras.missing(Extra.DOCKER) == ()
    with pytest.raises(MissingExtra) as raised:
        extras.require(Extra.GCP, "this")
    assert (raised.value.line(), raised.value.exit_code, raised.value.extra) == (
        "this needs `pip install 'offload[gcp]'`", 2, "gcp")


def test_a_module_whose_parent_package_is_missing_is_not_installed() -> None:
    assert not extras.installed("no_such_package_offload.sub")
    assert extras.installed("yaml")


@pytest.mark.parametrize("provider", ["gce-cos", "gce-linux", "workstation"])
def test_a_gcp_worker_without_the_gcp_extra_says_which_to_install(provider: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from offload.providers import provider_for

    _block(monkeypatch, "google.cloud.compute_v1")
    outputs = StackOutputs.from_dict({**GCE_OUTPUTS, "provider": provider})
    with pytest.raises(MissingExtra) as raised:
        provider_for(outputs, outputs.workers[0])
    assert raised.value.line() == f"this stack's provider {provider} needs `pip install 'offload[gcp]'`"


def test_core_workers_need_no_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from offload.providers import provider_for

    _block(monkeypatch, "pulumi", "pulumi_gcp", "pulumi_docker", "google.cloud.compute_v1",
           "google.cloud.oslogin_v1")
    local = local_outputs("/nonexistent/offload")
    assert provider_for(local, local.workers[0]).kind is ProviderType.LOCAL
    docker = StackOutputs.from_dict({"provider": "local-docker", "developer": "", "workers": [
        {"name": "w", "host": "localhost", "container": "offload-w", "workspace": "/ws"}]})
    assert provider_for(docker, docker.workers[0]).kind is ProviderType.LOCAL_DOCKER


def _stack_dir(tmp_path: Path, provider: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from offload.stack import PROJECT_FILE

    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text(PROJECT_FILE)
    config = {"offload:provider": provider, "offload:developer": "dev@example.com", "gcp:project": "p",
              "gcp:zone": "us-west1-a", "gcp:region": "us-west1"}
    (tmp_path / "stacks" / "Pulumi.dev.yaml").write_text(json.dumps({"config": config}))
    monkeypatch.setenv("OFFLOAD_PROJECT_DIR", str(tmp_path))
    return "dev"


@pytest.mark.parametrize(("provider", "blocked", "extra"), [
    ("gce-cos", "pulumi_gcp", "gcp"), ("workstation", "google.cloud.compute_v1", "gcp"),
    ("local-docker", "pulumi_docker", "docker")])
def test_reading_or_deploying_a_stack_names_the_extra_before_the_pulumi_cli(
        provider: str, blocked: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The extra is named first even with no pulumi CLI on PATH: installing the CLI alone would not do."""
    from offload.stack import select_stack, stack_outputs

    stack = _stack_dir(tmp_path, provider, monkeypatch)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    _block(monkeypatch, blocked)
    line = f"this stack's provider {provider} needs `pip install 'offload[{extra}]'`"
    for call in (lambda: stack_outputs(stack), lambda: select_stack(stack, create=True)):
        with pytest.raises(MissingExtra) as raised:
            call()
        assert raised.value.line() == line


def test_a_stack_file_with_a_secret_is_still_read_for_its_provider(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Deploying reads only the provider type from the file: its secrets are Pulumi's to read."""
    from offload.stack import select_stack

    stack = _stack_dir(tmp_path, "gce-cos", monkeypatch)
    path = tmp_path / "stacks" / "Pulumi.dev.yaml"
    data = json.loads(path.read_text())
    data["config"]["offload:token"] = {"secure": "AAABAxyz"}
    path.write_text(json.dumps(data))
    _block(monkeypatch, "pulumi_gcp")
    with pytest.raises(MissingExtra) as raised:
        select_stack(stack, create=True)
    assert raised.value.line() == "this stack's provider gce-cos needs `pip install 'offload[gcp]'`"


def test_deploying_an_ssh_stack_without_pulumi_says_it_needs_none(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from offload.stack import select_stack

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_cli = bin_dir / "pulumi"  # only found on PATH, never run: the check comes first
    fake_cli.write_text("#!/bin/sh\nexit 1\n")
    fake_cli.chmod(0o755)
    (tmp_path / "project").mkdir()
    stack = _stack_dir(tmp_path / "project", "local", monkeypatch)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    _block(monkeypatch, "pulumi")
    with pytest.raises(MissingExtra) as raised:
        select_stack(stack, create=True, what="cannot deploy stack 'dev'")
    assert raised.value.exit_code == 2
    assert raised.value.line().startswith("cannot deploy stack 'dev': Pulumi needs `pip install 'offload[gcp]'`")
    assert "provider local creates nothing and needs no Pulumi" in raised.value.line()


def test_a_slipped_import_becomes_the_extras_line() -> None:
    lines = {name: extras.missing_module_error(ModuleNotFoundError(name=name)) for name in
             ("pulumi_gcp.compute", "google.cloud", "pulumi_docker", "pulumi", "yaml")}
    assert lines["yaml"] is None
    assert lines["pulumi_gcp.compute"].line() == ("this command needs `pip install 'offload[gcp]'` "
                                                   "(no module pulumi_gcp.compute)")
    assert lines["google.cloud"].extra == "gcp" and lines["pulumi_docker"].extra == "docker"
    assert "offload[gcp]" in lines["pulumi"].line() and "offload[docker]" in lines["pulumi"].line()


BLOCKED_CLI = ("import sys\n"
               "for m in {blocked!r}:\n"
               "    sys.modules[m] = None\n"
               "from offload.cli.app import main\n"
               "main({argv!r})\n")


def _cli(argv: list[str], blocked: tuple[str, ...], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKED_CLI.format(blocked=blocked, argv=argv)], cwd=cwd,
                          env={**env, "PYTHONPATH": str(REPO), "OFFLOAD_PERSIST": "0"},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("argv", [["status", "--outputs", "gce.json"], ["fleet", "list", "--outputs", "gce.json"],
                                  ["run", "--outputs", "gce.json", "--", "true"]])
def test_the_cli_exits_2_with_one_line_naming_the_extra(argv: list[str], isolated_home: Path,
                                                        tmp_path: Path) -> None:
    (tmp_path / "gce.json").write_text(json.dumps(GCE_OUTPUTS))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, timeout=30)
    result = _cli(argv, ("google.cloud.compute_v1", "pulumi_gcp"), tmp_path, dict(os.environ))
    assert (result.returncode, result.stderr) == (
        2, "offload: this stack's provider gce-cos needs `pip install 'offload[gcp]'`\n"), result.stdout


def test_init_of_a_gcp_stack_without_the_extra_names_it_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from offload.cli.init import next_step

    assert "offload[gcp]" not in next_step("dev", ProviderType.GCE_COS)
    _block(monkeypatch, "pulumi_gcp")
    line = next_step("dev", ProviderType.GCE_COS)
    assert line.startswith("next: pip install 'offload[gcp]'") and line.endswith("offload fleet up --stack dev")


def _make_dry_run(target: str) -> list[str]:
    result = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_demo_installs_the_core_and_the_tests_install_everything() -> None:
    """The README's first command (`./dev demo` -> `make demo`) installs no extra; `make test` (and CI's
    `./dev venv`) installs `dev`, which holds them all."""
    demo = [line for line in _make_dry_run("demo") if " install " in line]
    assert len(demo) == 1 and "-e . " in demo[0] and "[" not in demo[0], demo
    assert any("offload run --wait" in line for line in _make_dry_run("demo"))
    for target in ("venv", "test"):
        installs = [line for line in _make_dry_run(target) if "pip install" in line]
        assert installs and all("'.[dev]'" in line for line in installs), installs
