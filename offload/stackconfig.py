"""Stack config: the `offload:*` keys read once and validated (shared by the Pulumi program and `offload init`).

`read_stack_config` takes a plain mapping of full keys to values, so it is testable without the Pulumi engine.
Values may be native (a list, an int) or strings as Pulumi hands them over (structured values JSON-encoded).
`load_stack_config` is the thin adapter over `pulumi.Config`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from offload.errors import ConfigError
from offload.outputs import (FULL_HISTORY, IAP_RANGE, ProviderType, StackOutputs, WorkerRecord, local_outputs,
                             parse_history_depth)
from offload.worker.layout import MAX_KEEP_JOBS, MAX_WARM_WORKTREES

# The keys every stack may set (docs/config.md); the rest are optional refinements with defaults.
PROVIDER = "offload:provider"
DEVELOPER = "offload:developer"
WORKERS = "offload:workers"
MACHINE_TYPE = "offload:machineType"
DATA_DISK_GB = "offload:dataDiskGb"
IMAGE = "offload:image"
SSH_SOURCE_RANGES = "offload:sshSourceRanges"
IDLE_STOP_MINUTES = "offload:idleStopMinutes"
HOSTS = "offload:hosts"
NETWORK = "offload:network"
SUBNETWORK = "offload:subnetwork"
SUBNET_CIDR = "offload:subnetCidr"
NAME_PREFIX = "offload:namePrefix"
WORKSPACE = "offload:workspace"
PROTECT_DATA_DISK = "offload:protectDataDisk"
KEEP_JOBS = "offload:keepJobs"
WARM_WORKTREES = "offload:warmWorktrees"
HISTORY_DEPTH = "offload:historyDepth"
RUNNING_TIMEOUT_MINUTES = "offload:runningTimeoutMinutes"
STRICT_HOST_KEYS = "offload:strictHostKeys"
TEAM = "offload:team"
GCP_PROJECT = "gcp:project"
GCP_ZONE = "gcp:zone"
GCP_REGION = "gcp:region"

OFFLOAD_KEYS = (PROVIDER, DEVELOPER, WORKERS, MACHINE_TYPE, DATA_DISK_GB, IMAGE, SSH_SOURCE_RANGES,
                IDLE_STOP_MINUTES, HOSTS, NETWORK, SUBNETWORK, SUBNET_CIDR, NAME_PREFIX, WORKSPACE,
                PROTECT_DATA_DISK, KEEP_JOBS, WARM_WORKTREES, HISTORY_DEPTH, RUNNING_TIMEOUT_MINUTES,
                STRICT_HOST_KEYS, TEAM)
GCP_KEYS = (GCP_PROJECT, GCP_ZONE, GCP_REGION)

STACK_PROVIDERS = (ProviderType.GCE_COS, ProviderType.GCE_LINUX, ProviderType.WORKSTATION,
                   ProviderType.LOCAL_DOCKER, ProviderType.SSH, ProviderType.LOCAL)
CLOUD_PROVIDERS = (ProviderType.GCE_COS, ProviderType.GCE_LINUX, ProviderType.WORKSTATION)
# Provider types that create nothing: their outputs follow from the stack config alone, without Pulumi.
STATIC_PROVIDERS = (ProviderType.SSH, ProviderType.LOCAL)

DEFAULT_MACHINE_TYPE = "e2-standard-4"
DEFAULT_DATA_DISK_GB = 100
DEFAULT_IDLE_STOP_MINUTES = 30
DEFAULT_SUBNET_CIDR = "10.10.0.0/24"
# Any image works: the worker container installs tmux and git at start when the image lacks them.
DEFAULT_WORKER_IMAGE = "docker.io/library/debian:bookworm"
DEFAULT_WORKSTATION_IMAGE = "us-central1-docker.pkg.dev/cloud-workstations-images/predefined/code-oss:latest"
MAX_WORKERS = 20
MAX_IDLE_STOP_MINUTES = 7 * 24 * 60
# Cloud Workstations stops a workstation this long after it started, busy or not; 0 means never.
MAX_RUNNING_TIMEOUT_MINUTES = 30 * 24 * 60
# What OS Login keeps of a generated POSIX name; the login profile has the final word (the runtime reads it).
OS_LOGIN_NAME_MAX = 32
# Beyond the IAP range, only addresses that can route to a worker without a public IP: RFC 1918 and RFC 6598.
PRIVATE_SOURCE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
WORKSTATION_DISK_SIZES = (10, 50, 100, 200, 500, 1000)
HOST_KEYS_ACCEPTED = ("name", "host", "port", "user", "container", "workspace", "host_keys", "proxy_command")

_DOMAIN_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL = re.compile(rf"[a-z0-9._%+-]{{1,64}}@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+")
_MACHINE_TYPE = re.compile(r"[a-z][a-z0-9]*-[a-z0-9-]{1,40}")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_PROJECT = re.compile(r"(?:[a-z][-a-z0-9.]{0,61}:)?[a-z][-a-z0-9]{0,62}")  # lenient: the API has the last word
_ZONE = re.compile(r"(?P<region>[a-z]+-[a-z]+[0-9]+)-[a-z]")
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
_NETWORK_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_.:-]{0,1000}")
_NAME_PREFIX = re.compile(r"[a-z][-a-z0-9]{4,22}[a-z0-9]")
# A team name goes into a network tag (`offload-<team>`, at most 63 characters) that the team's one SSH rule targets.
_TEAM = re.compile(r"[a-z](?:[-a-z0-9]{0,53}[a-z0-9])?")
_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")

T = TypeVar("T")


@dataclass(frozen=True)
class StackConfig:
    """One developer's stack: which provider type, whose workers, how many and of what shape."""

    provider: ProviderType
    developer: str
    workers: int = 1
    machine_type: str = DEFAULT_MACHINE_TYPE
    data_disk_gb: int = DEFAULT_DATA_DISK_GB
    image: str = DEFAULT_WORKER_IMAGE
    ssh_source_ranges: tuple[str, ...] = (IAP_RANGE,)
    idle_stop_minutes: int = DEFAULT_IDLE_STOP_MINUTES
    hosts: tuple[WorkerRecord, ...] = ()
    project: str | None = None
    zone: str | None = None
    region: str | None = None
    network: str | None = None
    subnetwork: str | None = None
    subnet_cidr: str = DEFAULT_SUBNET_CIDR
    name_prefix: str = ""
    workspace: str | None = None
    protect_data_disk: bool = True
    keep_jobs: int | None = None  # None: the worker's default
    warm_worktrees: int | None = None
    history_depth: int | str | None = None  # None: one commit; else a number of commits or "full"
    running_timeout_minutes: int = 0
    strict_host_keys: bool = False
    team: str | None = None

    @property
    def os_login_user(self) -> str:
        return os_login_user(self.developer)


