"""Reading jobs on a worker: the status, log and clean scripts (POSIX sh) and the parsers of what they print.

Each script runs where the job runs (inside the worker's container when there is one), because it checks
processes by pid. Job ids given to a script are validated, and paths are quoted with `shlex.quote`.

`status_script` prints one record per line, fields separated by tabs:

    offload-status  1                                   format version, always the first line
    job   ID  STATE  RUNNER  TMUX                       STATE: success | failed | -  (the job's state file)
                                                        RUNNER: 1 alive, 0 dead, - no runner.pid yet
                                                        TMUX: 1 when the job's tmux server has its session
    meta  ID  KEY  VALUE                                one per line of the job's meta file (VALUE is the rest
                                                        of the line, tabs included)
    task  ID  NAME  STATE  EXIT  PID                    STATE: pending | running | success | failed | skipped
                                                        EXIT: the exit code, or -
                                                        PID: 1 alive, 0 dead, - not started

Ids, task names, states and exit codes cannot hold a tab or a newline: ids are validated and the others are
fixed tokens (the script prints `-` for anything else). Meta values are single lines by construction
(`launch.validate_meta`). Records of one job may come in any order; unknown record types are ignored.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from offload.jobs.layout import JobPaths, State, validate_id

STATUS_VERSION = "1"
POLL_SECONDS = 0.2

_HELPERS = r"""
get() {
	got=
	if [ -f "$1" ]; then
		{ IFS= read -r got < "$1"; } 2>/dev/null || :
	fi
}
is_number() {
	case $1 in '' | *[!0-9]*) return 1 ;; esac
	return 0
}
is_id() {
	case $1 in '' | [!A-Za-z0-9]* | *[!A-Za-z0-9_-]*) return 1 ;; esac
	return 0
}
running_pid() { # PID: the process exists and has not exited (kill -0 alone also succeeds for a zombie)
	kill -0 "$1" 2>/dev/null || return 1
	if [ -r "/proc/$1/stat" ]; then
		{ IFS= read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
		case ${stat##*") "} in Z* | X* | x*) return 1 ;; esac
	fi
	return 0
}
alive() { # PIDFILE: 1 when its process is alive, 0 when not, - when there is no pid file
	get "$1"
	if ! is_number "$got"; then
		printf '%s' -
	elif running_pid "$got"; then
		printf '%s' 1
	else
		printf '%s' 0
	fi
}
"""

_STATUS = _HELPERS + r"""
sockets="${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)"
tab=$(printf '\t')
one() {
	j=$1
	d=$jobs/$j
	[ -d "$d" ] || return 0
	get "$d/state"
	case $got in success | failed) st=$got ;; *) st=- ;; esac
	runner=$(alive "$d/runner.pid")
	server=0
	if [ -S "$sockets/offload-$j" ] &&
		tmux -f /dev/null -L "offload-$j" has-session -t "=$j" </dev/null >/dev/null 2>&1; then
		server=1
	fi
	printf 'job\t%s\t%s\t%s\t%s\n' "$j" "$st" "$runner" "$server"
	if [ -f "$d/meta" ]; then
		while IFS= read -r line <&4; do
			key=${line%%=*}
			case $key in "$line" | '' | *"$tab"*) continue ;; esac
			printf 'meta\t%s\t%s\t%s\n' "$j" "$key" "${line#*=}"
		done 4< "$d/meta"
	fi
	[ -f "$d/tasks.list" ] || return 0
	while IFS= read -r t <&3; do
		is_id "$t" || continue
		td=$d/tasks/$t
		get "$td/state"
		case $got in running | success | failed | skipped) ts=$got ;; *) ts=pending ;; esac
		get "$td/exit"
		rc=$got
		is_number "$rc" || rc=-
		printf 'task\t%s\t%s\t%s\t%s\t%s\n' "$j" "$t" "$ts" "$rc" "$(alive "$td/pid")"
	done 3< "$d/tasks.list"
}
printf 'offload-status\t%s\n' "$version"
if [ $# -gt 0 ]; then
	for j in "$@"; do
		is_id "$j" && one "$j"
	done
else
	for d in "$jobs"/*; do
		j=${d##*/}
		[ -d "$d" ] && is_id "$j" && one "$j"
	done
