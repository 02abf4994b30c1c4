"""The optional parts of offload (its extras): what each one installs, which provider types need which, and the
one check that turns a missing extra into a one-line error naming it.

`pip install offload` is the core: the runtime, the `ssh`, `local` and `local-docker` workers, the job commands
and `offload mcp`. GCP workers and deploying a stack with Pulumi need more, and a command that needs it says so
before it imports anything: never an ImportError. The check looks packages up without importing them, so it costs
nothing on a full install.
"""

from __future__ import annotations

from enum import Enum
from importlib.util import find_spec

from offload.errors import MissingExtra


class Extra(str, Enum):
    """An optional dependency group of the `offload` package; the value is its name in `offload[NAME]`."""

    GCP = "gcp"
    DOCKER = "docker"


# What each extra installs, as the modules offload imports from it; pyproject.toml's lists are tested against these.
MODULES: dict[Extra, tuple[str, ...]] = {
    Extra.GCP: ("pulumi", "pulumi_gcp", "google.cloud.compute_v1", "google.cloud.oslogin_v1"),
    Extra.DOCKER: ("pulumi", "pulumi_docker"),
}

# The extra a provider type needs to run jobs on its workers (the GCE and OS Login APIs, the workstation stack).
# `local-docker` is reached through the Docker CLI, and `ssh` and `local` need nothing beyond the core.
RUN: dict[str, Extra] = {"gce-cos": Extra.GCP, "gce-linux": Extra.GCP, "workstation": Extra.GCP}

# The extra a provider type needs to be deployed by Pulumi (`fleet up`, `pulumi up`) or read through it.
DEPLOY: dict[str, Extra] = {**RUN, "local-docker": Extra.DOCKER}

# `ssh` and `local` stacks need only pulumi itself to deploy, which either extra brings; this one is the smaller.
PULUMI_ONLY = Extra.DOCKER


def install_command(extra: Extra) -> str:
    return f"pip install 'offload[{extra.value}]'"


def installed(module: str) -> bool:
    """Whether MODULE can be imported, found without importing it (only its parent packages are)."""
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a module without a spec
        return False


def missing(extra: Extra) -> tuple[str, ...]:
    """The modules of EXTRA that are not installed."""
    return tuple(m for m in MODULES[extra] if not installed(m))


def require(extra: Extra, what: str) -> None:
    """Raise MissingExtra, whose line says WHAT needs EXTRA and how to install it, unless EXTRA is installed."""
    if missing(extra):
        raise MissingExtra(f"{what} needs `{install_command(extra)}`", extra=extra.value)


def require_for_provider(provider: str, *, deploy: bool = False) -> None:
    """PROVIDER's extra (a provider type, or its value such as `gce-cos`), to run its jobs or, with DEPLOY, to
    deploy it with Pulumi; nothing for a provider type that needs only the core."""
    name = provider.value if isinstance(provider, Enum) else str(provider)
    extra = (DEPLOY if deploy else RUN).get(name)
    if extra is not None:
        require(extra, f"this stack's provider {name}")


def require_pulumi(what: str, *, hint: str | None = None) -> None:
    """Pulumi itself, for a stack whose provider type needs no extra of its own (`ssh`, `local`) or is unknown."""
    if not installed("pulumi"):
        raise MissingExtra(f"{what}: Pulumi needs `{install_command(Extra.GCP)}` for a GCP stack, "
                           f"`{install_command(Extra.DOCKER)}` otherwise", extra=PULUMI_ONLY.value, hint=hint)


def missing_module_error(e: ModuleNotFoundError) -> MissingExtra | None:
    """The MissingExtra for an import of an extra's module that slipped past the checks, else None."""
    top = (e.name or "").split(".")[0]
    if top == "pulumi_docker":
        return MissingExtra(f"this command needs `{install_command(Extra.DOCKER)}` (no module {e.name})",
                            extra=Extra.DOCKER.value)
    if top in ("pulumi_gcp", "google"):
        return MissingExtra(f"this command needs `{install_command(Extra.GCP)}` (no module {e.name})",
                            extra=Extra.GCP.value)
    if top == "pulumi":
        return MissingExtra(f"this command needs Pulumi: `{install_command(Extra.GCP)}` for a GCP stack, "
                            f"`{install_command(Extra.DOCKER)}` otherwise (no module {e.name})",
                            extra=PULUMI_ONLY.value)
    return None


def require_pulumi_or_exit(what: str) -> None:
    """For a script run outside the CLI (a checkout's Pulumi program): without pulumi, print require_pulumi's line
    on stderr and exit 2, as the CLI would."""
    try:
        require_pulumi(what)
    except MissingExtra as e:
        import sys

        print(f"offload: {e.line()}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