def os_login_user(email: str) -> str:
    """The POSIX name OS Login usually gives a user account: the email with every non-alphanumeric turned into
    '_', cut to 32 characters. Only a guess: external accounts get an `ext_` prefix and admins may set names, so
    the runtime reads the real one from the login profile before it logs in."""
    return re.sub(r"[^a-z0-9]", "_", email.lower())[:OS_LOGIN_NAME_MAX]


def email_hash(email: str, length: int = 6) -> str:
    """A short, stable hash of the full email: two developers whose emails differ never share a name."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:length]


def worker_labels(developer: str) -> dict[str, str]:
    """Labels on every cloud resource that takes them: whose it is and what it is for."""
    owner = re.sub(r"[^a-z0-9_-]", "_", developer.lower())[:63]
    return {"owner": owner, "purpose": "offload-worker", "managed-by": "pulumi"}


def stack_hash(email: str, stack: str, length: int = 6) -> str:
    """A short, stable hash of the email and the stack's name together: two stacks of one developer in one
    project (a `gce-cos` and a `gce-linux`, say) never share a name, nor do two developers."""
    return hashlib.sha256(f"{email.strip().lower()}\n{stack.strip()}".encode()).hexdigest()[:length]


def default_name_prefix(email: str, stack: str | None = None) -> str:
    """`offload-<local part>-<hash>`: the hash of the whole email and the stack keeps `john-doe@a` and `john.doe@b`
    apart, and one developer's stacks too; 24 characters leave room for every derived name (`-sa` ids of 6-30,
    instances and disks of 63). Without STACK, the hash is of the email alone: the names offload gave before
    stacks were hashed too (`offload:namePrefix` set to that value keeps them)."""
    local = email.split("@", 1)[0].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", local).strip("-")[:9].strip("-") or "dev"
    return f"offload-{slug}-{stack_hash(email, stack) if stack else email_hash(email)}"


def legacy_name_prefix(email: str) -> str:
    """The default prefix before the stack's name was hashed in: what `offload:namePrefix` keeps an existing
    stack's resources under."""
    return default_name_prefix(email)


