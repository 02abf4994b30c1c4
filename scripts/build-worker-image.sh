#!/usr/bin/env bash
# Build the worker image the tests run jobs in (default offload-worker:test) without any registry.
#
#   scripts/build-worker-image.sh [IMAGE]
#
# No registry is reachable from CI or the development machines, so the image is made from a Debian root
# filesystem: debootstrap (about 30 s) into tmpfs, a tarball cached under /var/cache/offload, then
# `docker import`. Both steps are skipped when their result is already there and was made from the same
# package list, so a re-run takes well under a second. Needs root and a running Docker engine
# (scripts/dockerd.sh start).
set -euo pipefail

IMAGE=${1:-offload-worker:test}
SUITE=${OFFLOAD_WORKER_SUITE:-bookworm}
PACKAGES=${OFFLOAD_WORKER_PACKAGES:-tmux,git,ca-certificates,procps}
CACHE_DIR=${OFFLOAD_CACHE_ROOT:-/var/cache/offload}
TARBALL=$CACHE_DIR/rootfs-$SUITE.tar
STAMP=$TARBALL.recipe
RECIPE="suite=$SUITE variant=minbase include=$PACKAGES"

log() { echo "build-worker-image: $*" >&2; }

# The mirror apt already uses for $SUITE, so debootstrap reaches the same (and only) Debian archive.
apt_mirror() {
    if [[ -n ${OFFLOAD_DEBIAN_MIRROR:-} ]]; then
        echo "$OFFLOAD_DEBIAN_MIRROR"
        return
    fi
    local f
    # deb822 files: a stanza whose Suites has exactly $SUITE.
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uri = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
                    if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
                }
                if (ok && uri != "") { print uri; exit }
            }' "$f"
    done | head -n 1 | grep . && return
    # One-line format: "deb [opts] URI SUITE COMPONENTS".
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk -v suite="$SUITE" '$1 == "deb" { sub(/\[[^]]*\][ \t]*/, ""); if ($3 == suite) { print $2; exit } }' |
        grep . && return
    echo http://deb.debian.org/debian
}

build_tarball() {
    command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install -y debootstrap)"; exit 1; }
    local mirror rootfs
    mirror=$(apt_mirror)
    # tmpfs: debootstrap writes tens of thousands of files, about 70 times faster there than on the root disk.
    rootfs=$(mktemp -d /dev/shm/offload-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap $SUITE from $mirror (about 30 s)"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
        tail -n 30 "$rootfs.log" >&2
        rm -f "$rootfs.log"
        exit 1
    }
    rm -f "$rootfs.log"
    # The apt lists and package cache add size and nothing a worker needs.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    mkdir -p "$CACHE_DIR"
    tar --numeric-owner -C "$rootfs" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    echo "$RECIPE" >"$STAMP"
    rm -rf "$rootfs"
    trap - EXIT
}

image_recipe() {
    docker image inspect --format '{{ index .Config.Labels "offload.recipe" }}' "$IMAGE" 2>/dev/null || true
}

main() {
    [[ $(id -u) -eq 0 ]] || { log "needs root (debootstrap and the cache under $CACHE_DIR)"; exit 1; }
    timeout 10 docker info >/dev/null 2>&1 || { log "no Docker engine answers; run scripts/dockerd.sh start"; exit 1; }
    mkdir -p "$CACHE_DIR"
    # One builder at a time: concurrent test sessions share the cache and the engine.
    exec 8>"$CACHE_DIR/.build.lock"
    flock -w 900 8 || { log "another build holds $CACHE_DIR/.build.lock"; exit 1; }

    if [[ -s $TARBALL && -r $STAMP && $(<"$STAMP") == "$RECIPE" ]]; then
        :
    else
        build_tarball
    fi
    # The label ties the image to the tarball it came from, so a rebuilt tarball is imported again.
    local recipe
    recipe="$RECIPE tarball=$(stat -c '%Y/%s' "$TARBALL")"
    if [[ $(image_recipe) == "$recipe" ]]; then
        log "$IMAGE is up to date"
        return
    fi
    log "importing $TARBALL as $IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["sleep", "infinity"]' \
        --change "LABEL offload.recipe=\"$recipe\"" \
        - "$IMAGE" <"$TARBALL" >/dev/null
    log "built $IMAGE"
}

main "$@"
