"""`offload ssh-config`: OpenSSH `Host` entries for the workers, so plain ssh, rsync and editors reach them.

Every entry verifies the worker's host key against offload's managed known_hosts (StrictHostKeyChecking yes);
the keys the stack pins are written there first, and a GCE worker's published keys are read from its guest
attributes when none is known yet.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from offload.cli.app import app
from offload.cli.common import IdentityOpt, OutputsOpt, StackOpt, resolve_outputs
from offload.errors import ConfigError, OffloadError
from offload.outputs import ProviderType, StackOutputs
from offload.runtime.hostkeys import KnownHosts, host_id
from offload.runtime.iap import iap_proxy_command

INCLUDE_FILE = Path("config.d") / "offload"
BLOCK_BEGIN = "# >>> offload: managed by `offload ssh-config --install` >>>"
BLOCK_END = "# <<< offload <<<"
SERVER_ALIVE_INTERVAL = 30
SERVER_ALIVE_COUNT_MAX = 4
_NO_SSH = (ProviderType.LOCAL, ProviderType.LOCAL_DOCKER)
_SAFE = re.compile(r"^[A-Za-z0-9@%+=:,./_~-]+$")


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
    known = KnownHosts.default()
    _trust_host_keys(out, known)
    key = identity or (Path(os.environ["OFFLOAD_SSH_KEY"]) if os.environ.get("OFFLOAD_SSH_KEY") else None)
    text = render_ssh_config(out, known_hosts=known.path, identity=key, iap=iap)
    if not install:
        sys.stdout.write(text)
        return
    target = install_ssh_config(text, Path.home() / ".ssh")
    example = f"ssh {out.workers[0].name}" if _reaches_by_ssh(out) else "no worker of this stack uses SSH"
    typer.echo(f"wrote {target}, included from ~/.ssh/config; {example}")


def render_ssh_config(out: StackOutputs, *, known_hosts: Path, identity: Path | None = None,
                      iap: bool = False) -> str:
    """The ssh_config text for OUT's workers: a header, then one Host block per SSH-reachable worker."""
    developer = " ".join(out.developer.split()) or "no developer"
    lines = [f"# offload workers ({out.provider.value}, {developer}), written by `offload ssh-config`."]
    for w in out.workers:
        if not _reaches_by_ssh(out):
            lines.append(f"# {w.name}: a {out.provider.value} worker on this machine, reached without SSH: "
                         "no entry.")
            continue
        proxy = iap_proxy_command(w) if iap and out.provider.is_gce else w.proxy_command
        lines += ["", f"Host {w.name}", f"    HostName {w.host}", f"    Port {w.port}"]
        if w.user:
            lines.append(f"    User {w.user}")
        if identity is not None:
            lines += [f"    IdentityFile {_path_value(identity.expanduser().absolute())}",
                      "    IdentitiesOnly yes"]
        lines += [f"    UserKnownHostsFile {_path_value(known_hosts)}",
                  "    StrictHostKeyChecking yes",
                  f"    ServerAliveInterval {SERVER_ALIVE_INTERVAL}",
                  f"    ServerAliveCountMax {SERVER_ALIVE_COUNT_MAX}"]
        if proxy:
            if "\n" in proxy or "\r" in proxy:
                raise ConfigError(f"worker {w.name!r} has a proxy_command that spans lines")
            lines.append(f"    ProxyCommand {proxy}")
        if w.container:
            lines.append(f"    # Jobs run in container {w.container} on this host.")
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


def _trust_host_keys(out: StackOutputs, known: KnownHosts) -> None:
    """Pinned keys go into the managed known_hosts; a GCE worker with none known yet has its published keys
    read from guest attributes (an authenticated API, not the network path being verified)."""
    if not _reaches_by_ssh(out):
        return
    for w in out.workers:
        name = host_id(w.host, w.port)
        for key in w.host_keys:
            known.add(name, key)
        if w.host_keys or known.lookup(name) or not (out.provider.is_gce and w.instance):
            continue
        from offload.providers.gce_api import ComputeApi

        try:
            keys = ComputeApi.for_worker(w).host_keys(w.instance or "")
        except OffloadError as e:
            print(f"offload: {w.name}: no host key known and none read from the Compute API: {e.line()}",
                  file=sys.stderr)
            continue
        for key in keys:
            known.add(name, key)
        if not keys:
            print(f"offload: {w.name}: no host key known yet and the instance has published none; ssh will "
                  f"refuse it until it has", file=sys.stderr)


def _reaches_by_ssh(out: StackOutputs) -> bool:
    return out.provider not in _NO_SSH


def _path_value(path: Path) -> str:
    """PATH as an ssh_config value: '%' doubled (ssh expands %-tokens in paths), quoted when it has spaces."""
    text = str(path)
    if "\n" in text or '"' in text:
        raise ConfigError(f"cannot use {text!r} in ssh_config: it contains a newline or a double quote")
    text = text.replace("%", "%%")
    return text if _SAFE.match(text) else f'"{text}"'


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
