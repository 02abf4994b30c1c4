"""Pulumi stacks through the Automation API: outputs for the runtime, and the stack `fleet up` deploys.

pulumi is imported inside the functions, only when a stack is named.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.errors import ConfigError, OffloadError, PulumiUnavailable

if TYPE_CHECKING:
    from pulumi import automation

PULUMI_CLI_HINT = "install the Pulumi CLI: https://www.pulumi.com/docs/install/"
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
    what = f"cannot read stack {stack!r}"
    st = select_stack(stack, what=what, hint=PULUMI_INSTALL_HINT)
    try:
        outputs = st.outputs()
    except Exception as e:
        raise command_error(e, what, hint=PULUMI_INSTALL_HINT) from None
    return {k: v.value for k, v in outputs.items()}


def select_stack(stack: str, *, create: bool = False, what: str | None = None,
                 hint: str = PULUMI_CLI_HINT) -> "automation.Stack":
    """STACK of the offload Pulumi project (created first with CREATE); the pulumi CLI must be installed."""
    what = what or f"cannot open stack {stack!r}"
    if shutil.which("pulumi") is None:
        raise PulumiUnavailable(f"{what}: the pulumi CLI is not installed", hint=hint)
    from pulumi import automation as auto

    work_dir = project_dir()
    if not (work_dir / "Pulumi.yaml").exists():
        raise ConfigError(f"{what}: no Pulumi project (Pulumi.yaml) in {work_dir}",
                          hint="set OFFLOAD_PROJECT_DIR to the offload checkout")
    select = auto.create_or_select_stack if create else auto.select_stack
    try:
        return select(stack_name=stack, work_dir=str(work_dir))
    except Exception as e:
        raise command_error(e, what, hint=hint) from None


def command_error(e: Exception, what: str, *, hint: str = PULUMI_CLI_HINT,
                  kind: type[OffloadError] = ConfigError) -> Exception:
    """What to raise for E, raised by an Automation API call while doing WHAT: one line, or E itself.

    A missing CLI surfaces as FileNotFoundError; a failed pulumi command as CommandError, whose text holds the
    whole stdout and stderr, so only its first `error:` line is kept.
    """
    from pulumi import automation as auto

    if isinstance(e, FileNotFoundError):
        return PulumiUnavailable(f"{what}: the pulumi CLI is not installed", hint=hint)
    if not isinstance(e, auto.errors.CommandError):
        return e
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    first = next((ln for ln in lines if ln.startswith("error")), lines[0] if lines else "pulumi failed")
    return kind(f"{what}: {first}")
