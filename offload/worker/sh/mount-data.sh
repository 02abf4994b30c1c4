#!/bin/bash
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
