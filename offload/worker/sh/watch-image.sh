#!/bin/bash
# Restart the worker container when the stack changes its image: the metadata server answers a wait_for_change
# request when the attribute changes, and the worker unit reads the new value as it starts.
set -uo pipefail
attribute=${OFFLOAD_IMAGE_ATTRIBUTE:?}
unit=${OFFLOAD_WORKER_UNIT:-offload-worker.service}
metadata=${OFFLOAD_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}
state=${OFFLOAD_STATE_DIR:-/run/offload}
url="$metadata/instance/attributes/$attribute"
mkdir -p "$state"
headers="$state/image-watch.headers"

# Exits on any failure; its unit restarts it (Restart=always), so a metadata server that hiccups costs a pause.
current=$(curl -fsS -m 10 -D "$headers" -H 'Metadata-Flavor: Google' "$url") || exit 1
while :; do
  etag=$(awk 'tolower($1) == "etag:" {print $2}' "$headers" | tr -d '\r')
  value=$(curl -fsS -m 4000 -D "$headers" -H 'Metadata-Flavor: Google' \
    "$url?wait_for_change=true&timeout_sec=3600${etag:+&last_etag=$etag}") || exit 1
  if [ "$value" != "$current" ]; then
    echo "offload: the worker image is now $value; restarting $unit"
    current=$value
    systemctl restart "$unit" || exit 1
  fi
done
