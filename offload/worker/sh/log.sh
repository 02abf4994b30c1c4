# log.sh WORKSPACE JOB TASK OFFSET [follow|once [LIMIT]]: print the task's log from byte OFFSET on, each byte
# exactly once. With `follow`, keep printing what is appended until the task has finished (or nobody is left who
# could finish it) and the log is drained; with `once LIMIT`, print at most LIMIT bytes.
# Exit 2: a bad offset, limit, job id or task name; 10: no such task; 1: anything else.
set -u
workspace=${1:?workspace}
job=${2:?job}
task=${3:?task}
pos=${4:-0}
follow=${5:-}
limit=${6:-}
[ "$follow" = follow ] || follow=
poll=0.05
rounds=0
is_number "$pos" || { printf 'offload: invalid log offset %s\n' "$pos" >&2; exit 2; }
if [ -n "$limit" ] && { ! is_number "$limit" || [ -n "$follow" ]; }; then
	printf 'offload: invalid log limit %s\n' "$limit" >&2
	exit 2
fi
if ! is_id "$job" || ! is_id "$task"; then
	printf 'offload: invalid job or task %s/%s\n' "$job" "$task" >&2
	exit 2
fi
job_paths "$workspace" "$job"
log=$_p_dir/tasks/$task/log
[ -d "$_p_dir/tasks/$task" ] || { printf 'offload: no task %s in job %s\n' "$task" "$job" >&2; exit 10; }

finished() {
	job_begin "$_p_dir"
	task_state "$task"
	case $_state in
	success | failed | skipped) return 0 ;;
	running) return 1 ;;
	esac
	# Pending: finished when nobody will start it.
	[ -f "$_p_dir/state" ] || [ "$_runner" = 0 ]
}

while :; do
	last=1
	[ -n "$follow" ] && ! finished && last=0
	if [ -f "$log" ]; then
		size=$(wc -c < "$log")
		size=${size##* }
		if is_number "$size" && [ -n "$limit" ] && [ "$size" -gt "$((pos + limit))" ]; then
			size=$((pos + limit))
		fi
		if is_number "$size" && [ "$size" -gt "$pos" ]; then
			# Exactly the bytes up to SIZE: the log may grow while this runs, and the client counts bytes.
			tail -c +"$((pos + 1))" "$log" | head -c "$((size - pos))" || exit 1
			pos=$size
		fi
	fi
	[ "$last" = 1 ] && exit 0
	# Short naps at first, so a quick task's end is seen at once; then coarser ones, which cost less.
	rounds=$((rounds + 1))
	[ "$rounds" -gt 40 ] && poll=0.2
	sleep "$poll" 2> /dev/null || sleep 1
done
