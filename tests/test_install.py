"""The core install (`pip install offload`, no extra) in a fresh virtualenv, not editable, with its dependencies
from the index as a user gets them: it holds no pulumi or google-cloud package, and on it a local job runs,
`offload mcp` answers, `init --provider ssh` works against a real sshd, and a GCE stack gets the one line that
names the extra (exit 2), from the CLI, the MCP server and the checkout's Pulumi program alike.

The virtualenv is built once per content of what goes into the package (pyproject.toml, README.md and every file
under offload/ that git would track, edits included) and the Python version, and kept under
/var/cache/offload/core-venvs/<that hash>: a change to any of them builds a new one, so a cached install never
hides a regression. Building it takes about a minute with a warm pip cache; a cached one, nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from offload.outputs import SCHEMA_PATH
from tests.workers import SshdWorker, make_repo

REPO = Path(__file__).resolve().parent.parent
PIP_CACHE = "/var/cache/offload/pip"  # as .ci/run sets it, when PIP_CACHE_DIR is not set
VENV_CACHE = Path("/var/cache/offload/core-venvs")
KEEP = 3  # cached virtualenvs kept beside the one in use (each about 75 MB), the most recently used first
IN_USE_SECONDS = 3600  # one used more recently than this may be another session's, and is never removed
INSTALL_TIMEOUT = 600
COMPLETE = ".offload-complete"  # written last: a virtualenv without it was cut short and is built again
EXTRA_PACKAGES = ("pulumi", "google-cloud", "google-api", "grpcio")
GCE_LINE = "offload: this stack's provider gce-cos needs `pip install 'offload[gcp]'`\n"
GCE_OUTPUTS = {"provider": "gce-cos", "developer": "dev@example.com", "workers": [
    {"name": "offload-dev-0", "host": "10.10.0.2", "port": 22, "user": "dev_example_com", "container": "offload-worker",
     "workspace": "/mnt/disks/data/offload", "instance": "offload-dev-0", "project": "p", "zone": "us-west1-a"}]}


@dataclass(frozen=True)
class Installed:
    venv: Path

    @property
    def offload(self) -> str:
        return str(self.venv / "bin" / "offload")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def site_packages(self) -> Path:
        return next((self.venv / "lib").glob("python3*/site-packages"))


def package_sources() -> list[str]:
    """What goes into the package, as paths relative to the repository: tracked and untracked-but-not-ignored."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                             "pyproject.toml", "README.md", "offload"], cwd=REPO, capture_output=True, check=True,
                            timeout=60).stdout.decode().split("\0")
    return sorted(name for name in listed if name and (REPO / name).is_file())


def source_key(files: list[str]) -> str:
    digest = hashlib.sha256(f"{sys.version}\0{sys.executable}\0".encode())
    for name in files:
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def build_core_venv(venv: Path, files: list[str]) -> None:
    """A fresh virtualenv at VENV with offload installed from a copy of FILES, without extras."""
    shutil.rmtree(venv, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="offload-core-src-") as tmp:
        source = Path(tmp) / "offload"
        for name in files:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT)
        env = {**os.environ, "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or PIP_CACHE,
               "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
        result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)], env=env,
                                capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    (venv / COMPLETE).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))