fi
exit 0
"""

_LOG = _HELPERS + r"""
d=${1:?task directory}
pos=${2:-0}
follow=${3:-}
is_number "$pos" || { printf 'offload: invalid log offset %s\n' "$pos" >&2; exit 2; }
[ -d "$d" ] || { printf 'offload: no task directory %s\n' "$d" >&2; exit 3; }
job_dir=${d%/tasks/*}
# The task has finished, or nobody is left who could finish it.
finished() {
	[ -f "$d/exit" ] && return 0
	get "$d/state"
	case $got in success | failed | skipped) return 0 ;; esac
	[ -f "$job_dir/state" ] && return 0
	[ "$(alive "$job_dir/runner.pid")" = 0 ] || return 1
	[ "$(alive "$d/pid")" = 1 ] && return 1
	return 0
}
while :; do
	last=1
	[ -n "$follow" ] && ! finished && last=0
	if [ -f "$d/log" ]; then
		size=$(wc -c < "$d/log")
		size=${size##* }
		if is_number "$size" && [ "$size" -gt "$pos" ]; then
			# Exactly the bytes up to SIZE: the log may grow while this runs, and the client counts bytes.
			tail -c +"$((pos + 1))" "$d/log" | head -c "$((size - pos))"
			pos=$size
		fi
	fi
	[ "$last" = 1 ] && exit 0
	sleep __POLL__ 2>/dev/null || sleep 1
done
""".replace("__POLL__", str(POLL_SECONDS))

_CLEAN = _HELPERS + r"""
sockets="${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)"
has_git=0
command -v git >/dev/null 2>&1 && has_git=1
clean() {
	j=$1
	d=$workspace/jobs/$j
	wt=$workspace/worktrees/$j
	found=0
	if tmux -f /dev/null -L "offload-$j" kill-server </dev/null >/dev/null 2>&1; then found=1; fi
	[ -S "$sockets/offload-$j" ] && rm -f "$sockets/offload-$j"
	# The server's end hangs up every window; let those processes go before their worktree does.
	for f in "$d/runner.pid" "$d"/tasks/*/pid; do
		i=0
		while [ "$i" -lt 20 ] && [ "$(alive "$f")" = 1 ]; do
			sleep 0.1 2>/dev/null || sleep 1
			i=$((i + 1))
		done
	done
	repo=$fallback_repo
	if [ -f "$d/meta" ]; then
		while IFS= read -r line <&4; do
			case $line in repo=?*) repo=${line#repo=} ;; esac
		done 4< "$d/meta"
	fi
	if [ "$has_git" = 1 ] && [ -n "$repo" ] && git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
		if [ -e "$wt" ]; then
			git -C "$repo" worktree remove --force "$wt" >/dev/null 2>&1
		fi
		# The pattern matches refs/offload/jobs/JOB and refs below it, never refs/offload/jobs/JOB2.
		refs=$(git -C "$repo" for-each-ref --format='delete %(refname)' "refs/offload/jobs/$j")
		if [ -n "$refs" ]; then
			found=1
			printf '%s\n' "$refs" | git -C "$repo" update-ref --stdin
		fi
	fi
	if [ -e "$wt" ] || [ -L "$wt" ]; then
		found=1
		rm -rf "$wt"
	fi
	if [ "$has_git" = 1 ] && [ -n "$repo" ]; then
		git -C "$repo" worktree prune >/dev/null 2>&1
	fi
	if [ -e "$d" ]; then
		found=1
		rm -rf "$d"
	fi
	if [ "$found" = 1 ]; then
		printf 'cleaned\t%s\n' "$j"
	else
		printf 'missing\t%s\n' "$j"
	fi
}
"""


@dataclass
class TaskStatus:
    name: str
    state: State
    exit_code: int | None = None


@dataclass
class JobStatus:
    id: str
    state: State
    tasks: list[TaskStatus] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    alive: bool = False  # the job's tmux server is up (so `offload attach` can show it)
    runner_alive: bool = False

    @property
    def exit_code(self) -> int | None:
        """The job's exit code once finished: 0, else the first failed task's non-zero code (1 if it has none)."""
        if self.state is State.SUCCESS:
            return 0
        if self.state is not State.FAILED:
            return None
        for t in self.tasks:
            if t.state is State.FAILED:
                return t.exit_code if t.exit_code else 1
        return 1


def status_script(workspace: str) -> str:
    """Status of the jobs under WORKSPACE/jobs: run as `sh -s [JOB...]` or `sh -c SCRIPT sh [JOB...]`.

    With job ids as arguments only those jobs are listed (unknown ones are left out); without, every job.
    """
    return (f"set -u\njobs={shlex.quote(workspace + '/jobs')}\nversion={STATUS_VERSION}\n" + _STATUS)


def _task_state(state: str, exit_code: int | None, pid: str, runner: str) -> State:
    try:
        st = State(state)
    except ValueError:
        return State.PENDING
    if st is not State.RUNNING:
        return st
    if exit_code is not None and pid != "1":  # the wrapper stopped between writing exit and state
        return State.SUCCESS if exit_code == 0 else State.FAILED
    if pid == "0" or (pid == "-" and runner == "0"):
        return State.FAILED
    return State.RUNNING


def _job_state(recorded: str, runner: str, tasks: list[TaskStatus]) -> State:
    if any(t.state is State.RUNNING for t in tasks):
        return State.RUNNING
    if recorded in (State.SUCCESS.value, State.FAILED.value):
        return State(recorded)
    if runner == "1":
        return State.RUNNING
    if runner == "-":  # the launch has not recorded the runner yet
        return State.PENDING
    if tasks and all(t.state.finished for t in tasks):  # the runner stopped before writing the job's state
        return State.FAILED if any(t.state is State.FAILED for t in tasks) else State.SUCCESS
    return State.FAILED  # the runner is gone and tasks are left that nobody will start


@dataclass
class _Record:
    """What status_script printed about one job, before the states are derived."""

    state: str = "-"
    runner: str = "-"
    tmux: str = "0"
    seen: bool = False
    meta: dict[str, str] = field(default_factory=dict)
    tasks: list[tuple[str, str, str, str]] = field(default_factory=list)


def parse_status(text: str) -> list[JobStatus]:
    """Jobs from the output of status_script, in the order printed."""
    records: dict[str, _Record] = {}
    for line in text.splitlines():
        fields = line.split("\t")
        kind = fields[0]
        if kind == "job" and len(fields) >= 5:
            r = records.setdefault(fields[1], _Record())
            r.state, r.runner, r.tmux, r.seen = fields[2], fields[3], fields[4], True
        elif kind == "meta" and len(fields) >= 4:
            key, value = line.split("\t", 3)[2:]
            records.setdefault(fields[1], _Record()).meta[key] = value
        elif kind == "task" and len(fields) >= 6:
            name, state, code, pid = fields[2:6]
            records.setdefault(fields[1], _Record()).tasks.append((name, state, code, pid))
    out = []
    for job, r in records.items():
        if not r.seen:
            continue
        tasks = []
        for name, state, code, pid in r.tasks:
            exit_code = int(code) if code.isdigit() else None
            tasks.append(TaskStatus(name, _task_state(state, exit_code, pid, r.runner), exit_code))
        out.append(JobStatus(id=job, state=_job_state(r.state, r.runner, tasks), tasks=tasks, meta=r.meta,
                             alive=r.tmux == "1", runner_alive=r.runner == "1"))
    return out


def follow_script() -> str:
    """Print a task's log from a byte offset and keep following it until the task has finished.

    Run as `sh -s TASK_DIR OFFSET follow` (or `sh -c SCRIPT sh TASK_DIR OFFSET follow`); TASK_DIR is
    `JobPaths.task_dir(task)`. It prints every byte of the log from OFFSET on, exactly once, and exits 0 once the
    task has finished (its `exit` file or final state exists) and the log is drained; also when nobody is left
    to finish the task (runner and task process gone). Exit 2: bad offset; 3: no such task directory.
    """
    return "set -u\n" + _LOG


def log_script() -> str:
    """Print a task's log from a byte offset and exit: `sh -s TASK_DIR OFFSET` (same script, without `follow`)."""
    return "set -u\n" + _LOG


