"""`offload ssh-config`: writes OpenSSH `Host` entries for the workers, so plain ssh, rsync and editors reach them.

(What offload reads of the user's own ~/.ssh/config is `offload.runtime.user_ssh_config`.)

Every entry verifies the worker's host key against offload's managed known_hosts (StrictHostKeyChecking yes).
Each worker's provider says how plain ssh reaches it and puts the keys it trusts there first: exactly the keys the
stack pins (older lines of that host are replaced), for a GCE worker the keys it publishes in its guest attributes
when none is known yet, else the key remembered from offload's first connection.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Union

import typer

from offload.cli.common import IdentityOpt, OutputsOpt, StackOpt, open_fleet, resolve_outputs
from offload.errors import ConfigError, OffloadError
from offload.outputs import StackOutputs

if TYPE_CHECKING:
    from offload.jobs.fleet import SshEntry

app = typer.Typer()

INCLUDE_FILE = Path("config.d") / "offload"
BLOCK_BEGIN = "# >>> offload: managed by `offload ssh-config --install` >>>"
BLOCK_END = "# <<< offload <<<"
SERVER_ALIVE_INTERVAL = 30
SERVER_ALIVE_COUNT_MAX = 4
_SAFE = re.compile(r"[A-Za-z0-9@%+=:,./_~-]+")


@app.command("ssh-config", epilog="Exit codes: 0 ok, 2 usage or configuration error.")
def ssh_config(
    stack: StackOpt = None,
    outputs: OutputsOpt = None,
    identity: IdentityOpt = None,
    iap: Annotated[bool, typer.Option("--iap", help="Reach GCE workers through an IAP tunnel (gcloud) instead "
                                      "of their internal address.")] = False,
    install: Annotated[bool, typer.Option("--install", help=f"Write the entries to ~/.ssh/{INCLUDE_FILE} and "
                                          "include it from ~/.ssh/config (idempotent).")] = False,
) -> None:
    """Print an ssh_config `Host` entry for each worker reachable over SSH, named after the worker.

    Host keys are checked strictly against offload's known_hosts, into which the stack's pinned keys are
    written. Local and local-docker workers get no entry.
    """
    out = resolve_outputs(outputs, stack)
    key = identity or (Path(os.environ["OFFLOAD_SSH_KEY"]) if os.environ.get("OFFLOAD_SSH_KEY") else None)
    entries: list[SshEntry | str] = []
    with open_fleet(out, None, key, iap) as fleet:
        for provider in fleet.providers:
            entry = provider.ssh_entry()
            if entry is None:
                entries.append(provider.name)
                continue
            _trust(provider, out)
            entries.append(entry)
    text = render_ssh_config(out, entries, identity=key)
    if not install:
        sys.stdout.write(text)
        return
    target = install_ssh_config(text, Path.home() / ".ssh")
    reachable = [e for e in entries if not isinstance(e, str)]
    example = f"ssh {reachable[0].name}" if reachable else "no worker of this stack uses SSH"
    typer.echo(f"wrote {target}, included from ~/.ssh/config; {example}")


def _trust(provider, out: StackOutputs) -> None:  # noqa: ANN001 (a WorkerProvider, seen through the fleet)
    """Have PROVIDER put the keys it trusts in the managed known_hosts; say so when ssh will refuse it."""
    try:
        keys = provider.trust_host_keys()
    except OffloadError as e:
        print(f"offload: {provider.name}: no host key known and none read from the Compute API: {e.line()}",
              file=sys.stderr)
        return
    if not keys and out.provider.is_gce:
        print(f"offload: {provider.name}: no host key known yet and the instance has published none; ssh will "
              f"refuse it until it has", file=sys.stderr)
    elif not keys:
        print(f"offload: {provider.name}: no host key known yet (none pinned in host_keys, and offload has not "
              f"connected to it); ssh will refuse it until you pin its key, or until offload connects once "
              f"(`offload status`) and trusts it on first use", file=sys.stderr)


def render_ssh_config(out: StackOutputs, entries: "list[Union[SshEntry, str]]", *,
                      identity: Path | None = None) -> str:
    """The ssh_config text: a header, then one Host block per entry; a worker reached without SSH (given by
    its name) gets a comment instead."""
    developer = " ".join(out.developer.split()) or "no developer"
    lines = [f"# offload workers ({out.provider.value}, {developer}), written by `offload ssh-config`."]
    for e in entries:
        if isinstance(e, str):
            lines.append(f"# {e}: a {out.provider.value} worker on this machine, reached without SSH: no entry.")
            continue
        lines += ["", f"Host {e.name}", f"    HostName {e.host}", f"    Port {e.port}"]
        if e.user:
            lines.append(f"    User {e.user}")
        if identity is not None:
            lines += [f"    IdentityFile {_path_value(identity.expanduser().absolute())}",
                      "    IdentitiesOnly yes"]
        else:
            lines += [f"    IdentityFile {_path_value(Path(f))}" for f in e.identity_files]
        lines += [f"    UserKnownHostsFile {_path_value(e.known_hosts)}",
                  "    StrictHostKeyChecking yes",
                  f"    ServerAliveInterval {SERVER_ALIVE_INTERVAL}",
                  f"    ServerAliveCountMax {SERVER_ALIVE_COUNT_MAX}"]
        if e.proxy_command:
            if "\n" in e.proxy_command or "\r" in e.proxy_command:
                raise ConfigError(f"worker {e.name!r} has a proxy_command that spans lines")
            lines.append(f"    ProxyCommand {e.proxy_command}")
        if e.container:
            lines.append(f"    # Jobs run in container {e.container} on this host.")
    return "\n".join(lines) + "\n"


def install_ssh_config(text: str, ssh_dir: Path) -> Path:
    """Write TEXT to SSH_DIR/config.d/offload and make SSH_DIR/config include it from a managed block at the top.

    Re-running replaces the file and the block in place; the rest of ~/.ssh/config is left as it was.
    """
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = ssh_dir / INCLUDE_FILE
    target.parent.mkdir(mode=0o700, exist_ok=True)
    _write_private(target, text)
    # Follow a symlinked config (dotfile managers) rather than replacing the link with a file.
    config = (ssh_dir / "config").resolve()
    try:
        current = config.read_text()
    except FileNotFoundError:
        current = ""
    block = f"{BLOCK_BEGIN}\n# Include must come before any Host line, or it would apply to that host only.\n" \
            f"Include {INCLUDE_FILE.as_posix()}\n{BLOCK_END}\n"
    pattern = re.compile(rf"^{re.escape(BLOCK_BEGIN)}\n.*?^{re.escape(BLOCK_END)}\n?", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current, count=1)
    else:
        updated = block + ("\n" + current if current else "")
    if updated != current:
        _write_private(config, updated)
    return target


def _path_value(path: Path) -> str:
    """PATH as an ssh_config value: '%' doubled (ssh expands %-tokens in paths), quoted when it has spaces."""
    text = str(path)
    if "\n" in text or '"' in text:
        raise ConfigError(f"cannot use {text!r} in ssh_config: it contains a newline or a double quote")
    text = text.replace("%", "%%")
    return text if _SAFE.fullmatch(text) else f'"{text}"'


def _write_private(path: Path, text: str) -> None:
    """Replace PATH atomically with TEXT, keeping its mode (0600 for a new file)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    tmp = path.with_name(f".{path.name}.offload-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
