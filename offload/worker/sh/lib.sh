# shellcheck shell=sh disable=SC2317
# (SC2317: each script uses only some of these functions.)
# offload's worker library: the workspace layout, the id rule and when a task is alive, written once for every
# worker-side script. offload/worker/scripts.py puts this file in front of each script that uses it, so a script
# sent to a worker is always whole. POSIX sh: dash, bash and busybox ash run it. Every variable it sets starts
# with '_', because the tasks of a job inherit the environment of its runner.

get() { # FILE: the first line of FILE in _got, empty when there is no such file
	_got=
	if [ -f "$1" ]; then
		{ IFS= read -r _got < "$1"; } 2> /dev/null || :
	fi
}

put() { # FILE VALUE: write VALUE and a newline to FILE atomically, so a reader sees the old value or the new.
	# Fails (and leaves nothing behind) when the write does, as on a full disk.
	printf '%s\n' "$2" 2> /dev/null > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1" && return 0
	rm -f "$1.tmp.$$"
	return 1
}

is_number() {
	case $1 in '' | *[!0-9]*) return 1 ;; esac
	return 0
}

is_id() { # WORD: a job, task or playbook id (offload/worker/layout.py, ID_RULE)
	case $1 in '' | [!A-Za-z0-9]* | *[!A-Za-z0-9_-]*) return 1 ;; esac
	[ "${#1}" -le 63 ]
}

