# shellcheck shell=sh disable=SC2317
# (SC2317: each script uses only some of these functions.)
# offload's worker library: the workspace layout, the id rule and when a task is alive, written once for every
# worker-side script. offload/worker/scripts.py puts this file in front of each script that uses it, so a script
# sent to a worker is always whole. POSIX sh: dash, bash and busybox ash run it. Every variable it sets starts
# with '_', because the tasks of a job inherit the environment of its runner; a function that calls others inside a
# loop names its own variables after itself (_lt_ for lease_tree, ...), so a callee never overwrites them.

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

job_paths() { # WORKSPACE JOB: the job's directory, its snapshot's ref, its result's ref and its tmux server, in
	# _p_dir _p_ref _p_result _p_socket
	_p_dir=$1/jobs/$2
	_p_ref=refs/offload/jobs/$2
	_p_result=refs/offload/results/$2
	_p_socket=offload-$2
}

jobs_dir() { # WORKSPACE: the directory that holds every job's directory, in _p_jobs
	_p_jobs=$1/jobs
}

repo_path() { # WORKSPACE REPO_ID: the bare repository that receives the snapshots of one repository, in _p_repo
	_p_repo=$1/repos/$2.git
}

trees_dir() { # WORKSPACE: the directory that holds every repository's pool of warm worktrees, in _p_trees
	_p_trees=$1/trees
}

tree_pool() { # WORKSPACE REPO_ID: the directory of the repository's warm worktrees (1, 2, ...), in _p_pool
	trees_dir "$1"
	_p_pool=$_p_trees/$2
}

