"""Boot configuration of GCE workers: COS cloud-config, the Debian startup script and the idle auto-stop.

Both renderings come from one BootSpec (files to write, commands to run). The shell scripts are fixed text;
everything per-stack reaches them through `Environment=` lines of their systemd units, and those values are
validated here, so no stack value is ever parsed as shell.

COS keeps /etc on a tmpfs and applies its user-data again at every boot, so units are re-created and started
(not enabled) each boot; the Debian startup script also runs at every boot. Every step is idempotent.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import yaml

from offload.errors import ConfigError
from offload.runtime.container import WORKER_ENTRY

DATA_DEVICE_NAME = "offload-data"
COS_DATA_MOUNT = "/mnt/disks/data"
COS_WORKSPACE = f"{COS_DATA_MOUNT}/offload"
LINUX_WORKSPACE = "/var/lib/offload"
WORKER_CONTAINER = "offload-worker"
SCRIPT_DIR = "/etc/offload"
UNIT_DIR = "/etc/systemd/system"
# Persistent on COS (unlike /etc): holds docker's registry credential config.
COS_STATE_DIR = "/var/lib/offload"
IDLE_GUEST_ATTRIBUTE = "offload/minutes-until-stop"
LINUX_PACKAGES = ("git", "tmux", "rsync", "ca-certificates")

MOUNT_DATA_SH = r"""#!/bin/bash
# Mount the offload data disk, formatting it first only when it holds no filesystem at all.
set -euo pipefail
device=${OFFLOAD_DATA_DEVICE_PATH:-/dev/disk/by-id/google-${OFFLOAD_DATA_DEVICE:?}}
mount_point=${OFFLOAD_DATA_MOUNT:?}
workspace=${OFFLOAD_WORKSPACE:?}
owner=${OFFLOAD_WORKSPACE_OWNER:-}

for _ in $(seq 1 60); do
  [ -e "$device" ] && break
  sleep 1
done
if [ ! -e "$device" ]; then
  echo "offload: data disk $device is not attached" >&2
  exit 1
fi

# blkid exits 2 when the device carries no signature at all: only then is formatting safe.
status=0
blkid -p "$device" >/dev/null 2>&1 || status=$?
if [ "$status" -eq 2 ]; then
  echo "offload: formatting the empty data disk $device"
  mkfs.ext4 -q -F -m 0 -L offload-data -E lazy_itable_init=0,lazy_journal_init=0,discard "$device"
elif [ "$status" -ne 0 ]; then
  echo "offload: blkid cannot read $device (exit $status); refusing to format it" >&2
  exit 1
fi

mkdir -p "$mount_point"
if ! mountpoint -q "$mount_point"; then
  mount -o discard,defaults,nosuid,nodev "$device" "$mount_point"
fi
# Grows the filesystem after offload:dataDiskGb was raised; a no-op otherwise.
resize2fs "$device" >/dev/null 2>&1 || true
mkdir -p "$workspace"

if [ -n "$owner" ]; then
  # Jobs run as the developer's OS Login user, whose name resolves once the guest agent is up.
  for _ in 1 2 3 4 5 6; do
    if id -u "$owner" >/dev/null 2>&1; then
      chown "$owner" "$workspace"
      chmod 0755 "$workspace"
      exit 0
    fi
    sleep 5
  done
  echo "offload: $owner does not resolve yet; $workspace stays writable by local users (sticky)" >&2
  chmod 1777 "$workspace"
fi
"""

START_WORKER_SH = r"""#!/bin/bash
# (Re)create the worker container: restart always, the workspace at the same path inside and out.
set -euo pipefail
image=${OFFLOAD_IMAGE:?}
name=${OFFLOAD_CONTAINER:?}
workspace=${OFFLOAD_WORKSPACE:?}
docker_user=${OFFLOAD_DOCKER_USER:-}
group_file=${OFFLOAD_GROUP_FILE:-/etc/group}
mkdir -p "${HOME:?}" "$workspace"

