"""`offload init`: write a developer's stack file from a few high-level answers and what gcloud and git know; for
SSH hosts, pin each host's key after the user confirms it and try the login and the workspace first."""

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

from offload.cli.common import IdentityOpt
from offload.errors import ConfigError, UsageError
from offload.outputs import ProviderType, StackOutputs, WorkerRecord, fingerprint
from offload.stackconfig import is_email

app = typer.Typer()

_STACK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HOST_SPEC = re.compile(r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s\[\]]+)(?::(?P<port>\d{1,5}))?")
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._/:+-]*")
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


@app.command("init", epilog="Exit codes: 0 ok, 1 declined, 2 a missing or invalid answer, a directory that is not "
                             "a stack directory, or the stack file already exists; 3 a host cannot be reached; "
                             "4 its key changed; 8 it refused the login.")
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
    name: Annotated[Optional[list[str]], typer.Option("--name", help="For provider ssh: the worker's name (one "
                                                      "per --host, in order; default: from the host).",
                                                      show_default=False)] = None,
    workspace: Annotated[Optional[str], typer.Option("--workspace", help="For provider ssh: the directory on "
                                                     "the hosts for offload's work (default: offload in the "
                                                     "login's home there).", show_default=False)] = None,
    identity: IdentityOpt = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="For provider ssh: write the stack file without "
                                           "contacting the hosts (no key is pinned: the first connection "
                                           "trusts the key it sees, with a notice).")] = False,
    project_dir: Annotated[Optional[Path], typer.Option("--dir", help="The stack directory: an offload Pulumi "
                                                        "project (its Pulumi.yaml) whose stacks/ gets the file "
                                                        "(default: OFFLOAD_PROJECT_DIR, else ~/.config/offload).",
                                                        show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Ask nothing: use flags and detected defaults, and pin "
                                      "the host keys the hosts present.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing stack file.")] = False,
) -> None:
    """Create your stack file, Pulumi.<stack>.yaml, asking only where your workers should live.

    Project, zone and account come from your gcloud configuration and your email from git, as defaults.
    For SSH hosts it shows each host's key fingerprint and pins the key once you confirm it (--yes accepts),
    then logs in and makes the workspace. Without a terminal (or with --yes) it asks nothing and names the
    flag it is missing.
    """
    mode = Mode.BATCH if yes or not stdin_is_tty() else Mode.INTERACTIVE
    found = detect(os.environ)
    ask = _Asker(mode)

    kind = provider or ask.choice("Where should your workers live?", "--provider", default=ProviderType.GCE_COS)
    if kind is ProviderType.LOCAL:
        typer.echo("provider local is built in: it needs no stack file and no `pulumi up`; "
                   "next: offload run -- COMMAND")
        return
    if name and kind is not ProviderType.SSH:
        raise UsageError("--name is for provider ssh (the other provider types name their workers)")
    email = _developer_email(kind, developer, found, ask)
    values: dict[str, Any] = {"offload:provider": kind.value}
    if email:
        values["offload:developer"] = email
    if kind in _CLOUD:
        values["gcp:project"] = project or ask.text("Google Cloud project", "--project", default=found.project)
        values["gcp:zone"] = zone or ask.text("Zone", "--zone", default=found.zone)
    if kind is ProviderType.SSH:
        values["offload:hosts"] = _host_entries(host or [ask.text("Host (USER@HOST[:PORT])", "--host")], name,
                                                workspace, ask)

    stack_name = stack or default_stack_name(email or (values["offload:hosts"][0]["name"] if kind is ProviderType.SSH
                                                       else ""))
    if not _STACK.fullmatch(stack_name):
        raise UsageError(f"--stack must be letters, digits, '.', '_' or '-'; got {stack_name!r}")
    _validate(values)
    where = _stack_dir(project_dir)
    path = where.stack_file(stack_name)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")

    if kind is ProviderType.SSH and not no_check:
        values["offload:hosts"] = _set_up_hosts(values, identity, mode, yes, in_home=workspace is None)
    where.ensure()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_stack_file(stack_name, kind, values))
    if found.sources:
        typer.echo(f"detected: {', '.join(found.sources)}")
    typer.echo(f"wrote {path}" + (f" for developer {email}" if email else ""))
    typer.echo(next_step(stack_name, kind, stack_dir=None if _looked_up(where) else where.root, identity=identity))


