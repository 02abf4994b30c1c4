# status.sh WORKSPACE [JOB...]: the state of the jobs under WORKSPACE (only the JOBs named, when any are), as
# tab-separated records that offload/jobs/state.py parses. Runs where the jobs run, since it checks their pids.
#
#   offload-status  2                             format version, always the first line
#   space FREE_KB  SIZE_KB                        the workspace's disk (- when df cannot tell)
#   job   ID  STATE  TMUX  RUNNER  FINISHED       STATE: pending | running | success | failed
#                                                 TMUX: 1 when the job's tmux server has its session, else 0
#                                                 RUNNER: 1 alive, 0 gone, - not recorded yet
#                                                 FINISHED: when the job finished (epoch seconds), or -
#   meta  ID  KEY  VALUE                          one per line of the job's meta file, of its first 16384
#                                                 bytes (META_READ_BYTES); VALUE is the rest of the line, tabs
#                                                 included
#   task  ID  NAME  STATE  EXIT                   STATE: pending | running | success | failed | skipped
#                                                 EXIT: the exit code, or -
#
# Without JOBs, what a launch that did not finish left (a worktree or a ref without its job directory) is listed
# as a job without tasks, so that `clean --all` finds it.
#
# Ids, task names, states and exit codes hold no tab or newline: ids pass is_id and the rest are fixed tokens.
set -u
workspace=${1:?workspace}
shift
sockets="${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)"
tab=$(printf '\t')

one() { # JOB
	job_paths "$workspace" "$1"
	[ -d "$_p_dir" ] || return 0
	job_begin "$_p_dir"
	job_state
	server=0
	if [ -S "$sockets/$_p_socket" ] &&
		tmux -f /dev/null -L "$_p_socket" has-session -t "=$1" < /dev/null > /dev/null 2>&1; then
		server=1
	fi
	get "$_p_dir/finished"
	finished=$_got
	is_number "$finished" || finished=-
	printf 'job\t%s\t%s\t%s\t%s\t%s\n' "$1" "$_state" "$server" "$_runner" "$finished"
	if [ -f "$_p_dir/meta" ]; then
		# Read byte by byte, a line of megabytes would take seconds: only the head of the file, where offload
		# keeps every line short. A line cut at its end has no newline, and read leaves it out.
		head -c 16384 "$_p_dir/meta" | while IFS= read -r line; do
			key=${line%%=*}
			case $key in "$line" | '' | *"$tab"*) continue ;; esac
			printf 'meta\t%s\t%s\t%s\n' "$1" "$key" "${line#*=}"
		done
	fi
	[ -f "$_p_dir/tasks.list" ] || return 0
	while IFS= read -r t <&3; do
		is_id "$t" || continue
		task_state "$t"
		printf 'task\t%s\t%s\t%s\t%s\n' "$1" "$t" "$_state" "${_exit:--}"
	done 3< "$_p_dir/tasks.list"
}

printf 'offload-status\t2\n'
disk_space "$workspace"
printf 'space\t%s\t%s\n' "$_free_kb" "$_size_kb"
if [ $# -gt 0 ]; then
	for j in "$@"; do
		is_id "$j" || continue
		job_paths "$workspace" "$j"
		if [ -d "$_p_dir" ]; then
			one "$j"
		elif leftover "$workspace" "$j"; then
			printf 'job\t%s\t%s\t0\t-\t-\n' "$j" "$_state"
		fi
	done
else
	jobs_dir "$workspace"
	for d in "$_p_jobs"/*; do
		j=${d##*/}
		[ -d "$d" ] && is_id "$j" && one "$j"
	done
	leftover_ids "$workspace" | sort -u | while IFS= read -r j; do
		if is_id "$j" && leftover "$workspace" "$j"; then
			printf 'job\t%s\t%s\t0\t-\t-\n' "$j" "$_state"
		fi
	done
fi
exit 0
