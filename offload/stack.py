"""Stack outputs from Pulumi: resolved through the Automation API, imported only when a stack is named."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from offload.errors import ConfigError, PulumiUnavailable

PULUMI_INSTALL_HINT = "install the Pulumi CLI (https://www.pulumi.com/docs/install/) or pass --outputs FILE"


def project_dir() -> Path:
    """The Pulumi project (Pulumi.yaml): OFFLOAD_PROJECT_DIR, else the checkout offload was installed from."""
    env = os.environ.get("OFFLOAD_PROJECT_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    if (here / "Pulumi.yaml").exists():
        return here
    return Path.cwd()


def stack_outputs(stack: str) -> dict[str, Any]:
    """`pulumi stack output --json` for STACK, as plain values (secrets unwrapped)."""
    try:
        from pulumi import automation as auto
    except ImportError:  # pragma: no cover - pulumi is a declared dependency
        raise PulumiUnavailable("the pulumi Python SDK is not installed", hint=PULUMI_INSTALL_HINT) from None
    try:
        st = auto.select_stack(stack_name=stack, work_dir=str(project_dir()))
        outputs = st.outputs()
    except FileNotFoundError:
        raise PulumiUnavailable(f"cannot read stack {stack!r}: the pulumi CLI is not installed",
                                hint=PULUMI_INSTALL_HINT) from None
    except auto.errors.CommandError as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip().startswith("error")), str(e).splitlines()[0])
        raise ConfigError(f"cannot read stack {stack!r}: {first.strip()}") from None
    return {k: v.value for k, v in outputs.items()}
