#!/bin/bash
# Keep the SSH host keys on the data disk, so a worker presents the same keys at every boot. On COS /etc is a
# tmpfs: the guest agent forgets the instance id it records there and makes (and publishes) new keys at each
# boot, or none at all. The first boot saves the keys sshd has; every later boot puts them back, restarts
# sshd when they differ, and publishes them in guest attributes, where the runtime reads them.
set -euo pipefail
keep=${OFFLOAD_HOST_KEYS_DIR:?}
etc=${OFFLOAD_SSH_DIR:-/etc/ssh}
sshd_unit=${OFFLOAD_SSHD_UNIT:-sshd.service}
metadata=${OFFLOAD_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}
umask 077
mkdir -p "$keep"
chmod 0700 "$keep"

saved=0
for key in "$keep"/ssh_host_*_key; do
  [ -s "$key" ] && [ -s "$key.pub" ] && saved=1
done

changed=0
if [ "$saved" = 1 ]; then
  for key in "$keep"/ssh_host_*_key; do
    if [ ! -s "$key" ] || [ ! -s "$key.pub" ]; then continue; fi
    name=${key##*/}
    if ! cmp -s "$key" "$etc/$name" || ! cmp -s "$key.pub" "$etc/$name.pub"; then
      cp "$key" "$etc/$name.tmp" && mv -f "$etc/$name.tmp" "$etc/$name"
      cp "$key.pub" "$etc/$name.pub.tmp" && mv -f "$etc/$name.pub.tmp" "$etc/$name.pub"
      chmod 0600 "$etc/$name"
      chmod 0644 "$etc/$name.pub"
      changed=1
    fi
  done
else
  for key in "$etc"/ssh_host_*_key; do
    if [ ! -s "$key" ] || [ ! -s "$key.pub" ]; then continue; fi
    name=${key##*/}
    cp "$key" "$keep/$name.tmp" && mv -f "$keep/$name.tmp" "$keep/$name"
    cp "$key.pub" "$keep/$name.pub.tmp" && mv -f "$keep/$name.pub.tmp" "$keep/$name.pub"
  done
fi

if [ "$changed" = 1 ]; then
  echo "offload: restored the worker's SSH host keys from the data disk"
  systemctl try-restart "$sshd_unit" || echo "offload: cannot restart $sshd_unit" >&2
fi

for pub in "$keep"/ssh_host_*_key.pub; do
  [ -s "$pub" ] || continue
  read -r type blob _ < "$pub" || continue
  curl -fsS -m 5 -X PUT -H 'Metadata-Flavor: Google' --data "$type $blob" \
    "$metadata/instance/guest-attributes/hostkeys/$type" >/dev/null ||
    echo "offload: cannot publish the $type host key" >&2
done
