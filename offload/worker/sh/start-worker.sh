#!/bin/bash
# Run the worker container in the foreground for its systemd unit, which restarts it (Restart=always) and
# orders it after the data disk's mount. A failed pull (NAT or IAM not ready yet at first boot) fails this
# start, and systemd tries again.
set -euo pipefail
image=${OFFLOAD_IMAGE:?}
name=${OFFLOAD_CONTAINER:?}
workspace=${OFFLOAD_WORKSPACE:?}
# shellcheck disable=SC2034 # read by the docker run line below when the stack names an owner
owner=${OFFLOAD_OWNER:-}
docker_user=${OFFLOAD_DOCKER_USER:-}
group_file=${OFFLOAD_GROUP_FILE:-/etc/group}
metadata=${OFFLOAD_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}
mkdir -p "${HOME:?}" "$workspace"

# The image the stack names now: `pulumi up` changes this metadata attribute without a reboot.
if [ -n "${OFFLOAD_IMAGE_ATTRIBUTE:-}" ]; then
  current=$(curl -fsS -m 5 -H 'Metadata-Flavor: Google' \
    "$metadata/instance/attributes/$OFFLOAD_IMAGE_ATTRIBUTE" 2>/dev/null || true)
  case $current in
    '' | *[!A-Za-z0-9._/:@-]*) ;;
    *) image=$current ;;
  esac
fi

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

# A container left from before (an older image, or one Docker restarted at boot before the data disk was
# mounted, binding the empty directory underneath) is replaced; everything worth keeping lives in the workspace.
docker rm -f "$name" >/dev/null 2>&1 || true
if ! docker pull "$image"; then
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "offload: cannot pull $image and there is no local copy; systemd retries" >&2
    exit 1
  fi
  echo "offload: cannot pull $image; using the local copy" >&2
fi
# The run line comes from offload/worker/container.py, the spec every worker container is made from.
exec @DOCKER_RUN@
