# clean.sh WORKSPACE REPO JOB...: remove jobs: the tmux server, the worktree, the job's refs and its directory.
# REPO is the bare repository to use for a job whose meta names none (a launch that never happened), or empty.
# Prints `cleaned<TAB>JOB` or `missing<TAB>JOB` for each job and exits 0. Never touches another job.
set -u
workspace=${1:?workspace}
fallback_repo=${2-}
shift 2
sockets="${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)"
has_git=0
command -v git > /dev/null 2>&1 && has_git=1

clean() { # JOB
	job_paths "$workspace" "$1"
	found=0
	if tmux -f /dev/null -L "$_p_socket" kill-server < /dev/null > /dev/null 2>&1; then found=1; fi
	[ -S "$sockets/$_p_socket" ] && rm -f "$sockets/$_p_socket"
	# The end of the server hangs up every window; let those processes go before their worktree does.
	job_begin "$_p_dir"
	for f in "$_p_dir/runner.pid" "$_p_dir"/tasks/*/pid; do
		i=0
		while [ "$i" -lt 20 ]; do
			pidfile "$f"
			[ "$_alive" = 1 ] || break
			sleep 0.1 2> /dev/null || sleep 1
			i=$((i + 1))
		done
	done
	repo=$fallback_repo
	if [ -f "$_p_dir/meta" ]; then
		while IFS= read -r line <&4; do
			case $line in repo=?*) repo=${line#repo=} ;; esac
		done 4< "$_p_dir/meta"
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