def team_tag(team: str) -> str:
    """The network tag on a team's workers, which the team's one SSH firewall rule targets."""
    return f"offload-{team}"


def args_from(cls: type[T], config: StackConfig) -> T:
    """An Args dataclass filled from the stack-config fields of the same names."""
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                  if hasattr(config, f.name)})


def read_stack_config(values: Mapping[str, Any], stack: str | None = None) -> StackConfig:
    """Validate VALUES (full key -> value) of the stack called STACK into a StackConfig; a bad key raises
    ConfigError naming it. STACK goes into the default names; None gives the names of before (see
    default_name_prefix)."""
    unknown = sorted(k for k in values if k.startswith("offload:") and k not in OFFLOAD_KEYS)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]}; offload reads {', '.join(OFFLOAD_KEYS)}")
    provider = _provider(values.get(PROVIDER))
    # Hosts you already have are not named, labelled or granted by email, so their stacks may leave it out.
    developer = "" if provider in STATIC_PROVIDERS and _blank(values.get(DEVELOPER)) \
        else _developer(values.get(DEVELOPER))
    cloud = provider in CLOUD_PROVIDERS
    project = _project(values.get(GCP_PROJECT), provider) if cloud else _opt_str(values, GCP_PROJECT)
    zone, region = _location(values, provider)
    network, subnetwork = _network(values)
    data_disk_gb = _int(values, DATA_DISK_GB, DEFAULT_DATA_DISK_GB, 10, 65536,
                        "an integer number of GB from 10 to 65536")
    if provider is ProviderType.WORKSTATION and data_disk_gb not in WORKSTATION_DISK_SIZES:
        raise ConfigError(f"{DATA_DISK_GB} must be one of {', '.join(map(str, WORKSTATION_DISK_SIZES))} for "
                          f"provider workstation (the persistent home disk); got {data_disk_gb}")
    default_image = DEFAULT_WORKSTATION_IMAGE if provider is ProviderType.WORKSTATION else DEFAULT_WORKER_IMAGE
    return StackConfig(
        provider=provider,
        developer=developer,
        workers=_int(values, WORKERS, 1, 1, MAX_WORKERS, f"an integer from 1 to {MAX_WORKERS}"),
        machine_type=_match(values, MACHINE_TYPE, DEFAULT_MACHINE_TYPE, _MACHINE_TYPE,
                            "a Compute Engine machine type such as e2-standard-4"),
        data_disk_gb=data_disk_gb,
        image=_match(values, IMAGE, default_image, _IMAGE,
                     "a container image reference such as us-docker.pkg.dev/PROJECT/REPO/worker:TAG"),
        ssh_source_ranges=parse_ssh_source_ranges(values.get(SSH_SOURCE_RANGES)),
        idle_stop_minutes=_int(values, IDLE_STOP_MINUTES, DEFAULT_IDLE_STOP_MINUTES, 0, MAX_IDLE_STOP_MINUTES,
                               f"an integer number of minutes from 0 (never stop) to {MAX_IDLE_STOP_MINUTES}"),
        hosts=_hosts(values.get(HOSTS), required=provider is ProviderType.SSH),
        project=project,
        zone=zone,
        region=region,
        network=network,
        subnetwork=subnetwork,
        subnet_cidr=_subnet_cidr(values.get(SUBNET_CIDR)),
        name_prefix=_match(values, NAME_PREFIX, default_name_prefix(developer, stack), _NAME_PREFIX,
                           "6-24 lowercase letters, digits or '-', starting with a letter"),
        workspace=_workspace(values.get(WORKSPACE)),
        protect_data_disk=_bool(values, PROTECT_DATA_DISK, True),
        keep_jobs=None if _blank(values.get(KEEP_JOBS)) else _int(
            values, KEEP_JOBS, 0, 0, MAX_KEEP_JOBS, f"a number of finished jobs to keep, from 0 to {MAX_KEEP_JOBS}"),
        warm_worktrees=None if _blank(values.get(WARM_WORKTREES)) else _int(
            values, WARM_WORKTREES, 0, 0, MAX_WARM_WORKTREES,
            f"a number of idle warm worktrees to keep per repository, from 0 to {MAX_WARM_WORKTREES}"),
        history_depth=None if _blank(values.get(HISTORY_DEPTH)) else _history_depth(values.get(HISTORY_DEPTH)),
        running_timeout_minutes=_int(
            values, RUNNING_TIMEOUT_MINUTES, 0, 0, MAX_RUNNING_TIMEOUT_MINUTES,
            f"the minutes a workstation may run before Cloud Workstations stops it, from 0 (never) to "
            f"{MAX_RUNNING_TIMEOUT_MINUTES}"),
        strict_host_keys=_bool(values, STRICT_HOST_KEYS, False),
        team=_team(values, network, parse_ssh_source_ranges(values.get(SSH_SOURCE_RANGES))),
    )