# OS Login users are not in /etc/group; listing the developer in the docker group lets them `docker exec`.
if [ -n "$docker_user" ]; then
  members=$(awk -F: '$1 == "docker" {print $4}' "$group_file")
  case ",$members," in
    *",$docker_user,"*) ;;
    *) sed -i "/^docker:/ s/\$/${members:+,}$docker_user/" "$group_file" ;;
  esac
fi

registry=${image%%/*}
case $registry in
  *-docker.pkg.dev|gcr.io|*.gcr.io)
    docker-credential-gcr configure-docker --registries="$registry" >/dev/null 2>&1 ||
      echo "offload: cannot configure credentials for $registry" >&2 ;;
esac

# Docker may have restarted the old container at boot, before the data disk was mounted, binding the empty
# directory underneath. Recreating it binds the disk; everything worth keeping lives in the workspace.
docker rm -f "$name" >/dev/null 2>&1 || true
docker pull "$image" || echo "offload: cannot pull $image; using the local copy if there is one" >&2
docker run -d --name "$name" --restart always --init \
  --label "offload.worker=$name" \
  -v "$workspace:$workspace" -w "$workspace" \
  --entrypoint /bin/sh "$image" -c @WORKER_ENTRY@
"""

IDLE_STOP_SH = r"""#!/bin/bash
# Power the worker off once it has been idle for OFFLOAD_IDLE_MINUTES: no task running, no SSH connection.
# A task is running when WORKSPACE/jobs/*/tasks/*/state says "running" and was written since this boot
# (a state left from before a reboot belongs to a process that died with it).
set -u
workspace=${OFFLOAD_WORKSPACE:?}
idle_minutes=${OFFLOAD_IDLE_MINUTES:?}
state_dir=${OFFLOAD_STATE_DIR:-/run/offload}
since_file=$state_dir/idle-since

case $idle_minutes in ''|*[!0-9]*) echo "offload: bad OFFLOAD_IDLE_MINUTES" >&2; exit 2 ;; esac
[ "$idle_minutes" -gt 0 ] || exit 0
mkdir -p "$state_dir"

task_running() {
  local boot state word
  boot=$(awk '$1 == "btime" {print $2}' /proc/stat 2>/dev/null)
  for state in "$workspace"/jobs/*/tasks/*/state; do
    [ -f "$state" ] || continue
    word=
    read -r word < "$state" || true
    [ "$word" = running ] || continue
    if [ "$(stat -c %Y "$state" 2>/dev/null || echo 0)" -ge "${boot:-0}" ]; then
      return 0
    fi
  done
  return 1
}

ssh_connected() {
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -H -t -n state established '( sport = :22 )' 2>/dev/null)" ]
  else
    # Each SSH session has a process titled "sshd: USER@..." ("sshd-session: ..." since OpenSSH 9.8).
    pgrep -f '^sshd(-session)?: [^ ]+@' >/dev/null 2>&1
  fi
}

publish() {
  curl -fsS -m 2 -X PUT -H 'Metadata-Flavor: Google' --data "$1" \
    "http://metadata.google.internal/computeMetadata/v1/instance/guest-attributes/@GUEST_ATTRIBUTE@" \
    >/dev/null 2>&1 || true
}

now=$(date +%s)
if task_running || ssh_connected; then
  echo "$now" > "$since_file"
  publish "$idle_minutes"
  exit 0
fi

since=$(cat "$since_file" 2>/dev/null || true)
case $since in ''|*[!0-9]*) since=$now; echo "$now" > "$since_file" ;; esac
left=$(( idle_minutes - (now - since) / 60 ))
if [ "$left" -gt 0 ]; then
  publish "$left"
  exit 0
fi
publish 0
echo "offload: idle for ${idle_minutes} minutes with no task and no SSH connection; powering off"
poweroff
"""

_UNIT_VALUE = re.compile(r"^[A-Za-z0-9._/:@+-]+$")


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
        if not _UNIT_VALUE.match(text):
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
    return [BootFile(f"{SCRIPT_DIR}/mount-data.sh", MOUNT_DATA_SH, "0755"),
            BootFile(f"{UNIT_DIR}/offload-data.service", unit)]


def _idle_files(workspace: str, idle_stop_minutes: int) -> list[BootFile]:
    env = _env(OFFLOAD_WORKSPACE=workspace, OFFLOAD_IDLE_MINUTES=idle_stop_minutes, OFFLOAD_STATE_DIR="/run/offload")
    service = _unit("offload: power off when idle",
                    f"Type=oneshot\n{env}\nExecStart=/bin/bash {SCRIPT_DIR}/idle-stop.sh")
    timer = ("[Unit]\nDescription=offload: check every minute whether the worker is idle\n\n"
             "[Timer]\nOnActiveSec=1min\nOnUnitActiveSec=1min\nAccuracySec=10s\n\n"
             "[Install]\nWantedBy=timers.target\n")
    script = IDLE_STOP_SH.replace("@GUEST_ATTRIBUTE@", IDLE_GUEST_ATTRIBUTE)
    return [BootFile(f"{SCRIPT_DIR}/idle-stop.sh", script, "0755"),
            BootFile(f"{UNIT_DIR}/offload-idle.service", service),
            BootFile(f"{UNIT_DIR}/offload-idle.timer", timer)]


def cos_boot(*, image: str, idle_stop_minutes: int, docker_user: str | None,
             workspace: str = COS_WORKSPACE, container: str = WORKER_CONTAINER) -> BootSpec:
    """COS: mount the data disk, run the worker container on it, stop when idle."""
    env = {"HOME": COS_STATE_DIR, "OFFLOAD_IMAGE": image, "OFFLOAD_CONTAINER": container,
           "OFFLOAD_WORKSPACE": workspace}
    if docker_user:
        env["OFFLOAD_DOCKER_USER"] = docker_user
    worker_unit = _unit(
        "offload: the worker container",
        f"Type=oneshot\nRemainAfterExit=yes\n{_env(**env)}\n"
        f"ExecStart=/bin/bash {SCRIPT_DIR}/start-worker.sh\nTimeoutStartSec=20min",
        unit_extra=("Requires=offload-data.service docker.service\n"
                    "After=offload-data.service docker.service network-online.target\n"
                    "Wants=network-online.target"))
    files = [*_data_files(COS_DATA_MOUNT, workspace, None),
             BootFile(f"{SCRIPT_DIR}/start-worker.sh",
                      START_WORKER_SH.replace("@WORKER_ENTRY@", shlex.quote(WORKER_ENTRY)), "0755"),
             BootFile(f"{UNIT_DIR}/offload-worker.service", worker_unit)]
    # The idle timer starts first: a worker whose disk or image fails still stops itself.
    commands: list[tuple[str, ...]] = [("systemctl", "daemon-reload")]
    if idle_stop_minutes > 0:
        files += _idle_files(workspace, idle_stop_minutes)
        commands.append(("systemctl", "start", "offload-idle.timer"))
    commands.append(("systemctl", "start", "offload-worker.service"))
    return BootSpec(tuple(files), tuple(commands))


def linux_boot(*, idle_stop_minutes: int, owner: str | None, workspace: str = LINUX_WORKSPACE) -> BootSpec:
    """Debian: mount the data disk as the workspace, owned by the developer; tmux and git; stop when idle."""
    files = _data_files(workspace, workspace, owner)
    commands: list[tuple[str, ...]] = [("systemctl", "daemon-reload")]
    if idle_stop_minutes > 0:
        files += _idle_files(workspace, idle_stop_minutes)
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
        lines += [f"if {checks}; then",
                  f"  apt-get update -qq && {install} || echo 'offload: package install failed' >&2",
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


def cos_user_data(*, image: str, idle_stop_minutes: int, docker_user: str | None) -> str:
    """The COS worker's `user-data`."""
    return render_cloud_config(cos_boot(image=image, idle_stop_minutes=idle_stop_minutes, docker_user=docker_user))


def linux_metadata(*, idle_stop_minutes: int, owner: str | None) -> dict[str, str]:
    """The Debian worker's boot metadata: the startup script does the work (Debian's GCE images run it and
    have no cloud-init); the cloud-config installs the same packages on images that do have cloud-init."""
    spec = linux_boot(idle_stop_minutes=idle_stop_minutes, owner=owner)
    return {"startup-script": render_startup_script(spec),
            "user-data": render_cloud_config(BootSpec((), (), spec.packages))}
