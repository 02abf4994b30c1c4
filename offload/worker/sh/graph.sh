# offload task-graph runner: runs one job's tasks, each in its own tmux window, in dependency order.
#
#   sh graph.sh JOB_DIR WORKTREE                 run the job; window 0 ("offload") of the job's session
#   sh graph.sh --task JOB_DIR WORKTREE TASK     run one task; what every task window executes
#
# Plain POSIX sh, so any worker image with sh, tmux and coreutils can run it. It comes after lib.sh (the layout,
# the id rule and task liveness); the job's files are described in offload/worker/layout.py. Every state file is
# replaced atomically (lib.sh: put), so a reader sees either the old value or the new one.
#
# Restarting the runner is safe: it never starts a task that has a state, and a second runner refuses to start
# while the first is alive (runner.pid). A task whose process is gone without an exit code is marked failed.
#
# Exit 12: the job already has a live runner; 2: bad arguments, not a job directory, or no such task; 1: a state it
# cannot write (offload/worker/exits.py: GraphExit).
#
# A state the runner cannot write (a full disk) ends the job: the runner starts nothing more, ends the job's tmux
# server at once and exits. Readers then see the tasks that could not finish as failed (lib.sh: task_state).
#
# Lifetime of the tmux server: windows stay open after their command ends (remain-on-exit), so `offload attach`
# still shows the output of a finished job. Once every task has finished, the runner writes the job's state and
# lingers until no client has been attached for OFFLOAD_LINGER_SECONDS (default 600) seconds in a row; then it
# ends the job's tmux server. The logs stay in the job directory either way.

set -u
# The job's own files are private to the worker user; its command and its checkout get the worker's umask.
_umask=$(umask)
umask 077

# Every variable of this script starts with '_': tasks inherit the environment, and a variable imported from it
# stays exported, so these names must not clash with the job's own (the launch refuses env names with '_').
_poll=0.2       # seconds between looks at the task states while the job runs
_history=10000  # scrollback lines per task window
_linger_step=5  # seconds between looks for attached clients once the job has finished
_broken=        # the state file that could not be written, once one could not

q() { # WORD: WORD quoted for sh
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

nap() {
	sleep "$1" 2>/dev/null || sleep 1
}

now() {
	date +%H:%M:%S
}

say() { # MESSAGE: one line of progress in the runner's window
	printf '%s  %s\n' "$(now)" "$1"
}

absolute() { # PATH: PATH made absolute, in $_got
	case $1 in
	/*) _got=$1 ;;
	*) _got=$(pwd)/$1 ;;
	esac
	while :; do
		case $_got in
		?*/) _got=${_got%/} ;;
		*) break ;;
		esac
	done
}

tm() { # tmux on the job's own server
	tmux -f /dev/null -L "$_socket" "$@" < /dev/null
}

# ---------------------------------------------------------------------------------------------------------------
# One task (the process of a task window)

run_task() {
	_td=$_job_dir/tasks/$_task
	[ -f "$_td/cmd" ] || { printf 'offload: no task %s in %s\n' "$_task" "$_job_dir" >&2; exit 2; }
	get "$_td/state"
	case $_got in success | failed | skipped) exit 0 ;; esac
	# Ctrl-C in an attached window interrupts the command, and the task still records its exit code. The trap
	# comes before the task is marked running: from then on, a Ctrl-C must find it in place.
	trap ':' INT
	if ! put "$_td/pid" "$$" || ! put "$_td/state" running; then
		printf 'offload: cannot write the state of task %s in %s\n' "$_task" "$_job_dir" >&2
		exit 1
	fi
	export OFFLOAD_TASK="$_task"
	if command -v bash > /dev/null 2>&1; then _interp="bash"; else _interp="sh"; fi
	rm -f "$_td/exit.tmp"
	printf '[offload] task %s\n' "$_task"
	if cd "$_worktree" 2> /dev/null; then
		# No pipefail in POSIX sh: the command's exit code is saved inside the pipeline, and published only
		# once tee has written the whole log.
		{
			trap ':' INT
			(umask "$_umask" && exec "$_interp" "$_td/cmd") 2>&1
			printf '%s\n' "$?" > "$_td/exit.tmp"
		} | tee -i -a "$_td/log"
	else
		printf 'offload: cannot enter the worktree %s\n' "$_worktree" | tee -i -a "$_td/log"
		printf '126\n' > "$_td/exit.tmp"
	fi
	get "$_td/exit.tmp"
	_rc=$_got
	is_number "$_rc" || _rc=1
	put "$_td/exit" "$_rc"
	rm -f "$_td/exit.tmp"
	if [ "$_rc" = 0 ]; then _st=success; else _st=failed; fi
	put "$_td/state" "$_st"
	printf '\n[offload] task %s: %s (exit %s)\n' "$_task" "$_st" "$_rc"
	exit 0
}

