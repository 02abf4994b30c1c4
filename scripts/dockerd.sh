#!/usr/bin/env bash
# Start and stop the Docker engine that the test suite and the worker-image build use.
#
#   scripts/dockerd.sh start          start dockerd unless an engine already answers; prints "running" or "started".
#                                     It then stays up until `stop`, whoever else acquires and releases it.
#   scripts/dockerd.sh stop           stop the dockerd this script started (by the PID in its pidfile)
#   scripts/dockerd.sh acquire PID    register PID as a user of the engine, then start it if needed
#   scripts/dockerd.sh release PID    unregister PID; when no live user is left, stop the dockerd this script started
#   scripts/dockerd.sh status         print "ours PID", "foreign" or "down"
#
# Machines without an init system (CI, the development VMs) have docker.io installed but its service not
# running, so the engine is started by hand with its own data and exec roots. An engine that was already
# answering (a developer's own) is used as it is and never stopped. Several test sessions may share the
# engine: each registers its PID, and the last one to leave stops it, so nothing is left running.
set -euo pipefail

DATA_ROOT=${OFFLOAD_DOCKER_DATA_ROOT:-/var/lib/offload-test-docker}
EXEC_ROOT=${OFFLOAD_DOCKER_EXEC_ROOT:-/run/offload-test-docker}
PIDFILE=${OFFLOAD_DOCKER_PIDFILE:-/run/offload-test-docker.pid}
LOGFILE=${OFFLOAD_DOCKER_LOG:-/var/log/offload-test-docker.log}
USERS_DIR=${EXEC_ROOT}.users
LOCKFILE=${EXEC_ROOT}.lock
SOCKET=/var/run/docker.sock
START_TIMEOUT=${OFFLOAD_DOCKER_START_TIMEOUT:-60}
STOP_TIMEOUT=${OFFLOAD_DOCKER_STOP_TIMEOUT:-30}

log() { echo "dockerd.sh: $*" >&2; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# The PID in our pidfile, if that process is alive and is dockerd.
our_pid() {
    local pid
    [[ -s $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(</proc/$pid/comm) == dockerd ]] || return 1
    echo "$pid"
}

ensure_group() {
    getent group docker >/dev/null || groupadd --system docker
}

do_start() {
    if engine_answers; then
        echo running
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        log "starting dockerd needs root"
        return 1
    fi
    command -v dockerd >/dev/null || { log "dockerd is not installed (apt-get install -y docker.io)"; return 1; }
    ensure_group
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT" "$(dirname "$LOGFILE")"
    local pid
    if pid=$(our_pid); then
        # Ours but not answering yet (another caller is starting it): wait for it below.
        :
    else
        rm -f "$PIDFILE"
        setsid dockerd --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" \
            -H "unix://$SOCKET" --group docker </dev/null >>"$LOGFILE" 2>&1 9>&- &
        pid=$!
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until engine_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "dockerd exited during start; last lines of $LOGFILE:"
            tail -n 20 "$LOGFILE" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "dockerd did not answer within ${START_TIMEOUT}s; stopping it (pid $pid)"
            kill "$pid" 2>/dev/null || true
            tail -n 20 "$LOGFILE" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    echo started
}

do_stop() {
    local pid
    pid=$(our_pid) || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "dockerd (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$PIDFILE"
}

live_users() {
    local f n=0
    for f in "$USERS_DIR"/*; do
        [[ -e $f ]] || continue
        if [[ $(basename "$f") == manual ]]; then
            n=$((n + 1))
        elif kill -0 "$(basename "$f")" 2>/dev/null; then
            n=$((n + 1))
        else
            rm -f "$f"
        fi
    done
    echo "$n"
}

with_lock() {
    mkdir -p "$(dirname "$LOCKFILE")"
    exec 9>"$LOCKFILE"
    flock -w 120 9 || { log "could not take $LOCKFILE within 120s"; return 1; }
    "$@"
}

do_acquire() {
    local owner=$1
    mkdir -p "$USERS_DIR"
    : >"$USERS_DIR/$owner"
    if ! do_start; then
        rm -f "$USERS_DIR/$owner"
        return 1
    fi
}

do_release() {
    local owner=$1
    rm -f "$USERS_DIR/$owner"
    if [[ $(live_users) -eq 0 ]]; then
        do_stop
    fi
}

do_manual_start() {
    mkdir -p "$USERS_DIR"
    do_start
    # Only an engine this script runs is pinned; a foreign one is not ours to keep or stop.
    if our_pid >/dev/null; then : >"$USERS_DIR/manual"; fi
}

do_manual_stop() {
    rm -f "$USERS_DIR/manual"
    do_stop
}

validate_pid() {
    [[ ${1:-} =~ ^[0-9]+$ ]] || { log "usage: $0 $2 PID"; exit 2; }
}

case ${1:-} in
    start) with_lock do_manual_start ;;
    stop) with_lock do_manual_stop ;;
    acquire) validate_pid "${2:-}" acquire; with_lock do_acquire "$2" ;;
    release) validate_pid "${2:-}" release; with_lock do_release "$2" ;;
    status)
        if pid=$(our_pid); then echo "ours $pid"
        elif engine_answers; then echo foreign
        else echo down
        fi ;;
    *) echo "usage: $0 start|stop|acquire PID|release PID|status" >&2; exit 2 ;;
esac
