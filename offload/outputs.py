"""The stack-outputs contract: plain dataclasses shared by the Pulumi program and the runtime.

This module must import neither pulumi nor fabric: the infrastructure builds these records and the
runtime parses them, so both halves agree on one definition.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from offload.errors import ConfigError

IAP_RANGE = "35.235.240.0/20"
# The contract as a JSON Schema (docs/outputs.md explains each field; `offload outputs --schema` prints it).
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "stack-outputs.schema.json"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_CONTAINER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9:.\[\]_-]{1,253}")
_CORE_FIELDS = ("name", "host", "port", "user", "container", "workspace", "instance", "project", "zone",
                "host_keys", "proxy_command")
_OPTIONAL_TEXT = ("instance", "project", "zone", "proxy_command", "region", "workstation_cluster",
                  "workstation_config", "image", "machine_type")
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
# One line: the type, the key and an optional comment, apart by spaces or tabs (as OpenSSH reads them).
_HOST_KEY = re.compile(rf"[ \t]*({'|'.join(_KEY_TYPES)})[ \t]+([A-Za-z0-9+/]+=*)(?:[ \t][^\n]*)?")
_WHOLE_NUMBERS = ("port", "idle_stop_minutes", "keep_jobs", "warm_worktrees", "history_depth")


class ProviderType(str, Enum):
    """Where a stack's workers live; the value is the `offload:provider` config string."""

    GCE_COS = "gce-cos"
    GCE_LINUX = "gce-linux"
    WORKSTATION = "workstation"
    LOCAL_DOCKER = "local-docker"
    SSH = "ssh"
    LOCAL = "local"

    @classmethod
    def parse(cls, value: object, *, key: str = "provider") -> "ProviderType":
        try:
            return cls(str(value))
        except ValueError:
            accepted = ", ".join(p.value for p in cls)
            raise ConfigError(f"{key} must be one of {accepted}; got {value!r}") from None

    @property
    def is_gce(self) -> bool:
        return self in (ProviderType.GCE_COS, ProviderType.GCE_LINUX)