# ---------------------------------------------------------------------------------------------------------------
# The runner

lock() {
	get "$_job_dir/runner.pid"
	if is_number "$_got" && [ "$_got" != "$$" ] && alive "$_got"; then
		printf 'offload: job %s already has a runner (pid %s)\n' "$_job" "$_got" >&2
		exit 12
	fi
	put "$_job_dir/runner.pid" "$$" && return 0
	printf 'offload: cannot write %s/runner.pid%s\n' "$_job_dir" "$(space_left "$_job_dir")" >&2
	exit 1
}

save() { # FILE VALUE: put, and remember a failed write: the runner stops starting things once one fails
	put "$1" "$2" && return 0
	_broken=$1
	return 1
}

fail_task() { # TASK REASON: mark TASK failed without an exit code
	printf '\n[offload] task %s: %s\n' "$1" "$2" 2> /dev/null >> "$_job_dir/tasks/$1/log"
	save "$_job_dir/tasks/$1/state" failed
}

# A task left "running" without a pid: an earlier runner stopped between marking it and opening its window.
# Its wrapper writes the pid first thing, so give it a moment before declaring it lost.
recover() {
	while IFS= read -r _t <&3; do
		[ -n "$_t" ] || continue
		_td=$_job_dir/tasks/$_t
		get "$_td/state"
		[ "$_got" = running ] || continue
		_i=0
		while [ "$_i" -lt 10 ] && [ ! -f "$_td/pid" ] && [ ! -f "$_td/exit" ]; do
			nap $_poll
			_i=$((_i + 1))
		done
		if [ ! -f "$_td/pid" ] && [ ! -f "$_td/exit" ]; then
			fail_task "$_t" "never started (the runner stopped while opening its window)"
		fi
	done 3< "$_job_dir/tasks.list"
}

start() { # TASK: open the task's window
	_td=$_job_dir/tasks/$1
	save "$_td/state" running || return 0
	if _out=$(tm new-window -d -t "=$_job:" -n "$1" -P -F '#{pane_pid} #{window_id}' \
		"exec sh $_q_self --task $_q_job_dir $_q_worktree $(q "$1")" 2>&1); then
		_pid=${_out%% *}
		_window=${_out#* }
		is_number "$_pid" && save "$_td/pid" "$_pid"
		[ "$_window" != "$_out" ] && save "$_td/window" "$_window"
		say "$1: started"
	else
		fail_task "$1" "could not open a tmux window: $_out"
	fi
}

consider() { # TASK: start or skip a pending task once all its needs have finished
	_td=$_job_dir/tasks/$1
	_total=0 _ok=0 _bad=0
	if [ -f "$_td/needs" ]; then
		while IFS= read -r _n <&4; do
			[ -n "$_n" ] || continue
			_total=$((_total + 1))
			if [ ! -d "$_job_dir/tasks/$_n" ]; then
				_bad=$((_bad + 1))
				continue
			fi
			get "$_job_dir/tasks/$_n/state"
			case $_got in
			success) _ok=$((_ok + 1)) ;;
			failed) _bad=$((_bad + 1)) ;;
			skipped) ;;
			*) return 0 ;;
			esac
		done 4< "$_td/needs"
	fi
	get "$_td/when"
	_go=0
	case $_got in
	failure) [ "$_bad" -gt 0 ] && _go=1 ;;
	always) _go=1 ;;
	*) [ "$_ok" = "$_total" ] && _go=1 ;;
	esac
	if [ "$_go" = 1 ]; then
		start "$1"
	else
		save "$_td/state" skipped
		say "$1: skipped (when: ${_got:-success})"
	fi
}

watch() { # TASK: a running task whose process is gone has ended by its exit code, or failed without one
	task_state "$1"
	case $_state in
	success | failed)
		if [ -n "$_exit" ]; then
			save "$_job_dir/tasks/$1/state" "$_state"
		else
			fail_task "$1" "ended without an exit code (its window was closed or killed)"
		fi
		;;
	esac
}

report() { # TASK: print a finished task once
	case $_reported in *" $1 "*) return 0 ;; esac
	get "$_job_dir/tasks/$1/state"
	case $_got in
	success | failed)
		_st=$_got
		get "$_job_dir/tasks/$1/exit"
		say "$1: $_st${_got:+ (exit $_got)}"
		;;
	skipped) ;;
	*) return 0 ;;
	esac
	_reported="$_reported$1 "
}