def _prune(root: Path, current: Path) -> None:
    """Remove all but the KEEP most recently used virtualenvs besides CURRENT, sparing any used lately."""
    others = sorted((d for d in root.iterdir() if d.is_dir() and d != current), key=lambda d: d.stat().st_mtime,
                    reverse=True)
    cutoff = time.time() - IN_USE_SECONDS
    for old in others[KEEP:]:
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
            old.with_name(f"{old.name}.lock").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    files = package_sources()
    try:
        VENV_CACHE.mkdir(parents=True, exist_ok=True)
        root = VENV_CACHE if os.access(VENV_CACHE, os.W_OK) else None
    except OSError:
        root = None
    if root is None:  # no shared cache here: build for this session alone
        venv = tmp_path_factory.mktemp("core") / "venv"
        build_core_venv(venv, files)
        return Installed(venv)
    venv = root / source_key(files)
    with open(root / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session building the same sources: wait for it, then share
        if not (venv / COMPLETE).is_file():
            build_core_venv(venv, files)
        os.utime(venv)
        _prune(root, venv)
    return Installed(venv)


@pytest.fixture
def user_env(isolated_home: Path, installed: Installed) -> dict[str, str]:
    """A user's environment: the installed offload first on PATH, and no pulumi CLI."""
    path = f"{installed.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    assert shutil.which("pulumi", path=path) is None
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PATH": path, "OFFLOAD_PERSIST": "0"}


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_the_core_holds_no_pulumi_or_google_cloud_package(installed: Installed, user_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    listed = _run([installed.python, "-m", "pip", "list", "--format", "json"], tmp_path, user_env)
    assert listed.returncode == 0, listed.stderr
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "offload" in names and {"fabric", "paramiko", "mcp", "typer"} <= names
    heavy = sorted(n for n in names if n.startswith(EXTRA_PACKAGES))
    assert heavy == [], heavy


def test_the_package_is_its_own(installed: Installed, user_env: dict[str, str], tmp_path: Path) -> None:
    where = _run([installed.python, "-c", "import offload.cli.app, offload.cli.mcpserver; print(offload.__file__)"],
                 tmp_path, user_env)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.site_packages())
    help_ = _run([installed.offload, "--help"], tmp_path, user_env)
    assert help_.returncode == 0 and "init" in help_.stdout and "outputs" in help_.stdout
    schema = _run([installed.offload, "outputs", "--schema"], tmp_path, user_env)
    assert (schema.returncode, schema.stdout) == (0, SCHEMA_PATH.read_text())
    package = installed.site_packages() / "offload"
    assert (package / "infra" / "program.py").is_file(), "the Pulumi program ships in the core, for the extras"
    assert not (package / "stacks").exists() and not (package.parent / "Pulumi.yaml").exists()


def test_a_local_job_runs_on_the_core(installed: Installed, user_env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "draft.txt").write_text("not committed\n")
    run = _run([installed.offload, "run", "--wait", "--", "sh", "-c", "cat file0.txt draft.txt"], repo, user_env)
    assert (run.returncode, run.stdout.splitlines()[-2:]) == (0, ["content 0", "not committed"]), run.stderr
    status = _run([installed.offload, "status", "--json"], repo, user_env)
    assert status.returncode == 0, status.stderr
    [worker] = json.loads(status.stdout)["workers"]
    assert worker["name"] == "local" and [j["state"] for j in worker["jobs"]] == ["success"]


MCP_CLIENT = """
import json, sys
import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

async def main():
    offload, repo = sys.argv[1], sys.argv[2]
    params = StdioServerParameters(command=offload, args=["mcp"], cwd=repo, env=json.loads(sys.stdin.read()))
    with anyio.fail_after(90):
        async with Client(params) as client:
            ran = await client.call_tool("run", {"command": "echo from-mcp", "wait_seconds": 40})
            status = await client.call_tool("status", {})
    print(json.dumps({"run": ran.structured_content, "run_error": ran.is_error,
                      "status": status.structured_content}))

anyio.run(main)
"""


def test_offload_mcp_answers_on_the_core(installed: Installed, user_env: dict[str, str], tmp_path: Path) -> None:
    """The test's own MCP client (the SDK's, as an agent runs it) drives the core's `offload mcp`."""
    repo = make_repo(tmp_path / "repo")
    result = subprocess.run([sys.executable, "-c", MCP_CLIENT, installed.offload, str(repo)],
                            input=json.dumps(user_env), capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert not answer["run_error"], answer
    assert (answer["run"]["worker"], answer["run"]["state"], answer["run"]["exit_code"]) == ("local", "success", 0)
    [worker] = answer["status"]["workers"]
    assert [j["id"] for j in worker["jobs"]] == [answer["run"]["id"]]


def test_init_then_run_from_the_installed_package(installed: Installed, user_env: dict[str, str],
                                                  sshd_worker: SshdWorker, isolated_home: Path,
                                                  tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    env = {**user_env, "OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    before = sorted(p.relative_to(installed.venv) for p in installed.venv.rglob("*") if "__pycache__" not in p.parts)
    init = _run([installed.offload, "init", "--provider", "ssh", "--host",
                 f"{sshd_worker.user}@{sshd_worker.host}:{sshd_worker.port}", "--workspace", sshd_worker.workspace,
                 "--stack", "mybox", "--yes"], repo, env)
    assert init.returncode == 0, init.stderr
    assert init.stdout.splitlines()[-1] == "next: offload run --stack mybox -- COMMAND"
    assert (isolated_home / ".config" / "offload" / "stacks" / "Pulumi.mybox.yaml").is_file()

    run = _run([installed.offload, "run", "--stack", "mybox", "--wait", "--", "sh", "-c", "cat file0.txt"], repo, env)
    assert (run.returncode, run.stdout.splitlines()[-1:]) == (0, ["content 0"]), run.stderr

    up = _run([installed.offload, "fleet", "up", "--stack", "mybox"], repo, env)
    assert up.returncode == 6
    assert "needs no Pulumi: `offload run --stack mybox -- COMMAND`" in up.stderr
    after = sorted(p.relative_to(installed.venv) for p in installed.venv.rglob("*") if "__pycache__" not in p.parts)
    assert after == before, "nothing is written into the installed package"


def _gce_stack(project: Path) -> None:
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: offload\nruntime: python\nstackConfigDir: stacks\n")
    (project / "stacks" / "Pulumi.dev.yaml").write_text(
        "config:\n  offload:provider: gce-cos\n  offload:developer: dev@example.com\n"
        "  gcp:project: p-offload\n  gcp:zone: us-west1-a\n")


@pytest.mark.parametrize("argv", [
    ["run", "--stack", "dev", "--", "true"], ["status", "--stack", "dev"], ["outputs", "--stack", "dev"],
    ["fleet", "up", "--stack", "dev"], ["fleet", "list", "--stack", "dev"],
    ["run", "--outputs", "gce.json", "--", "true"], ["fleet", "stop", "--outputs", "gce.json"],
], ids=lambda argv: " ".join(argv))
def test_a_gce_stack_gets_one_line_naming_the_extra(argv: list[str], installed: Installed, user_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    _gce_stack(tmp_path / "project")
    (repo / "gce.json").write_text(json.dumps(GCE_OUTPUTS))
    result = _run([installed.offload, *argv], repo, {**user_env, "OFFLOAD_PROJECT_DIR": str(tmp_path / "project")})
    assert (result.returncode, result.stderr) == (2, GCE_LINE), result.stdout


def test_init_of_a_gce_stack_says_which_extra_comes_next(installed: Installed, user_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    init = _run([installed.offload, "init", "--provider", "gce-cos", "--project", "p-offload", "--zone",
                 "us-west1-a", "--developer", "dev@example.com", "--stack", "dev", "--yes"], repo, user_env)
    assert init.returncode == 0, init.stderr
    assert init.stdout.splitlines()[-1].startswith("next: pip install 'offload[gcp]' and the Pulumi CLI"), init.stdout


MCP_STATUS = """
import json, sys
import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

async def main():
    params = StdioServerParameters(command=sys.argv[1], args=["mcp"], cwd=sys.argv[2], env=json.loads(sys.stdin.read()))
    with anyio.fail_after(90):
        async with Client(params) as client:
            result = await client.call_tool("status", {})
    print(json.dumps({"error": result.is_error, "text": "".join(getattr(c, "text", "") for c in result.content)}))

anyio.run(main)
"""


def test_the_mcp_server_names_the_extra_as_a_tool_error(installed: Installed, user_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "gce.json").write_text(json.dumps(GCE_OUTPUTS))
    env = {**user_env, "OFFLOAD_OUTPUTS": str(tmp_path / "gce.json")}
    result = subprocess.run([sys.executable, "-c", MCP_STATUS, installed.offload, str(repo)],
                            input=json.dumps(env), capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    assert answer == {"error": True, "text": GCE_LINE.strip()}


def test_the_checkouts_pulumi_program_names_the_extra(installed: Installed, user_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """What a checkout's `pulumi up` runs (`__main__.py`, by the Python of the environment offload is in)."""
    result = _run([installed.python, str(REPO / "__main__.py")], REPO, user_env)
    assert result.returncode == 2
    assert result.stderr.startswith("offload: the offload Pulumi program: Pulumi needs `pip install 'offload[gcp]'`")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