def validate_name(value: object, key: str) -> str:
    """A worker or resource name: letters, digits, '.', '_' and '-', at most 63 characters."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"{key} must be 1-63 letters, digits, '.', '_' or '-' starting with a letter or digit; "
                          f"got {value!r}")
    return value


def validate_host_key(value: object, key: str) -> str:
    """A public host key line: '<type> <base64>' with an optional comment."""
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a public key line such as 'ssh-ed25519 AAAA...'; got {value!r}")
    m = _HOST_KEY.fullmatch(value)
    if not m:
        raise ConfigError(f"{key} must be a public key line '<type> <base64>' with type one of "
                          f"{', '.join(_KEY_TYPES)}; got {value[:40]!r}")
    return f"{m[1]} {m[2]}"


def fingerprint(key_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a 'type base64' public key line, as `ssh-keygen -lf` shows it."""
    import base64
    import hashlib

    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class WorkerRecord:
    """One worker as the runtime needs to reach it."""

    name: str
    host: str
    workspace: str
    port: int | None = 22   # None: from the user's ~/.ssh/config for this host, else 22
    user: str | None = None  # None: from the user's ~/.ssh/config for this host, else the local user
    container: str | None = None
    instance: str | None = None
    project: str | None = None
    zone: str | None = None
    host_keys: tuple[str, ...] = ()
    proxy_command: str | None = None
    # Optional fields beyond the core contract; absent keys take these defaults.
    region: str | None = None               # workstation: the cluster's region
    workstation_cluster: str | None = None  # workstation: cluster id
    workstation_config: str | None = None   # workstation: config id
    image: str | None = None
    machine_type: str | None = None
    hourly_cost_usd: float | None = None
    idle_stop_minutes: int | None = None
    keep_jobs: int | None = None       # finished jobs the worker keeps (None: its default)
    warm_worktrees: int | None = None  # idle warm worktrees it keeps per repository (None: its default)
    history_depth: int | str | None = None  # commits of history a first sync sends: a number, or "full"
    # offload:strictHostKeys: refuse a host key that nothing vouches for, instead of trusting it on first use.
    strict_host_keys: bool | None = None

    def __post_init__(self) -> None:
        where = f"workers[{self.name!r}]"
        validate_name(self.name, "workers[].name")
        if not isinstance(self.host, str) or not _HOST.fullmatch(self.host):
            raise ConfigError(f"{where}.host must be a hostname or IP address; got {self.host!r}")
        if self.port is not None and (isinstance(self.port, bool) or not isinstance(self.port, int)
                                      or not 1 <= self.port <= 65535):
            raise ConfigError(f"{where}.port must be an integer from 1 to 65535 or null; got {self.port!r}")
        if self.user is not None and (not isinstance(self.user, str) or not _USER.fullmatch(self.user)):
            raise ConfigError(f"{where}.user must be a login name (letters, digits, '_', '.', '-'); got {self.user!r}")
        if self.container is not None and (not isinstance(self.container, str) or not _CONTAINER.fullmatch(self.container)):
            raise ConfigError(f"{where}.container must be a container name or null; got {self.container!r}")
        if not isinstance(self.workspace, str) or not self.workspace.startswith("/") \
                or any(ord(c) < 32 or ord(c) == 127 for c in self.workspace) or "/../" in f"{self.workspace}/":
            raise ConfigError(f"{where}.workspace must be an absolute path without control characters; "
                              f"got {self.workspace!r}")
        for key_name in _OPTIONAL_TEXT:
            v = getattr(self, key_name)
            if v is not None and (not isinstance(v, str) or not v):
                raise ConfigError(f"{where}.{key_name} must be a non-empty string or null; got {v!r}")
        for i, hk in enumerate(self.host_keys):
            validate_host_key(hk, f"{where}.host_keys[{i}]")
        cost = self.hourly_cost_usd
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float))
                                 or not math.isfinite(cost) or cost < 0):
            raise ConfigError(f"{where}.hourly_cost_usd must be a number of dollars or null; got {cost!r}")
        for key_name, what in (("idle_stop_minutes", "a whole number of minutes"),
                               ("keep_jobs", "a whole number of jobs"), ("warm_worktrees", "a whole number")):
            v = getattr(self, key_name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ConfigError(f"{where}.{key_name} must be {what} or null; got {v!r}")
        if self.history_depth is not None:
            # In the outputs a depth is a number, or "full" itself: no other text, as the schema says.
            if isinstance(self.history_depth, str) and self.history_depth != "full":
                raise ConfigError(f"{where}.history_depth takes {HISTORY_DEPTH_ACCEPTS}; got {self.history_depth!r}")
            parse_history_depth(self.history_depth, f"{where}.history_depth")
        if self.strict_host_keys is not None and not isinstance(self.strict_host_keys, bool):
            raise ConfigError(f"{where}.strict_host_keys must be true, false or null; got {self.strict_host_keys!r}")

    @classmethod
    def from_dict(cls, data: object, index: int = 0) -> "WorkerRecord":
        if not isinstance(data, dict):
            raise ConfigError(f"workers[{index}] must be an object with name, host and workspace; got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("name", "host", "workspace") if data.get(k) in (None, "")]
        if missing:
            raise ConfigError(f"workers[{index}] is missing {', '.join(missing)}")
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for key_name in _WHOLE_NUMBERS:
            v = values.get(key_name)
            if isinstance(v, float) and v.is_integer():
                values[key_name] = int(v)  # JSON has numbers, not integers: 22.0 is the whole number 22
        for key_name in ("user", "container", *_OPTIONAL_TEXT):
            if values.get(key_name) == "":
                values[key_name] = None  # an empty string means "not set", as null does
        keys = values.get("host_keys") or ()
        if isinstance(keys, str) or not isinstance(keys, (list, tuple)):
            raise ConfigError(f"workers[{index}].host_keys must be a list of public key lines; got {keys!r}")
        values["host_keys"] = tuple(validate_host_key(k, f"workers[{index}].host_keys[{j}]") for j, k in enumerate(keys))
        values.setdefault("port", None)  # absent, as null: the runtime takes it from ~/.ssh/config, else 22
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The record as the outputs carry it: every core field, and the optional ones that are set."""
        data = dataclasses.asdict(self)
        data["host_keys"] = list(self.host_keys)
        return {k: v for k, v in data.items() if k in _CORE_FIELDS or v is not None}


FULL_HISTORY = 0  # a history depth: every commit
DEFAULT_HISTORY_DEPTH = 1
MAX_HISTORY_DEPTH = 1_000_000
HISTORY_DEPTH_ACCEPTS = f'a number of commits from 1 to {MAX_HISTORY_DEPTH}, or "full"'


def parse_history_depth(value: object, what: str) -> int:
    """How many commits of history a sync sends a worker that lacks them, as WHAT (a flag, a key) gave it: a whole
    number from 1, or "full" (FULL_HISTORY). Anything else is a ConfigError naming WHAT."""
    if isinstance(value, str) and value.strip().lower() == "full":
        return FULL_HISTORY
    number: object = value
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_HISTORY_DEPTH:
        raise ConfigError(f"{what} takes {HISTORY_DEPTH_ACCEPTS}; got {value!r}")
    return number


def history_depth_text(depth: int) -> str:
    """DEPTH as the flag and the key take it."""
    return "full" if depth == FULL_HISTORY else str(depth)


@dataclass(frozen=True)
class StackOutputs:
    """Everything `pulumi stack output --json` gives: the provider type, its developer and workers."""

    provider: ProviderType
    developer: str
    workers: tuple[WorkerRecord, ...] = field(default_factory=tuple)
    # When the last `pulumi up` ran the program (UTC, ISO 8601): IAM grants it made may still be propagating.
    deployed_at: str | None = None

    def __post_init__(self) -> None:
        if self.deployed_at is not None and deployed_epoch(self.deployed_at) is None:
            raise ConfigError(f"deployed_at must be a UTC time such as 2026-01-31T12:00:00Z; got {self.deployed_at!r}")
        names = [w.name for w in self.workers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"workers have duplicate names: {', '.join(dupes)}")

    @classmethod
    def from_dict(cls, data: object) -> "StackOutputs":
        if not isinstance(data, dict):
            raise ConfigError("stack outputs must be a JSON object with provider, developer and workers")
        provider = ProviderType.parse(data.get("provider"))
        developer = data.get("developer")
        if developer is None:
            developer = ""
        elif not isinstance(developer, str):
            raise ConfigError(f"developer must be a string; got {developer!r}")
        workers = data.get("workers")
        if not isinstance(workers, list) or not workers:
            raise ConfigError("workers must be a non-empty list of worker records")
        deployed_at = data.get("deployed_at")
        if deployed_at is not None and not isinstance(deployed_at, str):
            raise ConfigError(f"deployed_at must be a UTC time such as 2026-01-31T12:00:00Z; got {deployed_at!r}")
        return cls(provider, developer, tuple(WorkerRecord.from_dict(w, i) for i, w in enumerate(workers)),
                   deployed_at=deployed_at or None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "StackOutputs":
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read outputs file {p}: {e.strerror or e}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if _is_stack_file(text):
                raise ConfigError(f"outputs file {p} is a stack file, not stack outputs",
                                  hint=_stack_file_hint(p)) from None
            raise ConfigError(f"outputs file {p} is not valid JSON: line {e.lineno}: {e.msg}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"provider": self.provider.value, "developer": self.developer,
                                "workers": [w.to_dict() for w in self.workers]}
        if self.deployed_at is not None:
            data["deployed_at"] = self.deployed_at
        return data

    def deployed_seconds_ago(self, now: float | None = None) -> float | None:
        """Seconds since the last `pulumi up` ran the program; None when the outputs do not say."""
        import time

        when = deployed_epoch(self.deployed_at) if self.deployed_at else None
        return None if when is None else (time.time() if now is None else now) - when

    def worker(self, name: str) -> WorkerRecord:
        for w in self.workers:
            if w.name == name:
                return w
        raise ConfigError(f"no worker named {name!r}; this stack has {', '.join(w.name for w in self.workers)}")


def deployed_epoch(text: str) -> float | None:
    """TEXT (an ISO 8601 time with its zone, `Z` for UTC) as seconds since the epoch; None when it is not one."""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return when.timestamp() if when.tzinfo is not None else None


def _is_stack_file(text: str) -> bool:
    """TEXT is a Pulumi stack file (YAML with a `config` mapping), which users pass as outputs by mistake."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and isinstance(data.get("config"), dict)


def _stack_file_hint(path: Path) -> str:
    from offload.paths import config_dir

    m = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", path.name)
    stack = m[1] if m else "NAME"
    where = Path(os.environ["OFFLOAD_PROJECT_DIR"]) if os.environ.get("OFFLOAD_PROJECT_DIR") else config_dir()
    return f"pass --stack {stack} instead; stack files are read from {where / 'stacks'}"


def local_outputs(workspace: str | None = None) -> StackOutputs:
    """The built-in `local` worker: this machine, used when no stack or outputs are given."""
    import getpass

    from offload.paths import cache_dir

    ws = workspace or os.environ.get("OFFLOAD_LOCAL_WORKSPACE") or str(cache_dir() / "local")
    user = getpass.getuser()
    if not _USER.fullmatch(user):
        user = None
    return StackOutputs(ProviderType.LOCAL, developer=user or "",
                        workers=(WorkerRecord(name="local", host="localhost", workspace=ws, user=user),))