def with_retention(records: list[dict[str, Any]], config: StackConfig) -> list[dict[str, Any]]:
    """Every worker record with the stack's offload:keepJobs, offload:warmWorktrees, offload:historyDepth and
    offload:strictHostKeys, when set."""
    extra: dict[str, Any] = {k: v for k, v in (("keep_jobs", config.keep_jobs), ("warm_worktrees", config.warm_worktrees),
                                               ("history_depth", config.history_depth)) if v is not None}
    if config.strict_host_keys:
        extra["strict_host_keys"] = True
    return [dict(r, **extra) for r in records]


def static_workers(config: StackConfig) -> tuple[WorkerRecord, ...]:
    """The workers of a stack whose provider type creates nothing: its hosts, or this machine."""
    if config.provider is ProviderType.SSH:
        return config.hosts
    if config.provider is ProviderType.LOCAL:
        return local_outputs(config.workspace).workers
    raise ConfigError(f"provider {config.provider.value} creates its workers with Pulumi; its outputs come from "
                      "the deployed stack")


def static_outputs(config: StackConfig) -> StackOutputs:
    """The stack outputs of an `ssh` or `local` stack, built as the Pulumi program builds them (no Pulumi)."""
    records = with_retention([w.to_dict() for w in static_workers(config)], config)
    return StackOutputs.from_dict({"provider": config.provider.value, "developer": config.developer,
                                   "workers": records})


def load_stack_config() -> StackConfig:
    """Read the current stack's config through pulumi.Config and validate it."""
    import pulumi

    values: dict[str, Any] = {}
    for full_key in (*OFFLOAD_KEYS, *GCP_KEYS):
        namespace, key = full_key.split(":", 1)
        value = pulumi.Config(namespace).get(key)
        if value is not None:
            values[full_key] = value
    # Misspelt keys would otherwise be ignored silently; the runtime holds every key the stack sets.
    from pulumi.runtime.config import CONFIG

    for full_key in CONFIG.get():
        if full_key.startswith("offload:") and full_key not in values:
            values[full_key] = CONFIG.get()[full_key]
    return read_stack_config(values, pulumi.get_stack())


def _team(values: Mapping[str, Any], network: str | None, ranges: tuple[str, ...]) -> str | None:
    team = _opt_str(values, TEAM)
    if team is None:
        return None
    if ranges != (IAP_RANGE,):
        raise ConfigError(f"{SSH_SOURCE_RANGES} does not apply with {TEAM}: the team's one SSH rule says who "
                          "reaches its workers; add the ranges to that rule instead")
    if not _TEAM.fullmatch(team):
        raise ConfigError(f"{TEAM} must be a team name of 1-55 lowercase letters, digits or '-', starting with a "
                          f"letter; got {team!r}")
    if network is None:
        raise ConfigError(f"{TEAM} needs {NETWORK} and {SUBNETWORK}: a team shares one network, made once, with "
                          "one SSH firewall rule for the team's workers")
    return team


def _history_depth(value: Any) -> int | str:
    """offload:historyDepth as the worker records carry it: a number of commits, or "full"."""
    depth = parse_history_depth(value, HISTORY_DEPTH)
    return "full" if depth == FULL_HISTORY else depth


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _provider(value: Any) -> ProviderType:
    accepted = ", ".join(p.value for p in STACK_PROVIDERS)
    if _blank(value):
        raise ConfigError(f"{PROVIDER} is required: one of {accepted}")
    text = str(value).strip()
    try:
        provider = ProviderType(text)
    except ValueError:
        raise ConfigError(f"{PROVIDER} must be one of {accepted}; got {text!r}") from None
    return provider


