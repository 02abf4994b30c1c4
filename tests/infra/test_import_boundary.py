"""The arrows run one way: `offload --help`, the outputs contract and the stack config load neither Pulumi nor the
cloud or SSH libraries, which load only when a command needs them, so `offload --help` stays fast."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.infra.mocks import REPO

SLOW = ("pulumi", "pulumi_gcp", "pulumi_docker", "pulumi_policy", "google.cloud", "google.api_core", "fabric",
        "paramiko", "invoke")
CHECK = ("import sys\n"
         "{code}\n"
         "slow = {slow!r}\n"
         "print(sorted(m for m in sys.modules if any(m == s or m.startswith(s + '.') for s in slow)))\n")


@pytest.mark.parametrize("code", [
    "from offload.cli.app import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "import offload.outputs",
    "import offload.stackconfig",
], ids=["offload --help", "offload.outputs", "offload.stackconfig"])
def test_loads_no_pulumi_cloud_or_ssh_library(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", CHECK.format(code=code, slow=SLOW)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


EXTRAS = ("pulumi", "pulumi_gcp", "pulumi_docker", "google")


def test_the_core_loads_no_extra() -> None:
    """Every provider, the job service, the MCP server and every CLI command module load without an extra's
    package (offload/extras.py checks for it when a command needs it): a core install imports them all."""
    code = ("import importlib, pkgutil, offload.cli, offload.providers\n"
            "offload.providers.preload()\n"
            "import offload.jobs.service, offload.cli.mcpserver, offload.stack\n"
            "for m in pkgutil.iter_modules(offload.cli.__path__):\n"
            "    importlib.import_module('offload.cli.' + m.name)")
    result = subprocess.run([sys.executable, "-c", CHECK.format(code=code, slow=EXTRAS)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