meta_value() { # JOB_DIR KEY: the value of KEY in the job's meta, in _got (empty when absent)
	_got=
	[ -f "$1/meta" ] || return 0
	while IFS= read -r _l_line <&5; do
		case $_l_line in "$2="*) _got=${_l_line#"$2="} && break ;; esac
	done 5< "$1/meta"
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

young() { # PATH: it was changed less than two minutes ago (a launch under way, not a leftover)
	[ -n "$(find "$1" -maxdepth 0 -mmin -2 2> /dev/null)" ]
}

lease_of() { # WORKSPACE JOB: the warm worktree whose lease names JOB, in _p_tree (empty: none)
	_p_tree=
	trees_dir "$1"
	for _l_l in "$_p_trees"/*/*.lease/job; do
		get "$_l_l"
		[ "$_got" = "$2" ] || continue
		_p_tree=${_l_l%.lease/job}
		return 0
	done
	return 1
}

leftover() { # WORKSPACE JOB: what a launch that did not finish left of JOB: a lease or a ref, and no job
	# directory. Sets _state: pending while the lease is young, else failed. Fails when nothing is left.
	job_paths "$1" "$2"
	[ -e "$_p_dir" ] && return 1
	if lease_of "$1" "$2"; then
		if young "$_p_tree.lease"; then _state=pending; else _state=failed; fi
		return 0
	fi
	repo_with_ref "$1" "$_p_ref" && _state=failed
}

leftover_ids() { # WORKSPACE: the ids that may have leftovers (check each with `leftover`), one per line
	trees_dir "$1"
	for _l_l in "$_p_trees"/*/*.lease/job; do
		get "$_l_l"
		[ -n "$_got" ] && printf '%s\n' "$_got"
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

proc_ids() { # PID: the process's state, parent and process group (from /proc/PID/stat), in _ps_state, _ps_ppid
	# and _ps_pgid. Fails when it is gone.
	{ IFS= read -r _ps_stat < "/proc/$1/stat"; } 2> /dev/null || return 1
	_ps_f=${_ps_stat##*") "}
	_ps_state=${_ps_f%% *}
	_ps_f=${_ps_f#* }
	_ps_ppid=${_ps_f%% *}
	_ps_f=${_ps_f#* }
	_ps_pgid=${_ps_f%% *}
}

group_alive() { # PGID JOB: a process of JOB lives in the process group (zombies do not count); its pid in _member
	_member=
	# A group this shell can signal no process of has none of the job's (they run as this user): no need to read
	# every process's stat, which costs a lease tens of milliseconds for each group of the job before.
	kill -0 "-$1" 2> /dev/null || return 1
	for _l_s in /proc/[0-9]*/stat; do
		_l_p=${_l_s#/proc/}
		_l_p=${_l_p%/stat}
		proc_ids "$_l_p" || continue
		[ "$_ps_pgid" = "$1" ] || continue
		case $_ps_state in Z* | X* | x*) continue ;; esac
		of_job "$_l_p" "$2" || continue
		_member=$_l_p
		return 0
	done
	return 1
}

in_dir() { # DIR: the pids of live processes whose working directory is DIR or below, in _in_dir
	_in_dir=
	_l_here=$PWD
	cd -P "$1" 2> /dev/null || return 0
	_l_dir=$PWD
	for _l_p in /proc/[0-9]*; do
		[ "${_l_p#/proc/}" = "$$" ] && continue
		# cd and pwd are builtins: no process per candidate, however many there are.
		cd -P "$_l_p/cwd" 2> /dev/null || continue
		case $PWD in "$_l_dir" | "$_l_dir"/*) ;; *) continue ;; esac
		alive "${_l_p#/proc/}" && _in_dir="$_in_dir ${_l_p#/proc/}"
	done
	cd -P "$_l_here" 2> /dev/null || cd /
}

carrying() { # JOB: the pids of the processes that carry JOB's OFFLOAD_JOB, in _carrying (one grep for them all)
	_carrying=
	_l_found=$(grep -lzxF -e "OFFLOAD_JOB=$1" /proc/[0-9]*/environ 2> /dev/null)
	for _l_e in $_l_found; do
		_l_p=${_l_e#/proc/}
		_carrying="$_carrying ${_l_p%/environ}"
	done
}

self_and_up() { # this shell (a subshell too: /proc/self is the process that opens it), its ancestors and its
	# process group, in _self (pids between spaces) and _self_group: what stops processes never stops itself, nor
	# the runner and tmux server that a give-back runs under
	_self=' ' _self_group=-
	{ IFS= read -r _su_p < /proc/self/stat; } 2> /dev/null || return 0
	_su_p=${_su_p%% *}
	_su_i=0
	while is_number "$_su_p" && [ "$_su_p" -gt 1 ] && [ "$_su_i" -lt 64 ] && proc_ids "$_su_p"; do
		_self="$_self$_su_p "
		[ "$_self_group" = - ] && _self_group=$_ps_pgid
		_su_p=$_ps_ppid
		_su_i=$((_su_i + 1))
	done
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
	_ts_td=$_jd/tasks/$1
	# The state before the exit code: a task writes its exit code before its final state, so a final state read
	# first is never paired with an exit code read before the task wrote it.
	get "$_ts_td/state"
	_ts_state=$_got
	get "$_ts_td/exit"
	_exit=$_got
	is_number "$_exit" || _exit=
	case $_ts_state in
	success | failed | skipped)
		_state=$_ts_state
		return 0
		;;
	running) ;;
	*)
		_state=pending
		return 0
		;;
	esac
	pidfile "$_ts_td/pid"
	if [ "$_alive" = 0 ] && [ -z "$_exit" ]; then
		# Gone since the exit code was read: what it wrote before it went is there now.
		get "$_ts_td/exit"
		_exit=$_got
		is_number "$_exit" || _exit=
	fi
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
	_js_running=0 _js_pending=0 _js_failed=0 _js_tasks=0
	if [ -f "$_jd/tasks.list" ]; then
		while IFS= read -r _js_t <&7; do
			is_id "$_js_t" || continue
			task_state "$_js_t"
			_js_tasks=$((_js_tasks + 1))
			case $_state in
			running) _js_running=1 ;;
			pending) _js_pending=1 ;;
			failed) _js_failed=1 ;;
			esac
		done 7< "$_jd/tasks.list"
	fi
	if [ "$_js_running" = 1 ]; then
		_state=running
	elif [ "$_js_pending" = 1 ] || [ "$_js_tasks" = 0 ]; then
		if [ "$_runner" = 1 ]; then
			_state=running
		elif [ "$_runner" = - ] && [ "$_stale" = 0 ] && young "$_jd"; then
			_state=pending # a launch under way; one that never recorded its runner has failed
		else
			_state=failed
		fi
	elif [ "$_js_failed" = 1 ]; then
		_state=failed
	else
		_state=success
	fi
}