def follow_args(paths: JobPaths, task: str, offset: int = 0, *, follow: bool = True) -> list[str]:
    """The arguments for follow_script / log_script."""
    validate_id(task, "task name")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    return [paths.task_dir(task), str(offset)] + (["follow"] if follow else [])


def clean_script(workspace: str, jobs: str | Iterable[str], *, repo: str | None = None) -> str:
    """A script for `sh -s` that removes jobs: tmux server, worktree, refs/offload/jobs/JOB and the job dir.

    REPO is the bare repository to use when a job's meta has no `repo` (a launch that never happened).
    Prints `cleaned<TAB>JOB` or `missing<TAB>JOB` per job and exits 0.
    """
    ids = [jobs] if isinstance(jobs, str) else list(jobs)
    for job in ids:
        validate_id(job, "job id")
    q = shlex.quote
    head = f"set -u\nworkspace={q(workspace)}\nfallback_repo={q(repo or '')}\n"
    return head + _CLEAN + "".join(f"clean {job}\n" for job in ids) + "exit 0\n"


def parse_clean(text: str) -> dict[str, bool]:
    """Job id -> whether anything of it was found and removed."""
    out = {}
    for line in text.splitlines():
        kind, _, job = line.partition("\t")
        if kind in ("cleaned", "missing") and job:
            out[job] = kind == "cleaned"
    return out
