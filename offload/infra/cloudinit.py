"""Boot configuration of GCE workers: COS cloud-config, the Debian startup script and the idle auto-stop.

Both renderings come from one BootSpec (files to write, commands to run). The shell scripts are the package's
boot scripts (offload/worker/sh); everything per-stack reaches them through `Environment=` lines of their
systemd units, and those values are validated here, so no stack value is ever parsed as shell. The worker
container's `docker run` line is rendered from the one container spec, with those variables in its place.

COS keeps /etc on a tmpfs and applies its user-data again at every boot, so units are re-created and started
(not enabled) each boot; the Debian startup script also runs at every boot. Every step is idempotent.

On COS the worker container follows the COS pattern: a systemd unit runs `docker run --rm` in the foreground
with Restart=always, ordered after the data disk's mount (Docker's own `--restart always` would start it at
boot before the mount, binding the empty directory). The image is read from an instance metadata attribute
as the unit starts, and a watcher restarts the unit when `pulumi up` changes it: no reboot needed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import yaml

from offload.errors import ConfigError
from offload.worker.container import DEFAULT_NAME as WORKER_CONTAINER
from offload.worker.container import WorkerContainer
from offload.worker.scripts import boot_script, worker_script

DATA_DEVICE_NAME = "offload-data"
COS_DATA_MOUNT = "/mnt/disks/data"
COS_WORKSPACE = f"{COS_DATA_MOUNT}/offload"
LINUX_WORKSPACE = "/var/lib/offload"
SCRIPT_DIR = "/etc/offload"
UNIT_DIR = "/etc/systemd/system"
# Persistent on COS (unlike /etc): holds docker's registry credential config.
COS_STATE_DIR = "/var/lib/offload"
# On the data disk, outside the workspace (which the worker container sees): the SSH host keys kept across boots.
COS_HOST_KEYS_DIR = f"{COS_DATA_MOUNT}/.offload-host-keys"
# The instance metadata attribute that names the worker image; changing it restarts the worker container.
IMAGE_ATTRIBUTE = "offload-image"
IDLE_GUEST_ATTRIBUTE = "offload/minutes-until-stop"
LINUX_PACKAGES = ("git", "tmux", "rsync", "ca-certificates")
APT_ATTEMPTS = 20
APT_RETRY_SECONDS = 15

_UNIT_VALUE = re.compile(r"[A-Za-z0-9._/:@+-]+")


@dataclass(frozen=True)
class BootFile:
    """A file the boot configuration writes."""

    path: str
    content: str
    permissions: str = "0644"


@dataclass(frozen=True)
class BootSpec:
    """What a worker's boot does: write these files, then run these commands (argv lists)."""

    files: tuple[BootFile, ...]
    commands: tuple[tuple[str, ...], ...]
    packages: tuple[str, ...] = ()


def _env(**values: str | int) -> str:
    lines = []
    for key, value in values.items():
        text = str(value)
        if not _UNIT_VALUE.fullmatch(text):
            raise ConfigError(f"cannot pass {key}={text!r} to the worker's boot units: only letters, digits and "
                              "._/:@+- are allowed")
        lines.append(f"Environment={key}={text}")
    return "\n".join(lines)


def _unit(description: str, body: str, *, unit_extra: str = "", install: str = "") -> str:
    sections = [f"[Unit]\nDescription={description}" + (f"\n{unit_extra}" if unit_extra else ""),
                f"[Service]\n{body}"]
    if install:
        sections.append(f"[Install]\n{install}")
    return "\n\n".join(sections) + "\n"


def _data_files(mount_point: str, workspace: str, owner: str | None) -> list[BootFile]:
    env = {"OFFLOAD_DATA_DEVICE": DATA_DEVICE_NAME, "OFFLOAD_DATA_MOUNT": mount_point,
           "OFFLOAD_WORKSPACE": workspace}
    if owner:
        env["OFFLOAD_WORKSPACE_OWNER"] = owner
    unit = _unit("offload: mount the data disk (formatted only when empty)",
                 f"Type=oneshot\nRemainAfterExit=yes\n{_env(**env)}\n"
                 f"ExecStart=/bin/bash {SCRIPT_DIR}/mount-data.sh\nTimeoutStartSec=10min",
                 unit_extra="After=local-fs.target", install="WantedBy=multi-user.target")
    return [BootFile(f"{SCRIPT_DIR}/mount-data.sh", boot_script("mount-data.sh"), "0755"),
            BootFile(f"{UNIT_DIR}/offload-data.service", unit)]


