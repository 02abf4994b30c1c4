"""Stacks: where their files live, the outputs the runtime reads from them, and the stack `fleet up` deploys.

A stack directory is an offload Pulumi project: `Pulumi.yaml` (project `offload`) and the stack files
`Pulumi.<stack>.yaml` in its `stackConfigDir`. It is `OFFLOAD_PROJECT_DIR` when set, else offload's config
directory (`~/.config/offload`), which `offload init` makes into one. `ssh` and `local` stacks create nothing, so
their outputs are built from the stack file without Pulumi; the others are read through the Automation API, which
runs the packaged program inline. pulumi is imported inside the functions, only when it is needed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.errors import ConfigError, OffloadError, PulumiUnavailable
from offload.extras import require_for_provider, require_pulumi
from offload.paths import config_dir
from offload.outputs import ProviderType
from offload.stackconfig import PROVIDER, STATIC_PROVIDERS, StackConfig, read_stack_config, static_outputs

if TYPE_CHECKING:
    from pulumi import automation

PROJECT = "offload"
PULUMI_CLI_HINT = "install the Pulumi CLI: https://www.pulumi.com/docs/install/"
PULUMI_INSTALL_HINT = "install the Pulumi CLI (https://www.pulumi.com/docs/install/) or pass --outputs FILE"
# What `offload init` writes into a stack directory that has no project file yet.
PROJECT_FILE = """\
# The offload Pulumi project: its stack files are in stacks/ (written by `offload init`). offload runs the
# program packaged with it, so this directory needs nothing else.
name: offload
description: Private, per-developer workers for offload. One stack per developer, one provider type per stack.
runtime: python
stackConfigDir: stacks
"""


@dataclass(frozen=True)
class StackDir:
    """A directory of offload stacks: its project file and where its stack files are."""

    root: Path

    @property
    def project_file(self) -> Path:
        return self.root / "Pulumi.yaml"

    @property
    def stacks(self) -> Path:
        """The project's stackConfigDir (`stacks` when the project file does not say, or is not there yet)."""
        settings = self._settings()
        sub = settings.get("stackConfigDir") if settings is not None else "stacks"
        return self.root / sub if isinstance(sub, str) and sub.strip() else self.root

    def stack_file(self, stack: str) -> Path:
        return self.stacks / f"Pulumi.{stack}.yaml"

    def check(self) -> None:
        """Refuse a directory that is not an offload Pulumi project (no Pulumi.yaml, or another project's)."""
        settings = self._settings()
        hint = (f"use {default_stack_dir()}, the default, or a directory whose Pulumi.yaml is the offload "
                "project, such as a checkout of offload")
        if settings is None:
            raise ConfigError(f"{self.root} is not an offload stack directory: it has no Pulumi.yaml", hint=hint)
        if settings.get("name") != PROJECT:
            raise ConfigError(f"{self.root} is not an offload stack directory: its Pulumi.yaml is project "
                              f"{settings.get('name')!r}, not {PROJECT!r}", hint=hint)

    def ensure(self) -> None:
        """Make ROOT a stack directory when it has no project file yet; refuse another project's."""
        if not self.project_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self.project_file.write_text(PROJECT_FILE)
        self.check()

    def _settings(self) -> dict[str, Any] | None:
        try:
            text = self.project_file.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ConfigError(f"cannot read {self.project_file}: {e.strerror or e}") from None
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{self.project_file} is not valid YAML: {str(e).splitlines()[0]}") from None
        return data if isinstance(data, dict) else {}


def default_stack_dir() -> Path:
    """Where stack files live unless OFFLOAD_PROJECT_DIR says otherwise: offload's config directory."""
    return config_dir()


def stack_dir() -> StackDir:
    """The stack directory: OFFLOAD_PROJECT_DIR, else offload's config directory."""
    env = os.environ.get("OFFLOAD_PROJECT_DIR")
    return StackDir(Path(env) if env else default_stack_dir())


def read_stack_file(path: Path) -> dict[str, Any]:
    """The config of a stack file, as full keys (`offload:provider`) to values."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read stack file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"stack file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    config = data.get("config") if isinstance(data, dict) else None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"stack file {path}: `config` must be a mapping of keys to values")
    # A key without a namespace belongs to the project, as Pulumi reads it.
    values = {(k if ":" in str(k) else f"{PROJECT}:{k}"): v for k, v in config.items()}
    for key, value in values.items():
        if isinstance(value, dict) and "secure" in value:
            raise ConfigError(f"stack file {path}: {key} is a Pulumi secret, which offload reads only through "
                              "Pulumi", hint="keep secrets out of ssh and local stacks")
    return values


def stack_config(stack: str, where: StackDir | None = None) -> StackConfig | None:
    """The validated config of STACK's file, or None when it has none in the stack directory."""
    path = (where or stack_dir()).stack_file(stack)
    if not path.is_file():
        return None
    try:
        return read_stack_config(read_stack_file(path), stack)
    except ConfigError as e:
        raise ConfigError(f"stack file {path}: {e.message}", hint=e.hint) from None