# ---- warm worktrees: a pool per repository, each worktree leased to one running job at a time -----------------

locked() { # POOL COMMAND...: run COMMAND, in a subshell, while holding the pool's lock (POOL/.lock); waits up to 30
	# s. flock's lock goes with the process that holds it, so a killed holder never leaves it stuck. Without flock,
	# a lock directory stands in (and one that a killed holder left must be removed by hand).
	_lk_file=$1/.lock
	shift
	if command -v flock > /dev/null 2>&1; then
		(
			flock -w 30 9 || {
				printf 'offload: %s stays locked\n' "$_lk_file" >&2
				exit 75
			}
			"$@"
		) 9> "$_lk_file"
		return
	fi
	_lk_i=0
	while ! mkdir "$_lk_file.d" 2> /dev/null; do
		[ "$_lk_i" -ge 300 ] && {
			printf 'offload: %s.d stays locked; remove it if no offload job is starting\n' "$_lk_file" >&2
			return 75
		}
		sleep 0.1 2> /dev/null || sleep 1
		_lk_i=$((_lk_i + 1))
	done
	("$@")
	_lk_rc=$?
	rmdir "$_lk_file.d"
	return "$_lk_rc"
}

tree_held() { # TREE: a job holds the worktree: its lease names a job whose runner lives or that is still running,
	# or a launch under way. A lease left by a runner that died is not a hold.
	[ -d "$1.lease" ] || return 1
	get "$1.lease/job"
	if ! is_id "$_got"; then
		young "$1.lease"
		return
	fi
	jobs_dir "${1%/*/*/*}" # TREE is WORKSPACE/trees/REPO/N
	[ -d "$_p_jobs/$_got" ] || {
		young "$1.lease"
		return
	}
	job_begin "$_p_jobs/$_got"
	[ "$_runner" = 1 ] && return 0
	job_state
	[ "$_state" = running ] || [ "$_state" = pending ]
}

lease_tree() { # WORKSPACE REPO_ID JOB COMMIT: lease a warm worktree of the repository to JOB, in _p_tree: the free
	# one used last, or a new one (detached at COMMIT, no files yet). Two leases never get the same worktree.
	tree_pool "$1" "$2"
	mkdir -p "$_p_pool" || return 1
	_p_tree=$(locked "$_p_pool" pick_tree "$@") && [ -n "$_p_tree" ]
}

pick_tree() { # WORKSPACE REPO_ID JOB COMMIT (holding the pool's lock): lease a worktree to JOB and print its path
	tree_pool "$1" "$2"
	repo_path "$1" "$2"
	_lt_repo=$_p_repo _lt_pool=$_p_pool _lt_skip=' '
	# Each round takes the free worktree given back last, or fails it for good (take_tree): it ends.
	while :; do
		_lt_pick='' _lt_when=-1 _lt_last=0
		for _lt_t in "$_lt_pool"/*; do
			_lt_n=${_lt_t##*/}
			if ! is_number "$_lt_n" || [ ! -d "$_lt_t" ]; then continue; fi
			[ "$_lt_n" -gt "$_lt_last" ] && _lt_last=$_lt_n
			case $_lt_skip in *" $_lt_n "*) continue ;; esac
			tree_held "$_lt_t" && continue
			get "$_lt_t.used"
			is_number "$_got" || _got=0
			[ "$_got" -gt "$_lt_when" ] && _lt_pick=$_lt_t _lt_when=$_got
		done
		[ -n "$_lt_pick" ] || break
		take_tree "$1" "$_lt_pick" "$_lt_repo" "$4" && break
		_lt_skip="$_lt_skip${_lt_pick##*/} "
	done
	if [ -z "$_lt_pick" ]; then
		_lt_pick=$_lt_pool/$((_lt_last + 1))
		git -C "$_lt_repo" worktree add -q --detach --no-checkout "$_lt_pick" "$4" > /dev/null || return 1
	fi
	if mkdir "$_lt_pick.lease" 2> /dev/null && put "$_lt_pick.lease/job" "$3"; then
		printf '%s\n' "$_lt_pick"
		return 0
	fi
	rm -rf "$_lt_pick.lease"
	return 1
}

