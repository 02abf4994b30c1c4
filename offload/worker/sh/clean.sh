# clean.sh WORKSPACE REPO JOB...: remove jobs: their processes, the tmux server, the worktree, the job's refs and
# its directory. REPO is the bare repository to use for a job whose meta names none (a launch that never
# happened), or empty. Prints `cleaned<TAB>JOB` or `missing<TAB>JOB` for each job, and `survivor<TAB>JOB<TAB>PID
# <TAB>COMMAND` for a process of it that outlived SIGKILL; exits 0. Never touches another job.
set -u
workspace=${1:?workspace}
fallback_repo=${2-}
shift 2
sockets="${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)"
has_git=0
command -v git > /dev/null 2>&1 && has_git=1

stop_groups() { # SIGNAL TENTHS JOB PGID...: signal each group that holds a process of JOB, then wait up to
	# TENTHS/10 s for all of them to end
	sig=$1 tenths=$2 owner=$3
	shift 3
	left=
	for g in "$@"; do
		group_alive "$g" "$owner" || continue
		kill "-$sig" "-$g" 2> /dev/null
		left="$left $g"
	done
	i=0
	while [ -n "$left" ] && [ "$i" -lt "$tenths" ]; do
		sleep 0.1 2> /dev/null || sleep 1
		i=$((i + 1))
		still=
		for g in $left; do
			group_alive "$g" "$owner" && still="$still $g"
		done
		left=$still
	done
}

stop_pids() { # SIGNAL TENTHS PID...: the same for single processes
	sig=$1 tenths=$2
	shift 2
	for p in "$@"; do
		kill "-$sig" "$p" 2> /dev/null
	done
	i=0
	while [ "$i" -lt "$tenths" ]; do
		still=
		for p in "$@"; do
			alive "$p" && still=1
		done
		[ -n "$still" ] || return 0
		sleep 0.1 2> /dev/null || sleep 1
		i=$((i + 1))
	done
}

survivor() { # JOB PID
	command_of "$2"
	printf 'survivor\t%s\t%s\t%s\n' "$1" "$2" "$_command"
}

clean() { # JOB
	job_paths "$workspace" "$1"
	found=0
	job_begin "$_p_dir"
	# Each tmux pane (the runner, every task) leads a process group holding what its command started,
	# background servers and nohup'd daemons included.
	groups=$(tmux -f /dev/null -L "$_p_socket" list-panes -a -F '#{pane_pid}' < /dev/null 2> /dev/null)
	# A pane's process may have ended while what it started goes on in its group: every recorded pid counts.
	for f in "$_p_dir/runner.pid" "$_p_dir"/tasks/*/pid; do
		get "$f"
		[ "$_stale" = 0 ] && is_number "$_got" && groups="$groups $_got"
	done
	if tmux -f /dev/null -L "$_p_socket" kill-server < /dev/null > /dev/null 2>&1; then found=1; fi
	[ -S "$sockets/$_p_socket" ] && rm -f "$sockets/$_p_socket"
	# shellcheck disable=SC2086 # lists of pids, split on purpose
	stop_groups TERM 30 "$1" $groups
	# shellcheck disable=SC2086
	stop_groups KILL 10 "$1" $groups
	# What left its group (setsid) but still works in the job's worktree.
	in_dir "$_p_tree" "$1"
	if [ -n "$_in_dir" ]; then
		found=1
		# shellcheck disable=SC2086
		stop_pids TERM 30 $_in_dir
		# shellcheck disable=SC2086
		stop_pids KILL 10 $_in_dir
		for p in $_in_dir; do
			alive "$p" && survivor "$1" "$p"
		done
	fi
	for g in $groups; do
		group_alive "$g" "$1" && survivor "$1" "$_member"
	done
	repo=$fallback_repo
	if [ -f "$_p_dir/meta" ]; then
		while IFS= read -r line <&4; do
			case $line in repo=?*) repo=${line#repo=} ;; esac
		done 4< "$_p_dir/meta"
	fi
	# A launch that did not finish left no meta: its worktree, or the repository holding its ref, says which.
	if [ -z "$repo" ]; then
		repo_of_tree "$_p_tree"
		repo=$_p_repo
	fi
	if [ -z "$repo" ] && repo_with_ref "$workspace" "$_p_ref"; then
		repo=$_p_repo
	fi
	if [ "$has_git" = 1 ] && [ -n "$repo" ] && git -C "$repo" rev-parse --git-dir > /dev/null 2>&1; then
		if [ -e "$_p_tree" ]; then
			git -C "$repo" worktree remove --force "$_p_tree" > /dev/null 2>&1
		fi
		# The pattern matches the job's ref and refs below it, never the ref of a job whose id extends this one.
		refs=$(git -C "$repo" for-each-ref --format='delete %(refname)' "$_p_ref")
		if [ -n "$refs" ]; then
			found=1
			printf '%s\n' "$refs" | git -C "$repo" update-ref --stdin
		fi
	fi
	if [ -e "$_p_tree" ] || [ -L "$_p_tree" ]; then
		found=1
		rm -rf "$_p_tree"
	fi
	if [ "$has_git" = 1 ] && [ -n "$repo" ]; then
		git -C "$repo" worktree prune > /dev/null 2>&1
	fi
	if [ -e "$_p_dir" ]; then
		found=1
		rm -rf "$_p_dir"
	fi
	if [ "$found" = 1 ]; then
		printf 'cleaned\t%s\n' "$1"
	else
		printf 'missing\t%s\n' "$1"
	fi
}

for j in "$@"; do
	is_id "$j" && clean "$j"
done
exit 0
