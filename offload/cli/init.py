"""`offload init`: write a developer's stack file from a few high-level answers and what gcloud and git know."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from offload.cli.app import app
from offload.errors import ConfigError, UsageError
from offload.outputs import ProviderType

_STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HOST_SPEC = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s\[\]]+)(?::(?P<port>\d{1,5}))?$")
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._/:+-]*$")
_CLOUD = (ProviderType.GCE_COS, ProviderType.GCE_LINUX, ProviderType.WORKSTATION)


class Mode(Enum):
    """Whether init may ask: on a terminal it prompts, with defaults from detection; in batch it never does."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


@dataclass(frozen=True)
class Detected:
    """Defaults found on this machine, and where each came from (shown to the user)."""

    project: str | None = None
    zone: str | None = None
    account: str | None = None
    email: str | None = None
    sources: tuple[str, ...] = ()


@app.command("init", epilog="Exit codes: 0 ok, 2 a missing or invalid answer, or the stack file already exists.")
def init(
    provider: Annotated[Optional[ProviderType], typer.Option("--provider", help="Where your workers live.",
                                                             case_sensitive=False, show_default=False)] = None,
    project: Annotated[Optional[str], typer.Option("--project", help="Google Cloud project (default: from "
                                                   "gcloud config).", show_default=False)] = None,
    zone: Annotated[Optional[str], typer.Option("--zone", help="Compute Engine zone (default: from gcloud "
                                                "config).", show_default=False)] = None,
    developer: Annotated[Optional[str], typer.Option("--developer", help="Your email; it names and labels your "
                                                     "workers (default: gcloud account or git user.email).",
                                                     show_default=False)] = None,
    stack: Annotated[Optional[str], typer.Option("--stack", help="Stack name (default: from your email).",
                                                 show_default=False)] = None,
    host: Annotated[Optional[list[str]], typer.Option("--host", help="For provider ssh: USER@HOST[:PORT]; "
                                                      "repeat for several hosts.", show_default=False)] = None,
    workspace: Annotated[Optional[str], typer.Option("--workspace", help="For provider ssh: the directory on "
                                                     "the hosts for offload's work (default: ~USER/offload).",
                                                     show_default=False)] = None,
    project_dir: Annotated[Optional[Path], typer.Option("--dir", help="The offload Pulumi project (default: "
                                                        "OFFLOAD_PROJECT_DIR or the offload checkout).",
                                                        show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Ask nothing: use flags and detected defaults.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing stack file.")] = False,
) -> None:
    """Create your stack file, stacks/Pulumi.<stack>.yaml, asking only where your workers should live.

    Project, zone and account come from your gcloud configuration and your email from git, as defaults.
    Without a terminal (or with --yes) it asks nothing and names the flag it is missing.
    """
    mode = Mode.BATCH if yes or not stdin_is_tty() else Mode.INTERACTIVE
    found = detect(os.environ)
    ask = _Asker(mode)

    kind = provider or ask.choice("Where should your workers live?", "--provider", default=ProviderType.GCE_COS)
    if kind is ProviderType.LOCAL:
        typer.echo("provider local is built in: it needs no stack file and no `pulumi up`; "
                   "next: offload run -- COMMAND")
        return
    cloud = kind in _CLOUD
    # IAM is granted to the Google account, which may differ from the email git commits with.
    email_default = (found.account or found.email) if cloud else (found.email or found.account)
    email = (developer or email_default or ask.text("Your email (names and labels your workers)", "--developer"))
    email = email.strip().lower()
    values: dict[str, Any] = {"offload:provider": kind.value, "offload:developer": email}
    if cloud:
        values["gcp:project"] = project or ask.text("Google Cloud project", "--project", default=found.project)
        values["gcp:zone"] = zone or ask.text("Zone", "--zone", default=found.zone)
    if kind is ProviderType.SSH:
        specs = host or [ask.text("Host (USER@HOST[:PORT])", "--host")]
        entries = [parse_host(spec, i, workspace) for i, spec in enumerate(specs)]
        names = [e["name"] for e in entries]
        for i, e in enumerate(entries):
            if names.count(e["name"]) > 1:
                e["name"] = f"{e['name']}-{i}"
        values["offload:hosts"] = entries

    name = stack or default_stack_name(email)
    if not _STACK.match(name):
        raise UsageError(f"--stack must be letters, digits, '.', '_' or '-'; got {name!r}")
    _validate(values)
    root = project_dir if project_dir is not None else _default_project_dir()
    path = root / "stacks" / f"Pulumi.{name}.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_stack_file(name, kind, values))
    if found.sources:
        typer.echo(f"detected: {', '.join(found.sources)}")
    typer.echo(f"wrote {path} for developer {email}")
    typer.echo(next_step(name, kind))


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()


class _Asker:
    """Prompts in interactive mode; in batch mode a needed answer without a default is a ConfigError."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode

    def text(self, question: str, flag: str, *, default: str | None = None) -> str:
        if self.mode is Mode.BATCH:
            if default:
                return default
            raise ConfigError(f"missing {flag}: nothing to detect it from, and init asks nothing without a terminal")
        answer = typer.prompt(question, default=default) if default else typer.prompt(question)
        return str(answer).strip()

    def choice(self, question: str, flag: str, *, default: ProviderType) -> ProviderType:
        if self.mode is Mode.BATCH:
            raise ConfigError(f"missing {flag}: one of {', '.join(p.value for p in ProviderType)}")
        typer.echo("Provider types: gce-cos (a Container-Optimized OS VM running your worker container), "
                   "gce-linux (a Debian VM), workstation (Cloud Workstations), local-docker (a container on "
                   "this machine), ssh (hosts you already have), local (this machine).")
        accepted = [p.value for p in ProviderType]
        while True:
            answer = str(typer.prompt(question, default=default.value)).strip()
            if answer in accepted:
                return ProviderType(answer)
            typer.echo(f"Please answer one of: {', '.join(accepted)}")


def detect(env: Mapping[str, str]) -> Detected:
    """Project, zone and account from the environment and the active gcloud configuration; email from git."""
    gcloud = _gcloud_properties(env)
    sources = []
    project = env.get("CLOUDSDK_CORE_PROJECT") or gcloud.get(("core", "project")) or env.get("GOOGLE_CLOUD_PROJECT")
    zone = env.get("CLOUDSDK_COMPUTE_ZONE") or gcloud.get(("compute", "zone"))
    account = env.get("CLOUDSDK_CORE_ACCOUNT") or gcloud.get(("core", "account"))
    if project or zone or account:
        sources.append("gcloud " + "/".join(k for k, v in (("project", project), ("zone", zone),
                                                           ("account", account)) if v))
    email = _git_email()
    if email:
        sources.append("git user.email")
    return Detected(project=project or None, zone=zone or None, account=account or None, email=email,
                    sources=tuple(sources))


def _gcloud_properties(env: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """(section, key) -> value from the active configuration file of gcloud, or {} when there is none."""
    base = Path(env["CLOUDSDK_CONFIG"]) if env.get("CLOUDSDK_CONFIG") else Path.home() / ".config" / "gcloud"
    name = env.get("CLOUDSDK_ACTIVE_CONFIG_NAME")
    if not name:
        try:
            name = (base / "active_config").read_text().strip()
        except OSError:
            name = "default"
    if not re.match(r"^[a-z][-a-z0-9]*$", name or ""):
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(base / "configurations" / f"config_{name}")
    except configparser.Error:
        return {}
    return {(s, k): v.strip() for s in parser.sections() for k, v in parser.items(s) if v.strip()}


def _git_email() -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        result = subprocess.run(["git", "config", "--get", "user.email"], capture_output=True, text=True,
                                timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    email = result.stdout.strip()
    return email if result.returncode == 0 and "@" in email else None


def parse_host(spec: str, index: int, workspace: str | None) -> dict[str, Any]:
    """USER@HOST[:PORT] -> an `offload:hosts` entry; the name is the host's first label (or ssh-INDEX)."""
    import getpass

    m = _HOST_SPEC.match(spec.strip())
    if not m:
        raise ConfigError(f"--host must be USER@HOST[:PORT]; got {spec!r}")
    host = m["host"].strip("[]")
    user = m["user"] or getpass.getuser()
    first = host.split(".", 1)[0]
    name = first if re.match(r"^[A-Za-z][A-Za-z0-9-]{0,62}$", first) and not host.replace(".", "").isdigit() \
        else f"ssh-{index}"
    return {"name": name, "host": host, "port": int(m["port"] or 22), "user": user,
            "workspace": workspace or ("/root/offload" if user == "root" else f"/home/{user}/offload")}


def default_stack_name(email: str) -> str:
    """The local part of the email, as a stack name: 'dev.one@example.com' -> 'dev-one'."""
    slug = re.sub(r"[^a-z0-9]+", "-", email.split("@", 1)[0].lower()).strip("-")
    return slug[:40] or "dev"


def _validate(values: dict[str, Any]) -> None:
    # The very rules `pulumi up` applies, so a file init writes is one the program accepts. The module is
    # plain validation (no pulumi import).
    from offload.stackconfig import read_stack_config

    read_stack_config(values)


def _default_project_dir() -> Path:
    from offload.stack import project_dir

    return project_dir()


def render_stack_file(name: str, kind: ProviderType, values: dict[str, Any]) -> str:
    """The stack file's YAML, with a comment on each key."""
    lines = [f"# The offload stack {name!r} of {values['offload:developer']}, written by `offload init`.",
             f"# {next_step(name, kind)}",
             "config:",
             "  # Where the workers live: gce-cos, gce-linux, workstation, local-docker or ssh.",
             f"  offload:provider: {_scalar(kind.value)}",
             "  # Your email: it names your workers, labels them and decides who is granted access to them.",
             f"  offload:developer: {_scalar(values['offload:developer'])}"]
    if "gcp:project" in values:
        lines += ["  # The Google Cloud project and zone of your workers.",
                  f"  gcp:project: {_scalar(values['gcp:project'])}",
                  f"  gcp:zone: {_scalar(values['gcp:zone'])}"]
    if "offload:hosts" in values:
        lines += ["  # Your hosts. Pin each one's public keys under host_keys (from a trusted copy of its",
                  "  # /etc/ssh/ssh_host_*_key.pub) so the first connection is verified too.",
                  "  offload:hosts:"]
        for entry in values["offload:hosts"]:
            first, *rest = entry.items()
            lines.append(f"    - {first[0]}: {_scalar(first[1])}")
            lines += [f"      {k}: {_scalar(v)}" for k, v in rest]
    if kind in _CLOUD or kind is ProviderType.LOCAL_DOCKER:
        lines += ["  # Optional: offload:workers, offload:machineType, offload:dataDiskGb, offload:image,",
                  "  # offload:idleStopMinutes; each has a default (every key: docs/config.md in offload)."]
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    """VALUE as a YAML scalar: plain when it reads back as the same string, else JSON-quoted (valid YAML)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    if _PLAIN.match(text):
        import yaml

        if yaml.safe_load(text) == text:
            return text
    return json.dumps(text)


def next_step(name: str, kind: ProviderType) -> str:
    if kind is ProviderType.SSH:
        return (f"next: offload fleet up --stack {name} (or pulumi up --stack {name}); it creates nothing in the "
                f"cloud, it checks your hosts and exports them for `offload run --stack {name}`")
    return f"next: offload fleet up --stack {name} (or pulumi up --stack {name})"
