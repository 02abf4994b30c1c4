"""The arrows run one way: the CLI and the outputs contract never load Pulumi, so `offload --help` stays fast."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.infra.mocks import REPO

CHECK = ("import importlib, sys; importlib.import_module({module!r}); "
         "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pulumi_gcp', 'pulumi_docker', "
         "'pulumi_policy')); print(','.join(loaded)); sys.exit(1 if loaded else 0)")


@pytest.mark.parametrize("module", ["offload.cli.app", "offload.outputs", "offload.stackconfig"])
def test_module_does_not_import_pulumi(module: str) -> None:
    result = subprocess.run([sys.executable, "-c", CHECK.format(module=module)], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"{module} loads {result.stdout.strip()}{result.stderr[-2000:]}"
