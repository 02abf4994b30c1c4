"""What the user's ~/.ssh/config says about a worker's host: the HostName, Port and User an alias stands for.

Read only: the entries `offload ssh-config` writes for plain ssh are `offload.cli.ssh_config`'s.

A worker record may name an OpenSSH alias as its host and leave `port` or `user` null; they are then taken from
~/.ssh/config (read with paramiko.SSHConfig, as fabric reads it), else 22 and the local user. The HostName and
port found here are also the name under which known_hosts files keep the host's keys, for paramiko and OpenSSH.

A command that reaches its workers through the connection agent has the agent parse the file
(`offload.runtime.agent.host_config`), so that the command itself loads no SSH library.
"""

from __future__ import annotations

import dataclasses
import getpass
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HostConfig":
        return cls(hostname=str(data["hostname"]), port=data.get("port"), user=data.get("user"),
                   identity_files=tuple(data.get("identity_files") or ()), proxy_command=data.get("proxy_command"))


# Parses a config file for one host: `read` here, or the connection agent's client, which has the agent parse it.
Reader = Callable[[Path, str], HostConfig]
Lookup = Callable[[str], HostConfig]


def config_path() -> Path:
    return Path.home() / ".ssh" / "config"


_cache: dict[tuple[str, int, str], HostConfig] = {}


def lookup(host: str, reader: Reader | None = None) -> HostConfig:
    """HOST as the user's ~/.ssh/config describes it. Without that file nothing is parsed; with it, READER parses
    it (`read` by default, which loads paramiko)."""
    return lookup_in(config_path(), host, reader or read)


def lookup_in(path: Path, host: str, reader: Reader | None = None) -> HostConfig:
    """HOST as the config file at PATH describes it, parsed once for each version of the file."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return HostConfig(hostname=host)
    cached = _cache.get((str(path), mtime, host))
    if cached is None:
        cached = _cache[(str(path), mtime, host)] = (reader or read)(path, host)
    return cached


def read(path: Path, host: str) -> HostConfig:
    """HOST as the config file at PATH describes it, parsed in this process with paramiko, as fabric parses it."""
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
    return HostConfig(hostname=found.get("hostname") or host, port=port_number, user=found.get("user"),
                      identity_files=tuple(found.get("identityfile") or ()), proxy_command=found.get("proxycommand"))


def resolve(record: WorkerRecord, lookup_host: Lookup = lookup) -> WorkerRecord:
    """RECORD with a null port or user filled in: from ~/.ssh/config for its host, else 22 and the local user.
    The host stays as given, so that an alias keeps its IdentityFile and ProxyCommand when the connection is made."""
    if record.port is not None and record.user is not None:
        return record
    found = lookup_host(record.host)
    port = record.port or found.port or DEFAULT_PORT
    user = record.user or found.user or _local_user()
    try:
        return dataclasses.replace(record, port=port, user=user)
    except ConfigError as e:
        raise ConfigError(f"{e.message} (taken from {config_path()} for host {record.host})") from None


def known_name(record: WorkerRecord, lookup_host: Lookup = lookup) -> str:
    """The known_hosts name of RECORD's address: its HostName (an alias resolved) and port, as paramiko and
    OpenSSH look the host key up."""
    return host_id(lookup_host(record.host).hostname, record.port or DEFAULT_PORT)


def _local_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
