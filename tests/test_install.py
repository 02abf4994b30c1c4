"""An installed offload (not editable, in a fresh virtualenv) works on its own: the CLI, the files it ships, and
the newcomer's path from `init` to a run with no pulumi CLI and no checkout in sight.

The package is built from a copy of the working tree and installed without its dependencies, which the fresh
virtualenv takes from this one's site-packages (as plain path entries: this environment's editable install of
offload stays out). That keeps the test to seconds; what it checks is the package itself. With
OFFLOAD_TEST_FULL_INSTALL=1 the dependencies are installed too, as `pip install` does for a user (about a minute
with a warm pip cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from offload.outputs import SCHEMA_PATH
from tests.workers import SshdWorker, make_repo

REPO = Path(__file__).resolve().parent.parent
PIP_CACHE = "/var/cache/offload/pip"  # as .ci/run sets it, when PIP_CACHE_DIR is not set
INSTALL_TIMEOUT = 300


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


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    source = base / "src"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT)
    env = {**os.environ, "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or PIP_CACHE,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    full = os.environ.get("OFFLOAD_TEST_FULL_INSTALL") == "1"
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *([] if full else ["--no-deps"]),
                             str(source)], env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = Installed(venv)
    if not full:
        ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (out.site_packages() / "offload-test-dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    shutil.rmtree(source)
    return out


@pytest.fixture
def user_env(isolated_home: Path, installed: Installed) -> dict[str, str]:
    """A user's environment: the installed offload first on PATH, and no pulumi CLI."""
    path = f"{installed.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    assert shutil.which("pulumi", path=path) is None
    return {**os.environ, "PATH": path}


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_the_package_is_its_own(installed: Installed, user_env: dict[str, str], tmp_path: Path) -> None:
    where = _run([installed.python, "-c", "import offload, offload.infra.program; print(offload.__file__)"],
                 tmp_path, user_env)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.site_packages())
    help_ = _run([installed.offload, "--help"], tmp_path, user_env)
    assert help_.returncode == 0 and "init" in help_.stdout and "outputs" in help_.stdout
    schema = _run([installed.offload, "outputs", "--schema"], tmp_path, user_env)
    assert (schema.returncode, schema.stdout) == (0, SCHEMA_PATH.read_text())
    package = installed.site_packages() / "offload"
    assert not (package / "stacks").exists() and not (package.parent / "Pulumi.yaml").exists()


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