def stack_provider(stack: str, where: StackDir) -> ProviderType | None:
    """The provider type STACK's file names, read leniently (no validation: Pulumi validates a deployed stack's
    config itself, and its file may hold secrets), or None when it has no file or names none."""
    import yaml

    try:
        data = yaml.safe_load(where.stack_file(stack).read_text())
        config = data.get("config") if isinstance(data, dict) else None
        value = (config.get(PROVIDER) or config.get(PROVIDER.split(":", 1)[1])) if isinstance(config, dict) else None
        return ProviderType(str(value).strip()) if value is not None else None
    except (OSError, yaml.YAMLError, ValueError):
        return None


def stack_outputs(stack: str) -> dict[str, Any]:
    """The stack outputs of STACK: from its stack file for `ssh` and `local`, else `pulumi stack output --json`
    through the Automation API (secrets unwrapped)."""
    where = stack_dir()
    config = stack_config(stack, where)
    if config is not None and config.provider in STATIC_PROVIDERS:
        return static_outputs(config).to_dict()
    what = f"cannot read stack {stack!r}"
    if config is not None:
        require_for_provider(config.provider, deploy=True)
    if config is None and shutil.which("pulumi") is None:
        raise ConfigError(f"{what}: there is no stack file {where.stack_file(stack)}",
                          hint=f"create it with `offload init --stack {stack}`, or pass --outputs FILE")
    st = select_stack(stack, what=what, hint=PULUMI_INSTALL_HINT)
    try:
        outputs = st.outputs()
    except Exception as e:
        raise command_error(e, what, hint=PULUMI_INSTALL_HINT) from None
    return {k: v.value for k, v in outputs.items()}


def check_names_kept(stack: str, config: StackConfig, deployed: dict[str, Any]) -> None:
    """Refuse to deploy STACK when its deployed workers (DEPLOYED, its current outputs) carry the names offload gave
    before the stack's name was hashed in, and CONFIG would now give others: `pulumi up` would replace every named
    resource of the stack (and stop at its protected data disks). `offload:namePrefix` keeps the old names."""
    from offload.stackconfig import NAME_PREFIX, legacy_name_prefix

    workers = deployed.get("workers")
    if config.provider in STATIC_PROVIDERS or not config.developer or not isinstance(workers, list):
        return
    legacy = legacy_name_prefix(config.developer)
    names = [w.get("name") for w in workers if isinstance(w, dict)]
    if legacy == config.name_prefix or not any(isinstance(n, str) and n.startswith(f"{legacy}-") for n in names):
        return
    raise ConfigError(f"stack {stack!r} has workers named {legacy}-*, and its config would now name them "
                      f"{config.name_prefix}-*: deploying would replace every resource it named",
                      hint=f"keep the names with `pulumi config set {NAME_PREFIX} {legacy} --stack {stack}` (or "
                           f"{NAME_PREFIX}: {legacy} in its stack file)")


def select_stack(stack: str, *, create: bool = False, what: str | None = None,
                 hint: str = PULUMI_CLI_HINT) -> "automation.Stack":
    """STACK of the stack directory, with the packaged program inline (created first with CREATE); the pulumi
    CLI must be installed."""
    what = what or f"cannot open stack {stack!r}"
    where = stack_dir()
    provider = stack_provider(stack, where)
    static = (f"provider {provider.value} creates nothing and needs no Pulumi: "
              f"`offload run --stack {stack} -- COMMAND` reads its file") if provider in STATIC_PROVIDERS else None
    if provider is not None and static is None:
        require_for_provider(provider, deploy=True)  # before the CLI: the line names the extra to install
    if shutil.which("pulumi") is None:
        if where.stack_file(stack).is_file():
            stack_config(stack, where)  # a stack file that is not valid says so first
        raise PulumiUnavailable(f"{what}: the pulumi CLI is not installed", hint=static or hint)
    require_pulumi(what, hint=static)
    if where.root.absolute() == default_stack_dir().absolute():
        where.ensure()  # offload's own config directory becomes a stack directory when it is first used as one
    else:
        where.check()
    if create and not where.stack_file(stack).is_file():
        raise ConfigError(f"{what}: there is no stack file {where.stack_file(stack)}",
                          hint=f"create it with `offload init --stack {stack}`")
    from pulumi import automation as auto

    from offload.infra.program import program

    select = auto.create_or_select_stack if create else auto.select_stack
    try:
        return select(stack_name=stack, project_name=PROJECT, program=program,
                      opts=auto.LocalWorkspaceOptions(work_dir=str(where.root)))
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
    # Its text is " code: N", " stdout: ...", " stderr: ...": the streams' first lines carry those labels.
    lines = [ln.strip().removeprefix("stdout:").removeprefix("stderr:").strip() for ln in str(e).splitlines()]
    lines = [ln for ln in lines if ln]
    first = next((ln for ln in lines if ln.startswith("error")), lines[0] if lines else "pulumi failed")
    return kind(f"{what}: {first}")