def is_email(text: str) -> bool:
    """TEXT is an email address `offload:developer` accepts (after lowercasing)."""
    return bool(_EMAIL.fullmatch(text.strip().lower()))


def _developer(value: Any) -> str:
    if _blank(value):
        raise ConfigError(f"{DEVELOPER} is required: the developer's email, such as dev@example.com; it names the "
                          "workers and chooses who is granted access")
    text = str(value).strip().lower()
    if not _EMAIL.fullmatch(text):
        raise ConfigError(f"{DEVELOPER} must be an email address such as dev@example.com; got {value!r}")
    return text


def _opt_str(values: Mapping[str, Any], key: str) -> str | None:
    value = values.get(key)
    return None if _blank(value) else str(value).strip()


def _project(value: Any, provider: ProviderType) -> str:
    if _blank(value):
        raise ConfigError(f"{GCP_PROJECT} is required for provider {provider.value}: the Google Cloud project "
                          "id the workers live in (pulumi config set gcp:project PROJECT)")
    text = str(value).strip()
    if not _PROJECT.fullmatch(text):
        raise ConfigError(f"{GCP_PROJECT} must be a Google Cloud project id such as my-project-123; got {text!r}")
    return text


def _location(values: Mapping[str, Any], provider: ProviderType) -> tuple[str | None, str | None]:
    """(zone, region): GCE workers need a zone; a workstation cluster needs a region, or a zone to derive it."""
    zone = _opt_str(values, GCP_ZONE)
    region = _opt_str(values, GCP_REGION)
    if zone is not None:
        m = _ZONE.fullmatch(zone)
        if not m:
            raise ConfigError(f"{GCP_ZONE} must be a Compute Engine zone such as us-west1-a; got {zone!r}")
        if region is not None and region != m["region"]:
            raise ConfigError(f"{GCP_REGION} {region!r} does not contain {GCP_ZONE} {zone!r}; set one of them")
        region = m["region"]
    if region is not None and not _REGION.fullmatch(region):
        raise ConfigError(f"{GCP_REGION} must be a Google Cloud region such as us-west1; got {region!r}")
    if provider in (ProviderType.GCE_COS, ProviderType.GCE_LINUX) and zone is None:
        raise ConfigError(f"{GCP_ZONE} is required for provider {provider.value}: the zone for the workers, "
                          "such as us-west1-a")
    if provider is ProviderType.WORKSTATION and region is None:
        raise ConfigError(f"{GCP_ZONE} or {GCP_REGION} is required for provider workstation: where the cluster "
                          "lives, such as us-west1")
    return zone, region


def _network(values: Mapping[str, Any]) -> tuple[str | None, str | None]:
    network = _opt_str(values, NETWORK)
    subnetwork = _opt_str(values, SUBNETWORK)
    for key, ref in ((NETWORK, network), (SUBNETWORK, subnetwork)):
        if ref is not None and not _NETWORK_REF.fullmatch(ref):
            raise ConfigError(f"{key} must be a network name or resource path such as "
                              f"projects/PROJECT/global/networks/NAME; got {ref!r}")
    if (network is None) != (subnetwork is None):
        raise ConfigError(f"{NETWORK} and {SUBNETWORK} go together: set both to use an existing network, or "
                          "neither to create a private one")
    return network, subnetwork


def _int(values: Mapping[str, Any], key: str, default: int, lo: int, hi: int, accepted: str) -> int:
    value = values.get(key)
    if _blank(value):
        return default
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,9}\s*", value):
        number = int(value)
    if number is None or not lo <= number <= hi:
        raise ConfigError(f"{key} must be {accepted}; got {value!r}")
    return number


def _bool(values: Mapping[str, Any], key: str, default: bool) -> bool:
    value = values.get(key)
    if _blank(value):
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise ConfigError(f"{key} must be true or false; got {value!r}")


