"""Fixtures for the infrastructure tests: the example stacks and a runner for the program under mocks."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.infra.mocks import STACKS, stack_config

with warnings.catch_warnings():
    # pulumi_gcp's compute module warns about its own deprecated aliases as it loads; loading it once here
    # also keeps that cost out of the first test that runs the program.
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_gcp

    pulumi_gcp.compute.Instance  # noqa: B018  (the submodule loads lazily, on first attribute access)

STACK_FILES = sorted(STACKS.glob("Pulumi.*.yaml"))


def stack_file(provider: str) -> Path:
    """The example stack for PROVIDER."""
    for path in STACK_FILES:
        if stack_config(path).get("offload:provider") == provider:
            return path
    raise LookupError(f"no example stack for {provider}")


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pulumi runs the program from the project directory; so do these tests."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