disk_space() { # DIR: the free and total KB of the file system DIR is on, in _free_kb and _size_kb (- unknown)
	_free_kb=- _size_kb=-
	_l_df=$(df -Pk "$1" 2> /dev/null) || return 0
	_l_df=${_l_df#*"
"}
	# Filesystem 1024-blocks Used Available Capacity Mounted-on; the name may be long, the numbers follow.
	set -f
	# shellcheck disable=SC2086 # split into words on purpose
	set -- $_l_df
	set +f
	[ $# -ge 6 ] || return 0
	is_number "$2" && _size_kb=$2
	is_number "$4" && _free_kb=$4
}

space_left() { # DIR: print a note when DIR's disk is full, else nothing
	disk_space "$1"
	is_number "$_free_kb" && [ "$_free_kb" -lt 64 ] && printf ' (no space left on the disk: %s KB free)' "$_free_kb"
	return 0
}

# ---- the layout (offload/worker/layout.py describes the same tree) -------------------------------------------

job_paths() { # WORKSPACE JOB: the job's directory, worktree, ref and tmux server in _p_dir _p_tree _p_ref _p_socket
	_p_dir=$1/jobs/$2
	_p_tree=$1/worktrees/$2
	_p_ref=refs/offload/jobs/$2
	_p_socket=offload-$2
}

jobs_dir() { # WORKSPACE: the directory that holds every job's directory, in _p_jobs
	_p_jobs=$1/jobs
}

repo_of_tree() { # WORKTREE: the bare repository a worktree belongs to (from its .git file), in _p_repo
	get "$1/.git"
	case $_got in "gitdir: "*/worktrees/*) _p_repo=${_got#gitdir: } && _p_repo=${_p_repo%/worktrees/*} ;;
	*) _p_repo= ;;
	esac
}

repo_with_ref() { # WORKSPACE REF: the bare repository that holds REF, in _p_repo (empty: none does)
	_p_repo=
	command -v git > /dev/null 2>&1 || return 1
	for _l_r in "$1"/repos/*.git; do
		[ -f "$_l_r/HEAD" ] && git -C "$_l_r" show-ref -q --verify "$2" && _p_repo=$_l_r && return 0
	done
	return 1
}

repo_path() { # WORKSPACE REPO_ID: the bare repository that receives the snapshots of one repository, in _p_repo
	_p_repo=$1/repos/$2.git
}

young() { # PATH: it was changed less than two minutes ago (a launch under way, not a leftover)
	[ -n "$(find "$1" -maxdepth 0 -mmin -2 2> /dev/null)" ]
}

leftover() { # WORKSPACE JOB: what a launch that did not finish left of JOB (its worktree or its ref, and no job
	# directory). Sets _state: pending while the worktree is young, else failed. Fails when nothing is left.
	job_paths "$1" "$2"
	[ -e "$_p_dir" ] && return 1
	if [ -d "$_p_tree" ]; then
		if young "$_p_tree"; then _state=pending; else _state=failed; fi
		return 0
	fi
	repo_with_ref "$1" "$_p_ref" && _state=failed
}

leftover_ids() { # WORKSPACE: the ids that may have leftovers (check each with `leftover`), one per line
	for _l_t in "$1"/worktrees/*; do
		[ -d "$_l_t" ] && printf '%s\n' "${_l_t##*/}"
	done
	command -v git > /dev/null 2>&1 || return 0
	for _l_r in "$1"/repos/*.git; do
		[ -f "$_l_r/HEAD" ] || continue
		git -C "$_l_r" for-each-ref --format='%(refname:lstrip=3)' refs/offload/jobs/ 2> /dev/null
	done
}

# ---- liveness: the one rule for "is this task still running" ---------------------------------------------------

alive() { # PID: the process exists and has not exited. kill -0 alone also succeeds for a zombie, and the
	# zombie of an orphaned task stays forever in a container whose pid 1 does not reap.
	kill -0 "$1" 2> /dev/null || return 1
	if [ -r "/proc/$1/stat" ]; then
		{ IFS= read -r _l_stat < "/proc/$1/stat"; } 2> /dev/null || return 1
		case ${_l_stat##*") "} in Z* | X* | x*) return 1 ;; esac
	fi
	return 0
}

of_job() { # PID JOB: the process belongs to JOB: every process of a job inherits OFFLOAD_JOB from its tmux server,
	# so a pid or a directory that another job has since taken over is never mistaken for this one's
	[ -r "/proc/$1/environ" ] && tr '\000' '\n' < "/proc/$1/environ" 2> /dev/null | grep -qxF "OFFLOAD_JOB=$2"
}

group_alive() { # PGID JOB: a process of JOB lives in the process group (zombies do not count); its pid in _member
	_member=
	for _l_s in /proc/[0-9]*/stat; do
		{ IFS= read -r _l_stat < "$_l_s"; } 2> /dev/null || continue
		_l_f=${_l_stat##*") "}
		_l_st=${_l_f%% *}
		_l_f=${_l_f#* }
		_l_f=${_l_f#* }
		[ "${_l_f%% *}" = "$1" ] || continue
		case $_l_st in Z* | X* | x*) continue ;; esac
		_l_p=${_l_s#/proc/}
		_l_p=${_l_p%/stat}
		of_job "$_l_p" "$2" || continue
		_member=$_l_p
		return 0
	done
	return 1
}

in_dir() { # DIR JOB: the pids of live processes of JOB whose working directory is DIR or below, in _in_dir
	_in_dir=
	_l_here=$PWD
	cd -P "$1" 2> /dev/null || return 0
	_l_dir=$PWD
	for _l_p in /proc/[0-9]*; do
		[ "${_l_p#/proc/}" = "$$" ] && continue
		# cd and pwd are builtins: no process per candidate, however many there are.
		cd -P "$_l_p/cwd" 2> /dev/null || continue
		case $PWD in "$_l_dir" | "$_l_dir"/*) ;; *) continue ;; esac
		alive "${_l_p#/proc/}" && of_job "${_l_p#/proc/}" "$2" && _in_dir="$_in_dir ${_l_p#/proc/}"
	done
	cd -P "$_l_here" 2> /dev/null || cd /
}

command_of() { # PID: its command line, one line of at most 120 characters, in _command (empty: unknown)
	_command=
	if [ -r "/proc/$1/cmdline" ]; then
		_command=$(tr '\000\t\n' '   ' < "/proc/$1/cmdline" 2> /dev/null | cut -c1-120)
	fi
}

# A job records the kernel's boot id when it starts: after a reboot its pids belong to other processes.
get /proc/sys/kernel/random/boot_id
_boot=$_got

pidfile() { # FILE: _alive is 1 when the process FILE names lives, 0 when it is gone, - when FILE holds no pid
	get "$1"
	if ! is_number "$_got"; then
		_alive=-
	elif [ "$_stale" = 0 ] && alive "$_got"; then
		_alive=1
	else
		_alive=0
	fi
}

job_begin() { # JOB_DIR: look at one job. Sets _jd; _stale (1 when it started before this boot, so none of its
	# processes lives); _runner (the runner: 1 alive, 0 gone, - not recorded yet, as a launch in progress).
	_jd=$1
	_stale=0
	get "$1/boot"
	if [ -n "$_got" ] && [ -n "$_boot" ] && [ "$_got" != "$_boot" ]; then
		_stale=1
	fi
	pidfile "$1/runner.pid"
	_runner=$_alive
}

task_state() { # TASK (after job_begin): the task's state in _state, its exit code in _exit (empty: none yet).
	# A task recorded as running is running while its process lives. Once that process is gone it has ended by
	# its exit code, or failed without one. Before its process is recorded it is starting, as long as a runner
	# is alive (or not recorded yet) to start it.
	_l_td=$_jd/tasks/$1
	get "$_l_td/exit"
	_exit=$_got
	is_number "$_exit" || _exit=
	get "$_l_td/state"
	case $_got in
	success | failed | skipped)
		_state=$_got
		return 0
		;;
	running) ;;
	*)
		_state=pending
		return 0
		;;
	esac
	pidfile "$_l_td/pid"
	if [ "$_alive" = 1 ]; then
		_state=running
	elif [ -n "$_exit" ]; then
		if [ "$_exit" = 0 ]; then _state=success; else _state=failed; fi
	elif [ "$_alive" = 0 ] || [ "$_stale" = 1 ] || [ "$_runner" = 0 ]; then
		_state=failed
	else
		_state=running
	fi
}

job_state() { # (after job_begin): the job's state in _state, which follows from its tasks alone. Once every
	# task has finished, the job has too: failed if one failed. While a task runs, it runs. While tasks wait,
	# it runs if its runner lives, is pending for a moment while the launch has not recorded the runner, and has
	# failed once the runner is gone, since nobody will start them. A job whose tasks cannot be read is never a
	# success.
	_l_running=0 _l_pending=0 _l_failed=0 _l_tasks=0
	if [ -f "$_jd/tasks.list" ]; then
		while IFS= read -r _l_t <&7; do
			is_id "$_l_t" || continue
			task_state "$_l_t"
			_l_tasks=$((_l_tasks + 1))
			case $_state in
			running) _l_running=1 ;;
			pending) _l_pending=1 ;;
			failed) _l_failed=1 ;;
			esac
		done 7< "$_jd/tasks.list"
	fi
	if [ "$_l_running" = 1 ]; then
		_state=running
	elif [ "$_l_pending" = 1 ] || [ "$_l_tasks" = 0 ]; then
		if [ "$_runner" = 1 ]; then
			_state=running
		elif [ "$_runner" = - ] && [ "$_stale" = 0 ] && young "$_jd"; then
			_state=pending # a launch under way; one that never recorded its runner has failed
		else
			_state=failed
		fi
	elif [ "$_l_failed" = 1 ]; then
		_state=failed
	else
		_state=success
	fi
}