def _match(values: Mapping[str, Any], key: str, default: str, pattern: re.Pattern[str], accepted: str) -> str:
    value = values.get(key)
    if _blank(value):
        return default
    text = str(value).strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not pattern.fullmatch(text):
        raise ConfigError(f"{key} must be {accepted}; got {value!r}")
    return text


def _structured(value: Any, key: str, accepted: str) -> Any:
    """A list or object, either native or JSON-encoded as Pulumi passes structured config."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{key} must be {accepted}; got text that is not valid JSON ({e.msg})") from None
    return value


def parse_ssh_source_ranges(value: Any) -> tuple[str, ...]:
    """The IAP range always, plus any ranges the stack adds (say, a VPN that routes to the VPC)."""
    accepted = "a list of IPv4 CIDR ranges such as [\"10.8.0.0/16\"]"
    if _blank(value):
        return (IAP_RANGE,)
    if isinstance(value, str) and not value.lstrip().startswith("["):
        items: Any = [part.strip() for part in value.split(",") if part.strip()]
    else:
        items = _structured(value, SSH_SOURCE_RANGES, accepted)
    if not isinstance(items, list):
        raise ConfigError(f"{SSH_SOURCE_RANGES} must be {accepted}; got {value!r}")
    ranges = [IAP_RANGE]
    for i, item in enumerate(items):
        where = f"{SSH_SOURCE_RANGES}[{i}]"
        try:
            net = ipaddress.IPv4Network(str(item).strip(), strict=True) if isinstance(item, str) else None
        except ValueError:
            net = None
        if net is None:
            raise ConfigError(f"{where} must be an IPv4 CIDR range such as 10.8.0.0/16 (no host bits set); "
                              f"got {item!r}")
        if not any(net.subnet_of(ipaddress.IPv4Network(p)) for p in (IAP_RANGE, *PRIVATE_SOURCE_RANGES)):
            raise ConfigError(f"{where} must be a private range (inside {', '.join(PRIVATE_SOURCE_RANGES)}): "
                              f"workers have no public IP and are reached through IAP; got {item!r}")
        if str(net) not in ranges:
            ranges.append(str(net))
    return tuple(ranges)


def _subnet_cidr(value: Any) -> str:
    if _blank(value):
        return DEFAULT_SUBNET_CIDR
    try:
        net = ipaddress.IPv4Network(str(value).strip(), strict=True)
    except ValueError:
        net = None
    if net is None or not net.is_private or not 8 <= net.prefixlen <= 29:
        raise ConfigError(f"{SUBNET_CIDR} must be a private IPv4 range from /8 to /29 such as "
                          f"{DEFAULT_SUBNET_CIDR}; got {value!r}")
    return str(net)


def _workspace(value: Any) -> str | None:
    if _blank(value):
        return None
    text = str(value).strip()
    if not _PATH.fullmatch(text) or "/../" in f"{text}/" or text == "/":
        raise ConfigError(f"{WORKSPACE} must be an absolute path such as /srv/offload; got {value!r}")
    return text.rstrip("/")


def _hosts(value: Any, *, required: bool) -> tuple[WorkerRecord, ...]:
    accepted = "a list of {name, host, port, user, container, workspace, host_keys}"
    if _blank(value):
        if required:
            raise ConfigError(f"{HOSTS} is required for provider ssh: {accepted}")
        return ()
    items = _structured(value, HOSTS, accepted)
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{HOSTS} must be {accepted}; got {value!r}")
    records: list[WorkerRecord] = []
    for i, item in enumerate(items):
        where = f"{HOSTS}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object with {', '.join(HOST_KEYS_ACCEPTED)}; got {item!r}")
        extra = sorted(set(item) - set(HOST_KEYS_ACCEPTED))
        if extra:
            raise ConfigError(f"{where} has unknown key {extra[0]!r}; accepted: {', '.join(HOST_KEYS_ACCEPTED)}")
        port = item.get("port")
        if isinstance(port, str) and port.strip().isdigit():
            item = {**item, "port": int(port)}
        try:
            records.append(WorkerRecord.from_dict(item, i))
        except ConfigError as e:
            # WorkerRecord speaks of workers[...]; the user wrote offload:hosts[...].
            message = re.sub(r"^workers\[[^\]]*\]", where, e.message)
            raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    names = [r.name for r in records]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{HOSTS} names must be unique; {dupes[0]!r} appears more than once")
    return tuple(records)