def _idle_files(workspace: str, idle_stop_minutes: int, container: str | None) -> list[BootFile]:
    values: dict[str, str | int] = {"OFFLOAD_WORKSPACE": workspace, "OFFLOAD_IDLE_MINUTES": idle_stop_minutes,
                                    "OFFLOAD_STATE_DIR": "/run/offload",
                                    "OFFLOAD_TASKS_RUNNING": f"{SCRIPT_DIR}/tasks-running.sh"}
    if container:
        values["OFFLOAD_CONTAINER"] = container
    service = _unit("offload: power off when idle",
                    f"Type=oneshot\n{_env(**values)}\nExecStart=/bin/bash {SCRIPT_DIR}/idle-stop.sh")
    timer = ("[Unit]\nDescription=offload: check every minute whether the worker is idle\n\n"
             "[Timer]\nOnActiveSec=1min\nOnUnitActiveSec=1min\nAccuracySec=10s\n\n"
             "[Install]\nWantedBy=timers.target\n")
    script = boot_script("idle-stop.sh").replace("@GUEST_ATTRIBUTE@", IDLE_GUEST_ATTRIBUTE)
    return [BootFile(f"{SCRIPT_DIR}/idle-stop.sh", script, "0755"),
            BootFile(f"{SCRIPT_DIR}/tasks-running.sh", worker_script("tasks-running.sh"), "0644"),
            BootFile(f"{UNIT_DIR}/offload-idle.service", service),
            BootFile(f"{UNIT_DIR}/offload-idle.timer", timer)]


def _docker_run_line(with_owner: bool) -> str:
    """The container spec's foreground `docker run`, as shell text that takes its values from start-worker.sh's
    variables."""
    variables = {"@NAME@": "name", "@IMAGE@": "image", "@WORKSPACE@": "workspace", "@OWNER@": "owner"}
    spec = WorkerContainer(name="@NAME@", image="@IMAGE@", workspace="@WORKSPACE@",
                           owner="@OWNER@" if with_owner else None)
    words = []
    for word in spec.run_argv(foreground=True):
        quoted = shlex.quote(word)
        for marker, variable in variables.items():
            # Inside a single-quoted word, close the quotes around the variable; elsewhere just double-quote it.
            quoted = quoted.replace(marker, f"'\"${variable}\"'" if quoted.startswith("'") else f'"${variable}"')
        words.append(quoted)
    return " ".join(words)


def cos_boot(*, image: str, idle_stop_minutes: int, docker_user: str | None, owner: str | None = None,
             workspace: str = COS_WORKSPACE, container: str = WORKER_CONTAINER) -> BootSpec:
    """COS: mount the data disk, keep the host keys on it, run the worker container on it, stop when idle."""
    env = {"HOME": COS_STATE_DIR, "OFFLOAD_IMAGE": image, "OFFLOAD_CONTAINER": container,
           "OFFLOAD_WORKSPACE": workspace, "OFFLOAD_IMAGE_ATTRIBUTE": IMAGE_ATTRIBUTE}
    if docker_user:
        env["OFFLOAD_DOCKER_USER"] = docker_user
    if owner:
        env["OFFLOAD_OWNER"] = owner
    worker_unit = _unit(
        "offload: the worker container",
        # Restart=always also retries a first boot whose pull failed before NAT or the image grant was ready.
        f"Type=simple\n{_env(**env)}\n"
        f"ExecStart=/bin/bash {SCRIPT_DIR}/start-worker.sh\n"
        f"ExecStop=/usr/bin/docker stop -t 30 {container}\n"
        "Restart=always\nRestartSec=10\nTimeoutStartSec=20min\nTimeoutStopSec=60",
        unit_extra=("Requires=offload-data.service docker.service\n"
                    "After=offload-data.service docker.service network-online.target\n"
                    "Wants=network-online.target\nStartLimitIntervalSec=0"))
    watch_unit = _unit(
        "offload: restart the worker container when the stack changes its image",
        f"Type=simple\n{_env(OFFLOAD_IMAGE_ATTRIBUTE=IMAGE_ATTRIBUTE, OFFLOAD_WORKER_UNIT='offload-worker.service')}"
        f"\nExecStart=/bin/bash {SCRIPT_DIR}/watch-image.sh\nRestart=always\nRestartSec=10",
        unit_extra="After=offload-worker.service network-online.target\nStartLimitIntervalSec=0")
    host_keys_unit = _unit(
        "offload: the same SSH host keys at every boot, kept on the data disk",
        f"Type=oneshot\nRemainAfterExit=yes\n{_env(OFFLOAD_HOST_KEYS_DIR=COS_HOST_KEYS_DIR)}\n"
        f"ExecStart=/bin/bash {SCRIPT_DIR}/host-keys.sh",
        # After the guest agent, which makes new keys for what it takes for a new instance.
        unit_extra=("Requires=offload-data.service\n"
                    "After=offload-data.service google-guest-agent.service sshd.service"))
    start = boot_script("start-worker.sh").replace("@DOCKER_RUN@", _docker_run_line(bool(owner)))
    files = [*_data_files(COS_DATA_MOUNT, workspace, None),
             BootFile(f"{SCRIPT_DIR}/host-keys.sh", boot_script("host-keys.sh"), "0755"),
             BootFile(f"{UNIT_DIR}/offload-host-keys.service", host_keys_unit),
             BootFile(f"{SCRIPT_DIR}/start-worker.sh", start, "0755"),
             BootFile(f"{UNIT_DIR}/offload-worker.service", worker_unit),
             BootFile(f"{SCRIPT_DIR}/watch-image.sh", boot_script("watch-image.sh"), "0755"),
             BootFile(f"{UNIT_DIR}/offload-image-watch.service", watch_unit)]
    # The idle timer starts first: a worker whose disk or image fails still stops itself.
    commands: list[tuple[str, ...]] = [("systemctl", "daemon-reload")]
    if idle_stop_minutes > 0:
        files += _idle_files(workspace, idle_stop_minutes, container)
        commands.append(("systemctl", "start", "offload-idle.timer"))
    commands += [("systemctl", "start", "offload-host-keys.service"),
                 ("systemctl", "start", "--no-block", "offload-worker.service"),
                 ("systemctl", "start", "offload-image-watch.service")]
    return BootSpec(tuple(files), tuple(commands))


