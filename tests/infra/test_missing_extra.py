"""The Pulumi program (a checkout's `pulumi up`, and `fleet up`'s inline program) names the extra a stack's
provider type needs when its Pulumi provider is not installed, instead of failing on an import.

The provider package is blocked for the test (a `None` in `sys.modules`); tests/test_install.py runs the checkout's
`__main__.py` on a real core install, which has no pulumi at all.
"""

from __future__ import annotations

import sys

import pulumi
import pytest

from offload.infra.program import program
from tests.infra.mocks import run_program

GCE = {"offload:developer": "dev@example.com", "gcp:project": "p-offload", "gcp:zone": "us-west1-a"}


@pytest.mark.parametrize(("provider", "blocked", "extra"), [
    ("gce-cos", "pulumi_gcp", "gcp"), ("gce-linux", "pulumi_gcp", "gcp"), ("workstation", "pulumi_gcp", "gcp"),
    ("local-docker", "pulumi_docker", "docker")])
@pytest.mark.parametrize("inline", [False, True], ids=["__main__.py", "inline"])
def test_a_missing_provider_package_is_one_line_naming_the_extra(provider: str, blocked: str, extra: str,
                                                                inline: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)
    with pytest.raises(pulumi.RunError) as raised:
        run_program({"offload:provider": provider, **GCE}, inline=program if inline else None)
    assert str(raised.value) == f"this stack's provider {provider} needs `pip install 'offload[{extra}]'`"


def test_a_stack_whose_extra_is_there_still_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pulumi_gcp", None)  # an ssh stack declares nothing of GCP's
    run = run_program({"offload:provider": "ssh", "offload:developer": "dev@example.com",
                       "offload:hosts": [{"name": "box", "host": "10.0.0.5", "user": "dev", "workspace": "/w"}]})
    assert run.outputs["provider"] == "ssh" and run.outputs["workers"][0]["name"] == "box"