def _developer_email(kind: ProviderType, given: str | None, found: Detected, ask: "_Asker") -> str:
    """The developer's email, lowercased: GIVEN, else a detected one, else asked for; for ssh hosts it may be
    empty."""
    # IAM is granted to the Google account, which may differ from the email git commits with.
    detected = (found.account or found.email) if kind in _CLOUD else (found.email or found.account)
    if kind is ProviderType.SSH:
        # Hosts you already have are not named or granted by email: it is only recorded, when known (a detected
        # one that is no email address, such as git's `me@laptop`, is left out rather than refused).
        email = given or (detected if detected and is_email(detected) else "")
    else:
        email = given or detected or ask.text("Your email (names and labels your workers)", "--developer")
    return email.strip().lower()


def _host_entries(specs: list[str], names: list[str] | None, workspace: str | None,
                  ask: "_Asker") -> list[dict[str, Any]]:
    """The `offload:hosts` entries for the --host SPECS, named by --name (one per host), else after their hosts
    (asked for on a terminal)."""
    if names and len(names) != len(specs):
        raise UsageError(f"--name is given {len(names)} times for {len(specs)} --host; give one per host, "
                         "in the same order")
    entries = [parse_host(spec, i, workspace) for i, spec in enumerate(specs)]
    guessed = [e["name"] for e in entries]
    for i, e in enumerate(entries):
        if guessed.count(e["name"]) > 1:
            e["name"] = f"{e['name']}-{i}"
        if names:
            e["name"] = names[i]
        elif ask.mode is Mode.INTERACTIVE:
            e["name"] = ask.text(f"Worker name for {e['host']}", "--name", default=e["name"])
    return entries


def _set_up_hosts(values: dict[str, Any], identity: Path | None, mode: "Mode", yes: bool, *,
                  in_home: bool) -> list[dict[str, Any]]:
    """For each host: show the key it presents and pin it once confirmed, then log in with only that key, make
    the workspace (with IN_HOME, `offload` in the login's home there) and check it. Returns the entries with
    their host_keys; raises before anything is written."""
    from offload.jobs.fleet import Reach
    from offload.jobs.setup import check_worker, home_workspace, host_key

    reach = Reach(identity=identity)
    entries = []
    for entry in values["offload:hosts"]:
        record = WorkerRecord.from_dict(entry)
        outputs = StackOutputs(ProviderType.SSH, values.get("offload:developer", ""), (record,))
        key = host_key(outputs, record, reach)
        shown = f"{key.split()[0]} {fingerprint(key)}"
        where = f"{record.host}:{record.port}"
        if mode is Mode.INTERACTIVE:
            typer.echo(f"{where} presents host key {shown}")
            typer.echo("  Compare it with what the host itself shows (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` "
                       "there, or your provider's console).")
            typer.confirm(f"Pin this key for worker {record.name}?", default=False, abort=True)
        elif not yes:
            raise UsageError(f"{where} presents host key {shown}; init pins a key only once you confirm it",
                             hint="run init on a terminal, or pass --yes to pin this key")
        typer.echo(f"pinned host key {shown} for worker {record.name} ({where})")
        entry = {**entry, "host_keys": [key]}
        pinned = WorkerRecord.from_dict(entry)
        if in_home:
            found = home_workspace(StackOutputs(ProviderType.SSH, outputs.developer, (pinned,)), pinned, reach)
            if found is not None and found != pinned.workspace:
                entry["workspace"] = found
                pinned = WorkerRecord.from_dict(entry)
        result = check_worker(StackOutputs(ProviderType.SSH, outputs.developer, (pinned,)), pinned, reach)
        typer.echo(f"logged in to {record.name} as {record.user}; workspace {pinned.workspace} is ready")
        if result.missing:
            print(f"offload: worker {record.name} lacks {' and '.join(result.missing)}, which jobs need "
                  "(install them there before `offload run`)", file=sys.stderr)
        entries.append(entry)
    return entries


def _stack_dir(given: Path | None) -> Any:
    """The stack directory init writes to: --dir, else OFFLOAD_PROJECT_DIR, each of which must already be an
    offload Pulumi project; else offload's config directory, which is made into one when the file is written."""
    from offload.stack import StackDir, default_stack_dir, stack_dir

    where = StackDir(given) if given is not None else stack_dir()
    if where.root.absolute() != default_stack_dir().absolute() or where.project_file.exists():
        where.check()
    return where