def linux_boot(*, idle_stop_minutes: int, owner: str | None, workspace: str = LINUX_WORKSPACE) -> BootSpec:
    """Debian: mount the data disk as the workspace, owned by the developer; tmux and git; stop when idle."""
    files = _data_files(workspace, workspace, owner)
    commands: list[tuple[str, ...]] = [("systemctl", "daemon-reload")]
    if idle_stop_minutes > 0:
        files += _idle_files(workspace, idle_stop_minutes, None)
        commands.append(("systemctl", "enable", "--now", "offload-idle.timer"))
    else:
        commands.append(("sh", "-c", "systemctl disable --now offload-idle.timer 2>/dev/null || true"))
    commands.append(("systemctl", "enable", "--now", "offload-data.service"))
    return BootSpec(tuple(files), tuple(commands), LINUX_PACKAGES)


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so the rendered user-data stays readable in the console."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def render_cloud_config(spec: BootSpec) -> str:
    """SPEC as a `#cloud-config` document."""
    doc: dict[str, object] = {}
    if spec.packages:
        doc["package_update"] = True
        doc["packages"] = list(spec.packages)
    if spec.files:
        doc["write_files"] = [{"path": f.path, "permissions": f.permissions, "owner": "root:root",
                               "content": f.content} for f in spec.files]
    if spec.commands:
        doc["runcmd"] = [list(c) for c in spec.commands]
    body = yaml.dump(doc, Dumper=_LiteralDumper, sort_keys=False, default_flow_style=False, width=1000)
    return "#cloud-config\n" + body


def render_startup_script(spec: BootSpec) -> str:
    """SPEC as a bash script for the guest agent's `startup-script`, which runs at every boot."""
    lines = ["#!/bin/bash",
             "# offload worker boot: the guest agent runs this at every boot; every step is idempotent.",
             "set -euo pipefail",
             "export DEBIAN_FRONTEND=noninteractive"]
    if spec.packages:
        checks = " || ".join(f"! command -v {shlex.quote(p)} >/dev/null 2>&1"
                             for p in spec.packages if p in ("git", "tmux", "rsync"))
        install = shlex.join(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *spec.packages])
        # The first boot may come before Cloud NAT can carry traffic: try again for a few minutes.
        lines += [f"if {checks}; then",
                  f"  for attempt in $(seq 1 {APT_ATTEMPTS}); do",
                  f"    if apt-get update -qq && {install}; then break; fi",
                  "    echo \"offload: package install failed (attempt $attempt)\" >&2",
                  f"    sleep {APT_RETRY_SECONDS}",
                  "  done",
                  "fi"]
    for f in spec.files:
        marker = "OFFLOAD_EOF"
        if marker in f.content:
            raise ValueError(f"{f.path} contains the heredoc marker {marker}")
        directory = f.path.rsplit("/", 1)[0]
        lines += [f"install -d -m 0755 {shlex.quote(directory)}",
                  f"cat > {shlex.quote(f.path)} <<'{marker}'",
                  f.content.rstrip("\n"),
                  marker,
                  f"chmod {f.permissions} {shlex.quote(f.path)}"]
    lines += [shlex.join(c) for c in spec.commands]
    return "\n".join(lines) + "\n"


def cos_user_data(*, image: str, idle_stop_minutes: int, docker_user: str | None, owner: str | None = None) -> str:
    """The COS worker's `user-data`."""
    return render_cloud_config(cos_boot(image=image, idle_stop_minutes=idle_stop_minutes, docker_user=docker_user,
                                        owner=owner))


def linux_metadata(*, idle_stop_minutes: int, owner: str | None) -> dict[str, str]:
    """The Debian worker's boot metadata: the startup script does the work (Debian's GCE images run it and
    have no cloud-init); the cloud-config installs the same packages on images that do have cloud-init."""
    spec = linux_boot(idle_stop_minutes=idle_stop_minutes, owner=owner)
    return {"startup-script": render_startup_script(spec),
            "user-data": render_cloud_config(BootSpec((), (), spec.packages))}
