#!/usr/bin/env bash
# Install and prepare what the test suite's real workers need: sshd, tmux, git, Docker, cloud-init, debootstrap,
# the cached offload-worker:test image, and the TypeScript MCP SDK for the MCP client test. Run as root;
# non-interactive and idempotent (a re-run on a prepared machine skips apt, npm and the image build and takes a
# few seconds, most of it starting and stopping dockerd).
set -euo pipefail

cd "$(dirname "$0")/.."

PACKAGES=(openssh-server rsync tmux git git-lfs docker.io cloud-init debootstrap iproute2 procps psmisc shellcheck busybox)

log() { echo "install-test-deps: $*" >&2; }

[[ $(id -u) -eq 0 ]] || { log "run as root (sudo $0)"; exit 1; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    # Package scripts must not start services (sshd on port 22, dockerd with the default data root): the
    # tests start their own, by PID, and stop them again. policy-rc.d is only added when none exists.
    policy_added=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    trap '[[ -n $policy_added ]] && rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null
    [[ -n $policy_added ]] && rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

# sshd's privilege separation directory; /run is a tmpfs that starts empty.
mkdir -p /run/sshd
chmod 0755 /run/sshd

getent group docker >/dev/null || groupadd --system docker

# The TypeScript MCP SDK, for the test that drives `offload mcp` through the client most agents are built on
# (tests/e2e/mcp_ts_client.cjs; the test is skipped without node or this install).
MCP_TS_SDK_VERSION=1.32.2
ts_sdk=/var/cache/offload/mcp-ts-sdk
if command -v npm >/dev/null; then
    installed=$(node -p "require('$ts_sdk/node_modules/@modelcontextprotocol/sdk/package.json').version" 2>/dev/null || true)
    if [[ $installed != "$MCP_TS_SDK_VERSION" ]]; then
        log "installing @modelcontextprotocol/sdk@$MCP_TS_SDK_VERSION into $ts_sdk"
        mkdir -p "$ts_sdk"
        npm install --no-audit --no-fund --silent --prefix "$ts_sdk" "@modelcontextprotocol/sdk@$MCP_TS_SDK_VERSION" ||
            log "npm could not install the SDK (no registry?): the TypeScript MCP client test will be skipped"
    fi
else
    log "npm not found: the TypeScript MCP client test will be skipped"
fi

# The worker image: debootstrap once into the cache, then import whenever the engine lacks it.
owner=$$
scripts/dockerd.sh acquire "$owner" >/dev/null
trap 'scripts/dockerd.sh release "$owner"' EXIT
started=$SECONDS
scripts/build-worker-image.sh
log "worker image ready in $((SECONDS - started))s"
