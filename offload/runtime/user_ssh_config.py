"""What the user's ~/.ssh/config says about a worker's host: the HostName, Port and User an alias stands for.

Read only: the entries `offload ssh-config` writes for plain ssh are `offload.cli.ssh_config`'s.

A worker record may name an OpenSSH alias as its host and leave `port` or `user` null; they are then taken from
~/.ssh/config (read with paramiko.SSHConfig, as fabric reads it), else 22 and the local user. The HostName and
port found here are also the name under which known_hosts files keep the host's keys, for paramiko and OpenSSH.
"""

from __future__ import annotations

import dataclasses
import getpass
from dataclasses import dataclass
from pathlib import Path

from offload.errors import ConfigError
from offload.outputs import WorkerRecord
from offload.runtime.hostkeys import host_id

DEFAULT_PORT = 22


@dataclass(frozen=True)
class HostConfig:
    """One host as ~/.ssh/config has it (None where the file says nothing)."""

    hostname: str
    port: int | None = None
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    proxy_command: str | None = None


def config_path() -> Path:
    return Path.home() / ".ssh" / "config"


_cache: dict[tuple[str, int, str], HostConfig] = {}


def lookup(host: str) -> HostConfig:
    """HOST as the user's ~/.ssh/config describes it. Without that file nothing is loaded (a command that reaches its
    workers through the connection agent loads no SSH library)."""
    path = config_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return HostConfig(hostname=host)
    cached = _cache.get((str(path), mtime, host))
    if cached is not None:
        return cached
    import paramiko

    try:
        found = paramiko.SSHConfig.from_path(str(path)).lookup(host)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    except Exception as e:  # paramiko raises bare exceptions for lines it cannot parse
        raise ConfigError(f"cannot use {path} for host {host}: {e}") from None
    port = found.get("port")
    try:
        port_number = int(port) if port is not None else None
    except ValueError:
        raise ConfigError(f"{path} gives host {host} the port {port!r}, which is not a number") from None
    result = HostConfig(hostname=found.get("hostname") or host, port=port_number, user=found.get("user"),
                        identity_files=tuple(found.get("identityfile") or ()),
                        proxy_command=found.get("proxycommand"))
    _cache[(str(path), mtime, host)] = result
    return result


def resolve(record: WorkerRecord) -> WorkerRecord:
    """RECORD with a null port or user filled in: from ~/.ssh/config for its host, else 22 and the local user.
    The host stays as given, so that an alias keeps its IdentityFile and ProxyCommand when the connection is made."""
    if record.port is not None and record.user is not None:
        return record
    found = lookup(record.host)
    port = record.port or found.port or DEFAULT_PORT
    user = record.user or found.user or _local_user()
    try:
        return dataclasses.replace(record, port=port, user=user)
    except ConfigError as e:
        raise ConfigError(f"{e.message} (taken from {config_path()} for host {record.host})") from None


def known_name(record: WorkerRecord) -> str:
    """The known_hosts name of RECORD's address: its HostName (an alias resolved) and port, as paramiko and
    OpenSSH look the host key up."""
    return host_id(lookup(record.host).hostname, record.port or DEFAULT_PORT)


def _local_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