linger() { # keep the tmux server for attaching clients for OFFLOAD_LINGER_SECONDS (600), then end it
	_seconds=${OFFLOAD_LINGER_SECONDS:-600}
	is_number "$_seconds" || _seconds=600
	[ "$_seconds" -gt 0 ] && say "tmux session stays up for ${_seconds}s without a client attached"
	_idle=0
	while :; do
		if [ -n "$(tm list-clients -t "=$_job" 2> /dev/null)" ]; then
			_idle=0
		elif [ "$_idle" -ge "$_seconds" ]; then
			break
		fi
		# Coarse steps: a lingering job should cost its worker next to nothing.
		_step=$((_seconds - _idle))
		[ "$_step" -gt "$_linger_step" ] && _step=$_linger_step
		[ "$_step" -lt 1 ] && _step=1
		nap $_step
		_idle=$((_idle + _step))
	done
	end_server
}

end_server() {
	# tmux leaves its socket file behind when the server exits; remove it, then end the server.
	_server=$(tm display-message -p -t "=$_job:" '#{pid}' 2> /dev/null)
	_socket=$(tm display-message -p -t "=$_job:" '#{socket_path}' 2> /dev/null)
	if is_number "$_server" && [ -n "$_socket" ]; then
		rm -f "$_socket"
		kill "$_server"
	else
		tm kill-session -t "=$_job" 2> /dev/null || :
	fi
}

# Before the first task, the job's warm worktree moves to its snapshot (lib.sh: move_tree), once: a restarted
# runner does not do it again. A worktree that is not a whole git worktree of the job's repository (lib.sh:
# tree_valid) is not moved and nothing runs in it: every task fails with the reason.
materialize() {
	[ -f "$_job_dir/checked-out" ] && return 0
	meta_value "$_job_dir" commit
	_commit=$_got
	# A job without a snapshot (a plain directory for a worktree) has nothing to move.
	[ -n "$_commit" ] || return 0
	meta_value "$_job_dir" repo
	_repo=$_got
	meta_value "$_job_dir" fresh
	_fresh=$_got
	say "moving the worktree to the snapshot$([ "$_fresh" = 1 ] && echo ' (fresh: ignored files go too)')"
	if ! tree_valid "$_worktree" "$_repo"; then
		_out="$_worktree is not a worktree of $_repo"
	elif _out=$(umask "$_umask" && move_tree "$_worktree" "$_commit" "$_fresh" 2>&1); then
		save "$_job_dir/checked-out" "$_commit"
		return 0
	else
		_out=$(printf '%s' "$_out" | tail -n 1)
	fi
	say "job $_job: the worktree could not be moved to the snapshot: $_out"
	while IFS= read -r _t <&3; do
		[ -n "$_t" ] || continue
		get "$_job_dir/tasks/$_t/state"
		[ -z "$_got" ] && fail_task "$_t" "the worktree could not be moved to the snapshot: $_out"
	done 3< "$_job_dir/tasks.list"
}

# Once the job has ended its result is recorded (signed with the job's key), its worktree goes back to the pool
# (its leftover processes ended), and older jobs and idle worktrees of its repository beyond what the meta keeps
# (keep_jobs, warm_worktrees; none older than a week) are removed, with worktrees of other repositories idle for
# longer than a week.
finish() {
	record_result "$_worktree" "$_job" "$_result_key" || say "could not record the job's result"
	release_tree "$_worktree" "$_job"
	meta_value "$_job_dir" keep_jobs
	_keep=$_got
	is_number "$_keep" || _keep=20 # the launch writes offload/worker/layout.py's defaults; these stand in
	meta_value "$_job_dir" warm_worktrees
	_warm=$_got
	is_number "$_warm" || _warm=4
	_days=7
	_now=$(date +%s)
	_oldest=$((_now - _days * 86400))
	prune_jobs
	prune_trees
}

prune_jobs() { # the finished jobs of the workspace beyond _keep, newest kept, and any finished before _oldest
	jobs_dir "$_workspace"
	_list=
	for _d in "$_p_jobs"/*; do
		_j=${_d##*/}
		if ! is_id "$_j" || [ "$_j" = "$_job" ]; then continue; fi
		job_begin "$_d"
		job_state # a finished job whose runner lingers for attach is finished all the same
		case $_state in running | pending) continue ;; esac
		get "$_d/finished"
		is_number "$_got" || _got=$_now # without a record of its end, a job is kept for its count only
		_list="$_list$_got $_j
"
	done
	_n=0
	printf '%s' "$_list" | sort -rn | while read -r _when _j; do
		_n=$((_n + 1))
		if [ "$_n" -gt "$_keep" ] || [ "$_when" -lt "$_oldest" ]; then
			remove_job "$_workspace" "$_j" > /dev/null
		fi
	done
}

prune_trees() { # in the job's own pool, the idle warm worktrees beyond _warm (those given back last are kept);
	# in every pool, this one included, those idle since before _oldest. How many of another repository's idle
	# worktrees stay warm is for its own jobs to say (their warm_worktrees), so there only age counts.
	trees_dir "$_workspace"
	for _pool in "$_p_trees"/*; do
		if [ ! -d "$_pool" ] || [ -L "$_pool" ]; then continue; fi
		if [ "$_pool" = "${_worktree%/*}" ] && is_number "${_worktree##*/}"; then
			locked "$_pool" prune_pool "$_pool" "$_warm"
		else
			locked "$_pool" prune_pool "$_pool" -
		fi
	done
}

