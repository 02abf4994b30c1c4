#!/bin/bash
# (Re)create the worker container: restart always, the workspace at the same path inside and out.
set -euo pipefail
image=${OFFLOAD_IMAGE:?}
name=${OFFLOAD_CONTAINER:?}
workspace=${OFFLOAD_WORKSPACE:?}
# shellcheck disable=SC2034 # read by the docker run line below when the stack names an owner
owner=${OFFLOAD_OWNER:-}
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
# The run line comes from offload/worker/container.py, the spec every worker container is made from.
@DOCKER_RUN@