def _looked_up(where: Any) -> bool:
    """Commands given only --stack look in WHERE (it is the stack directory they resolve)."""
    from offload.stack import stack_dir

    return where.root.absolute() == stack_dir().root.absolute()


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
    if not re.fullmatch(r"[a-z][-a-z0-9]*", name or ""):
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

    m = _HOST_SPEC.fullmatch(spec.strip())
    if not m:
        raise ConfigError(f"--host must be USER@HOST[:PORT]; got {spec!r}")
    host = m["host"].strip("[]")
    user = m["user"] or getpass.getuser()
    first = host.split(".", 1)[0]
    name = first if re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,62}", first) and not host.replace(".", "").isdigit() \
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


def render_stack_file(name: str, kind: ProviderType, values: dict[str, Any]) -> str:
    """The stack file's YAML, with a comment on each key."""
    developer = values.get("offload:developer")
    lines = [f"# The offload stack {name!r}" + (f" of {developer}" if developer else "") + ", written by `offload init`.",
             *(f"# {line}" for line in _use_lines(name, kind)),
             "config:",
             "  # Where the workers live: gce-cos, gce-linux, workstation, local-docker or ssh.",
             f"  offload:provider: {_scalar(kind.value)}"]
    if developer:
        lines += ["  # Your email: it names your workers, labels them and decides who is granted access to them.",
                  f"  offload:developer: {_scalar(developer)}"]
    if "gcp:project" in values:
        lines += ["  # The Google Cloud project and zone of your workers.",
                  f"  gcp:project: {_scalar(values['gcp:project'])}",
                  f"  gcp:zone: {_scalar(values['gcp:zone'])}"]
    if "offload:hosts" in values:
        pinned = all(e.get("host_keys") for e in values["offload:hosts"])
        lines += ["  # Your hosts. host_keys pins each one's public host keys: any other key is refused."
                  if pinned else
                  "  # Your hosts. Pin each one's public host keys under host_keys (from a trusted copy of its",
                  *([] if pinned else ["  # /etc/ssh/ssh_host_*_key.pub) so that the first connection is verified too."]),
                  "  offload:hosts:"]
        for entry in values["offload:hosts"]:
            for i, (k, v) in enumerate(entry.items()):
                lead = "    - " if i == 0 else "      "
                if isinstance(v, list):
                    lines.append(f"{lead}{k}:")
                    lines += [f"        - {_scalar(item)}" for item in v]
                else:
                    lines.append(f"{lead}{k}: {_scalar(v)}")
    if kind in _CLOUD or kind is ProviderType.LOCAL_DOCKER:
        lines += ["  # Optional: offload:workers, offload:machineType, offload:dataDiskGb, offload:image,",
                  "  # offload:idleStopMinutes; each has a default (every key: docs/config.md in offload)."]
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    """VALUE as a YAML scalar: plain when it reads back as the same string, else JSON-quoted (valid YAML)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text):
        import yaml

        if yaml.safe_load(text) == text:
            return text
    return json.dumps(text)


def _use_lines(name: str, kind: ProviderType) -> list[str]:
    """How the stack is used, for the stack file's header."""
    if kind is ProviderType.SSH:
        return [f"It creates nothing and needs no Pulumi: `offload run --stack {name} -- COMMAND` reads this file",
                f"(`offload outputs --stack {name}` prints what it reads)."]
    return [f"Deploy it with `offload fleet up --stack {name}`; then `offload run --stack {name} -- COMMAND`."]


def next_step(name: str, kind: ProviderType, *, stack_dir: Path | None = None, identity: Path | None = None) -> str:
    """The `next:` line: a command that works on this machine as it is now.

    An ssh stack needs no Pulumi: its next step is a run. The others need `fleet up`, which needs the pulumi CLI.
    STACK_DIR is where the file went when the other commands would not look there by themselves.
    """
    import shlex

    env = f"OFFLOAD_PROJECT_DIR={shlex.quote(str(stack_dir))} " if stack_dir is not None else ""
    if kind is ProviderType.SSH:
        key = f" --identity {shlex.quote(str(identity))}" if identity is not None else ""
        return f"next: {env}offload run --stack {name}{key} -- COMMAND"
    up = f"{env}offload fleet up --stack {name}"
    from offload.extras import DEPLOY, install_command, missing

    extra = DEPLOY.get(kind.value)
    if extra is not None and missing(extra):
        cli = "" if shutil.which("pulumi") else " and the Pulumi CLI (https://www.pulumi.com/docs/install/)"
        return f"next: {install_command(extra)}{cli}, then: {up}"
    if shutil.which("pulumi") is None:
        return f"next: install the Pulumi CLI (https://www.pulumi.com/docs/install/), then: {up}"
    return f"next: {up}"