prune_pool() { # POOL KEEP (holding its lock): remove the idle worktrees beyond the KEEP used last (- for no count),
	# and those idle since before _oldest (one never given back counts as just given back)
	_list=
	for _t in "$1"/*; do
		if ! is_number "${_t##*/}" || [ ! -d "$_t" ]; then continue; fi
		tree_held "$_t" && continue
		get "$_t.used"
		is_number "$_got" || _got=$_now
		_list="$_list$_got $_t
"
	done
	_n=0
	printf '%s' "$_list" | sort -rn | while read -r _when _t; do
		_n=$((_n + 1))
		if { is_number "$2" && [ "$_n" -gt "$2" ]; } || [ "$_when" -lt "$_oldest" ]; then
			remove_tree "$_t"
		fi
	done
}

run_job() {
	lock
	# The key that signs the job's result (lib.sh: record_result) is read before anything of the job runs, and
	# kept only in this shell: not in a file, not in the environment its tasks get.
	get "$_job_dir/result-key"
	_result_key=$_got
	rm -f "$_job_dir/result-key"
	job_begin "$_job_dir"
	trap 'say "the runner goes on; stop the job with: offload clean $_job"' INT
	tm set-option -g history-limit $_history \; set-window-option -g remain-on-exit on \
		\; set-window-option -g allow-rename off > /dev/null 2>&1 || :
	_q_self=$(q "$_job_dir/graph.sh")
	_q_job_dir=$(q "$_job_dir")
	_q_worktree=$(q "$_worktree")
	say "job $_job: runner started"
	materialize
	recover
	_reported=' '
	_rounds=0
	while :; do
		_active=0
		while IFS= read -r _t <&3; do
			[ -n "$_t" ] || continue
			get "$_job_dir/tasks/$_t/state"
			case $_got in
			success | failed | skipped) ;;
			running) _active=1 && watch "$_t" ;;
			*) _active=1 && consider "$_t" ;;
			esac
			report "$_t"
		done 3< "$_job_dir/tasks.list"
		[ "$_active" = 0 ] && break
		[ -n "$_broken" ] && break
		# Short naps at first, so quick tasks follow each other at once; then coarser ones, which cost less.
		_rounds=$((_rounds + 1))
		if [ "$_rounds" -gt 40 ]; then nap $_poll; else nap 0.05; fi
	done
	_final=success
	while IFS= read -r _t <&3; do
		get "$_job_dir/tasks/$_t/state"
		[ "$_got" = failed ] && _final=failed
	done 3< "$_job_dir/tasks.list"
	[ -n "$_broken" ] && _final=failed
	save "$_job_dir/state" "$_final"
	if [ -n "$_broken" ]; then
		# Nothing more can be recorded: end at once, attached clients or not.
		save "$_job_dir/finished" "$(date +%s)"
		say "job $_job: failed: cannot write $_broken$(space_left "$_job_dir")"
		record_result "$_worktree" "$_job" "$_result_key"
		release_tree "$_worktree" "$_job"
		end_server
		exit 1
	fi
	say "job $_job: $_final"
	finish
	# `finished` comes last: once it is there, the job's result is kept and its worktree is back in the pool, so
	# a `run --wait` that waits for it is followed by a pull that finds the result, and a run that gets the
	# worktree warm.
	save "$_job_dir/finished" "$(date +%s)"
	linger
	exit 0
}

# ---------------------------------------------------------------------------------------------------------------

_mode=job
if [ "${1:-}" = --task ]; then
	_mode=task
	shift
fi
case $_mode:$# in
job:2 | task:3) ;;
*)
	echo "usage: sh graph.sh JOB_DIR WORKTREE | sh graph.sh --task JOB_DIR WORKTREE TASK" >&2
	exit 2
	;;
esac
absolute "$1"
_job_dir=$_got
absolute "$2"
_worktree=$_got
_job=${_job_dir##*/}
is_id "$_job" || {
	printf 'offload: %s is not a job directory\n' "$_job_dir" >&2
	exit 2
}
_workspace=${_job_dir%/jobs/*}
job_paths "$_workspace" "$_job"
_socket=$_p_socket
[ -f "$_job_dir/tasks.list" ] || {
	printf 'offload: %s is not a job directory\n' "$_job_dir" >&2
	exit 2
}
if [ "$_mode" = task ]; then
	_task=$3
	is_id "$_task" || {
		printf 'offload: invalid task name %s\n' "$_task" >&2
		exit 2
	}
	run_task
else
	run_job
fi