take_tree() { # WORKSPACE TREE REPO COMMIT (holding the pool's lock): make a free worktree fit for a new lease. What
	# the jobs before left working in it ends first (stop_job); a process that outlives SIGKILL there makes this
	# fail, and the worktree is not leased: it would be shared. A job that ended without giving it back (its runner
	# died) keeps its result all the same. A worktree that is no longer a whole worktree of REPO (a job may delete
	# or rewrite its .git, its admin directory or HEAD) is made again, empty, at COMMIT.
	get "$2.lease/job"
	_tt_held=$_got
	get "$2.last"
	_tt_last=$_got
	stop_job "$1" "$_tt_held" "$2" lease || return 1
	if [ "$_tt_last" != "$_tt_held" ]; then
		stop_job "$1" "$_tt_last" "$2" lease || return 1
	fi
	if tree_valid "$2" "$3"; then
		is_id "$_tt_held" && record_result "$2" "$_tt_held"
	else
		renew_tree "$2" "$3" "$4" || return 1
	fi
	rm -rf "$2.lease"
}

tree_real() { # TREE: TREE is a warm worktree's directory, where it should be: WORKSPACE/trees/REPO/N, none of the
	# last three a symlink (a job can replace its own); its physical path in _tr_path
	is_number "${1##*/}" || return 1
	_tr_path=$(cd -P "$1" 2> /dev/null && pwd) || return 1
	_tr_ws=$(cd -P "${1%/*/*/*}" 2> /dev/null && pwd) || return 1
	[ "$_tr_path" = "$_tr_ws/trees/${1#"${1%/*/*}"/}" ]
}

tree_valid() { # TREE REPO: TREE is a whole worktree of the bare repository REPO: its .git file names an admin
	# directory of REPO that names TREE back, git takes REPO for its common directory and TREE for its top, and HEAD
	# is a commit. git runs in TREE only once its .git file has been checked.
	tree_real "$1" || return 1
	_tv_tree=$_tr_path
	_tv_repo=$(cd -P "$2" 2> /dev/null && pwd) || return 1
	[ -f "$1/.git" ] && [ ! -L "$1/.git" ] || return 1
	get "$1/.git"
	case $_got in "gitdir: "?*) ;; *) return 1 ;; esac
	_tv_admin=${_got#gitdir: }
	_tv_name=${_tv_admin##*/}
	# A relative gitdir is relative to TREE; git writes absolute ones.
	_tv_admin=$(cd "$1" 2> /dev/null && cd -P "$_tv_admin" 2> /dev/null && pwd) || return 1
	[ "$_tv_admin" = "$_tv_repo/worktrees/$_tv_name" ] || return 1
	get "$_tv_admin/gitdir"
	case $_got in */.git) ;; *) return 1 ;; esac
	[ "$(cd "$_tv_admin" 2> /dev/null && cd -P "${_got%/.git}" 2> /dev/null && pwd)" = "$_tv_tree" ] || return 1
	_tv_out=$(cd "$1" && git rev-parse --show-toplevel --git-common-dir 'HEAD^{commit}' 2> /dev/null) || return 1
	[ "${_tv_out%%"
"*}" = "$_tv_tree" ] || return 1
	_tv_out=${_tv_out#*"
"}
	[ "$(cd "$1" && cd -P "${_tv_out%%"
"*}" 2> /dev/null && pwd)" = "$_tv_repo" ] || return 1
	case ${_tv_out#*"
"} in '' | *[!0-9a-f]*) return 1 ;; esac
}

renew_tree() { # TREE REPO COMMIT (holding the pool's lock): make TREE again: a new worktree of REPO, detached at
	# COMMIT and without files, in place of what was there. Fails when TREE cannot be removed.
	[ -L "$1" ] || chmod -R u+rwx "$1" 2> /dev/null
	rm -rf "$1" "$1.last"
	if [ -e "$1" ] || [ -L "$1" ]; then return 1; fi
	# Its admin directory goes with every other whose worktree is gone; the pool's lock keeps additions out.
	git -C "$2" worktree prune > /dev/null 2>&1
	git -C "$2" worktree add -q --detach --no-checkout "$1" "$3" > /dev/null
}

move_tree() { # TREE COMMIT FRESH: move a warm worktree to COMMIT, exactly. git reset rewrites only the files whose
	# content differs (the others keep their mtimes, so make, ninja or cargo see only what changed), and git clean
	# removes what COMMIT lacks unless git ignores it: build outputs and caches stay; with FRESH (1) they go too.
	# git's message on failure is on stderr.
	if [ "$3" = 1 ]; then _l_x=x; else _l_x=; fi
	# The refresh first: a file touched but not changed is then not rewritten, so it keeps even that mtime.
	(cd "$1" && { git update-index -q --refresh > /dev/null 2>&1 || :; } && git reset -q --hard "$2" &&
		git clean -qffd"$_l_x")
}

remove_tree() { # TREE: take a warm worktree out of its pool for good (the caller holds the pool's lock)
	repo_of_tree "$1"
	[ -n "$_p_repo" ] && git -C "$_p_repo" worktree remove --force "$1" > /dev/null 2>&1
	rm -rf "$1" "$1.used" "$1.lease" "$1.last"
}

release_tree() { # TREE JOB: give the worktree back to the pool, if JOB still holds it. Until another job leases
	# it, TREE.last names JOB: its files are still the ones JOB left (`offload get`).
	[ -n "$1" ] && [ -d "$1.lease" ] || return 0
	locked "${1%/*}" give_back "$1" "$2"
}

give_back() { # TREE JOB (holding the pool's lock). What the job left running ends first, while the runner that
	# gives the worktree back and its tmux server linger (stop_job); whatever else still works in the worktree ends
	# when it is leased again, and a process that outlives SIGKILL keeps it from that lease (take_tree).
	get "$1.lease/job"
	[ "$_got" = "$2" ] || return 0
	stop_job "${1%/*/*/*}" "$2" "$1" left
	put "$1.last" "$2"
	rm -rf "$1.lease"
	put "$1.used" "$(date +%s)"
}

tree_of_job() { # WORKSPACE JOB: the worktree that still holds what JOB left, in _p_tree: leased to JOB, or given
	# back by it and not leased since. Fails when another job has had it since (or there is none).
	lease_of "$1" "$2" && return 0
	job_paths "$1" "$2"
	meta_value "$_p_dir" worktree
	_p_tree=$_got
	[ -n "$_p_tree" ] && [ -d "$_p_tree" ] && [ ! -d "$_p_tree.lease" ] || return 1
	get "$_p_tree.last"
	[ "$_got" = "$2" ]
}

record_result() { # TREE JOB [KEY]: keep what JOB left in TREE as a commit: every file that is tracked or untracked
	# but not ignored, on top of the worktree's HEAD (the snapshot, or the job's own last commit). The record is the
	# line `COMMIT MAC` in the job's `result` file; the result ref keeps the commit's objects. MAC proves to the
	# client that the runner, holding the job's KEY, made the record (result_mac); without KEY (a runner that died,
	# recorded later by someone else) it is `-` and the client cannot vouch for it. The runner (with KEY) always
	# records, over whatever is there; without KEY a record is made only when there is none. It is recorded before
	# the worktree can be leased again, so no later job can lose it.
	repo_of_tree "$1"
	_rr_repo=$_p_repo
	job_paths "${1%/*/*/*}" "$2"
	_rr_ref=$_p_result _rr_dir=$_p_dir _rr_snapshot_ref=$_p_ref
	[ -n "$_rr_repo" ] && [ -d "$_rr_dir" ] || return 1
	[ -z "${3:-}" ] && [ -f "$_rr_dir/result" ] && return 0
	_rr_index=$1.result-index.$$
	rm -f "$_rr_index"
	# A private index, so the worktree's own is not changed; filters off, as for the snapshot.
	# shellcheck disable=SC2086 # _filters_off is words by design (filters_off)
	if _rr_head=$(git -C "$1" rev-parse -q --verify 'HEAD^{commit}') &&
		GIT_INDEX_FILE=$_rr_index git -C "$1" read-tree "$_rr_head" &&
		filters_off "$1" && GIT_INDEX_FILE=$_rr_index git -C "$1" $_filters_off add -A > /dev/null 2>&1 &&
		_rr_tree=$(GIT_INDEX_FILE=$_rr_index git -C "$1" write-tree) &&
		_rr_snapshot=$(git -C "$_rr_repo" rev-parse -q --verify "$_rr_snapshot_ref") &&
		_rr_commit=$(printf 'offload: the result of job %s\n\nSnapshot: %s\n' "$2" "$_rr_snapshot" | GIT_AUTHOR_NAME=offload \
			GIT_AUTHOR_EMAIL=offload@localhost GIT_COMMITTER_NAME=offload GIT_COMMITTER_EMAIL=offload@localhost \
			git -C "$1" commit-tree "$_rr_tree" -p "$_rr_head") &&
		git -C "$_rr_repo" update-ref "$_rr_ref" "$_rr_commit" &&
		result_mac "${3:-}" "$2" "$_rr_commit" && put "$_rr_dir/result" "$_rr_commit $_mac"; then
		rm -f "$_rr_index"
		return 0
	fi
	rm -f "$_rr_index"
	return 1
}

result_mac() { # KEY JOB COMMIT: the proof that whoever holds KEY recorded COMMIT as JOB's result, in _mac (`-`
	# without KEY): git's blob hash of the three, so it needs nothing but git (offload/runtime/results.py checks it).
	# printf is a builtin: KEY reaches git on a pipe, never in an argv.
	_mac=-
	[ -n "$1" ] || return 0
	_mac=$(printf 'offload-result\n%s\n%s\n%s\n' "$1" "$2" "$3" | (cd / && git hash-object --stdin)) && [ -n "$_mac" ]
}

filters_off() { # DIR: `-c` options in _filters_off that turn off every git filter driver configured for DIR, so
	# recording a result stores files as they are and runs nothing (git-lfs) that writes elsewhere. Only plain
	# driver names are taken, so the options split into words safely: use them unquoted.
	_filters_off=
	for _ff_name in $(git -C "$1" config --name-only --get-regexp '^filter\.' 2> /dev/null | sed -n \
		's/^filter\.\([A-Za-z0-9_-]*\)\.[a-z]*$/\1/p' | sort -u); do
		_filters_off="$_filters_off -c filter.$_ff_name.clean= -c filter.$_ff_name.smudge="
		_filters_off="$_filters_off -c filter.$_ff_name.process= -c filter.$_ff_name.required=false"
	done
}

# ---- stopping a job's processes; removing a job: its processes, its lease, its refs and its directory ----------

stop_job() { # WORKSPACE JOB TREE MODE: end JOB's processes: SIGTERM, then after up to 3 s SIGKILL. They are the
	# process groups its tmux panes and tasks lead (while a process in one carries JOB's OFFLOAD_JOB: a recorded pid
	# may have been reused) and every process that carries OFFLOAD_JOB. MODE all (clean) ends the job's tmux server
	# first. MODE left (the job gives TREE back) spares the runner that gives it back and its tmux server, which
	# linger for `offload attach` (they are this shell's ancestors). MODE lease (TREE goes to another job) also stops
	# whoever works in TREE (its cwd in it), and spares the lingering runner that runner.pid names, with its process
	# group, while its parent is the job's tmux server. This shell, its ancestors and its process group never go.
	# JOB may be empty or no id: TREE alone. Fails when a process outlived SIGKILL: their pids are in _survivors.
	# _stopped is 1 when it found the tmux server or a process to stop.
	_sj_ws=$1 _sj_job=$2 _sj_tree=$3 _sj_mode=$4
	_survivors='' _stopped=0 _sj_groups='' _sj_spare=' ' _sj_spare_group=-
	self_and_up
	if is_id "$_sj_job"; then
		job_paths "$_sj_ws" "$_sj_job"
		_sj_socket=$_p_socket
		job_begin "$_p_dir"
		if [ "$_sj_mode" = lease ]; then
			# A job that runs now under the same id (one cleaned, then run again) is another job: TREE alone.
			job_state
			case $_state in running | pending) _sj_job= ;; esac
		fi
	fi
	if is_id "$_sj_job"; then
		# Each tmux pane (the runner, every task) leads a process group holding what its command started, background
		# servers and nohup'd daemons included. A pane's process may have ended while its group goes on: every
		# recorded pid counts.
		_sj_groups=$(tmux -f /dev/null -L "$_sj_socket" list-panes -a -F '#{pane_pid}' < /dev/null 2> /dev/null)
		for _sj_f in "$_p_dir/runner.pid" "$_p_dir"/tasks/*/pid; do
			get "$_sj_f"
			[ "$_stale" = 0 ] && is_number "$_got" && _sj_groups="$_sj_groups $_got"
		done
		if [ "$_sj_mode" = all ]; then
			if tmux -f /dev/null -L "$_sj_socket" kill-server < /dev/null > /dev/null 2>&1; then _stopped=1; fi
			_sj_f="${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$_sj_socket"
			[ -S "$_sj_f" ] && rm -f "$_sj_f"
		elif [ "$_sj_mode" = lease ] && [ "$_runner" = 1 ]; then
			get "$_p_dir/runner.pid"
			_sj_f=$(tmux -f /dev/null -L "$_sj_socket" display-message -p -t "=$_sj_job:" '#{pid}' \
				< /dev/null 2> /dev/null)
			if is_number "$_sj_f" && proc_ids "$_got" && [ "$_ps_ppid" = "$_sj_f" ] && of_job "$_got" "$_sj_job"; then
				_sj_spare=" $_got $_sj_f "
				_sj_spare_group=$_got
			fi
		fi
	else
		_sj_job=
	fi
	# Only a worktree where it should be is searched: a TREE that leads elsewhere would make anyone anywhere a target.
	[ "$_sj_mode" = lease ] && tree_real "$_sj_tree" || _sj_tree=
	_sj_sig=TERM _sj_i=0
	# Looks again every 0.1 s (what a process forked meanwhile is found too): TERM once, up to 3 s for it to work,
	# then KILL every round for 1 s. Then it ends, whatever is left.
	while :; do
		job_targets
		[ -n "$_sj_pgs$_sj_pids" ] || return 0
		_stopped=1
		[ "$_sj_i" -ge 40 ] && break
		[ "$_sj_i" -ge 30 ] && _sj_sig=KILL
		if [ "$_sj_i" = 0 ] || [ "$_sj_sig" = KILL ]; then
			for _sj_g in $_sj_pgs; do kill "-$_sj_sig" "-$_sj_g" 2> /dev/null; done
			for _sj_p in $_sj_pids; do kill "-$_sj_sig" "$_sj_p" 2> /dev/null; done
		fi
		sleep 0.1 2> /dev/null || sleep 1
		_sj_i=$((_sj_i + 1))
	done
	_survivors=$_sj_pids
	for _sj_g in $_sj_pgs; do
		group_alive "$_sj_g" "$_sj_job" && _survivors="$_survivors $_member"
	done
	return 1
}

job_targets() { # (for stop_job) what is still to stop: process groups in _sj_pgs, single processes in _sj_pids
	_sj_pgs='' _sj_pids=''
	for _sj_g in $_sj_groups; do
		is_number "$_sj_g" || continue
		case $_sj_spare in *" $_sj_g "*) continue ;; esac
		[ "$_sj_g" = "$_self_group" ] || [ "$_sj_g" = "$_sj_spare_group" ] && continue
		case " $_sj_pgs " in *" $_sj_g "*) continue ;; esac
		group_alive "$_sj_g" "$_sj_job" && _sj_pgs="$_sj_pgs $_sj_g"
	done
	_carrying='' _in_dir=''
	[ -n "$_sj_job" ] && carrying "$_sj_job"
	[ -n "$_sj_tree" ] && in_dir "$_sj_tree"
	for _sj_p in $_carrying $_in_dir; do
		case "$_self$_sj_spare$_sj_pids " in *" $_sj_p "*) continue ;; esac
		proc_ids "$_sj_p" || continue
		case $_ps_state in Z* | X* | x*) continue ;; esac
		[ "$_ps_pgid" = "$_self_group" ] || [ "$_ps_pgid" = "$_sj_spare_group" ] && continue
		_sj_pids="$_sj_pids $_sj_p"
	done
}

survivor() { # JOB PID: report a process of JOB that outlived SIGKILL
	command_of "$2"
	printf 'survivor\t%s\t%s\t%s\n' "$1" "$2" "$_command"
}

remove_job() { # WORKSPACE JOB [REPO]: stop every process of JOB (stop_job), end its tmux server, give its worktree
	# back and remove its refs and directory. REPO is the bare repository to use when the job's meta names none.
	# Prints `cleaned<TAB>JOB` or `missing<TAB>JOB`, and a `survivor` line per process left.
	job_paths "$1" "$2"
	_rj_found=0
	meta_value "$_p_dir" worktree
	_rj_tree=$_got
	[ -n "$_rj_tree" ] || { lease_of "$1" "$2" && _rj_tree=$_p_tree; }
	stop_job "$1" "$2" "$_rj_tree" all
	_rj_found=$_stopped
	for _rj_p in $_survivors; do
		survivor "$2" "$_rj_p"
	done
	job_paths "$1" "$2"
	if [ -n "$_rj_tree" ] && [ -d "$_rj_tree.lease" ]; then
		get "$_rj_tree.lease/job"
		[ "$_got" = "$2" ] && _rj_found=1
		release_tree "$_rj_tree" "$2"
	fi
	job_paths "$1" "$2"
	meta_value "$_p_dir" repo
	_rj_repo=${_got:-${3:-}}
	[ -z "$_rj_repo" ] && [ -n "$_rj_tree" ] && repo_of_tree "$_rj_tree" && _rj_repo=$_p_repo
	[ -z "$_rj_repo" ] && repo_with_ref "$1" "$_p_ref" && _rj_repo=$_p_repo
	if [ -n "$_rj_repo" ] && command -v git > /dev/null 2>&1 && git -C "$_rj_repo" rev-parse --git-dir > /dev/null 2>&1
	then
		# The pattern matches the job's ref and refs below it, never the ref of a job whose id extends this one.
		_rj_refs=$(git -C "$_rj_repo" for-each-ref --format='delete %(refname)' "$_p_ref" "$_p_result")
		if [ -n "$_rj_refs" ]; then
			_rj_found=1
			printf '%s\n' "$_rj_refs" | git -C "$_rj_repo" update-ref --stdin
		fi
	fi
	if [ -e "$_p_dir" ]; then
		_rj_found=1
		rm -rf "$_p_dir"
	fi
	if [ "$_rj_found" = 1 ]; then
		printf 'cleaned\t%s\n' "$2"
	else
		printf 'missing\t%s\n' "$2"
	fi
}
