#!/bin/bash
# Power the worker off once it has been idle for OFFLOAD_IDLE_MINUTES: no task running, no SSH connection.
# A job started before this boot is never running: its processes died with the previous one.
set -u
workspace=${OFFLOAD_WORKSPACE:?}
idle_minutes=${OFFLOAD_IDLE_MINUTES:?}
state_dir=${OFFLOAD_STATE_DIR:-/run/offload}
since_file=$state_dir/idle-since
container=${OFFLOAD_CONTAINER:-}
tasks_running=${OFFLOAD_TASKS_RUNNING:?}

case $idle_minutes in ''|*[!0-9]*) echo "offload: bad OFFLOAD_IDLE_MINUTES" >&2; exit 2 ;; esac
[ "$idle_minutes" -gt 0 ] || exit 0
mkdir -p "$state_dir"

# Whether a task runs is asked where the jobs run (inside the worker container when there is one), by the
# worker library's own rule: tasks-running.sh exits 0 for a running job, 1 for none.
task_running() {
  local rc=0
  if [ -n "$container" ]; then
    timeout 60 docker exec -i "$container" sh -s "$workspace" < "$tasks_running" >/dev/null 2>&1 || rc=$?
    case $rc in
      0) return 0 ;;
      1) return 1 ;;
    esac
    # docker could not ask: a container that runs may still have tasks; one that does not has none.
    [ "$(docker inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" = true ]
  else
    sh "$tasks_running" "$workspace" >/dev/null 2>&1
  fi
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
