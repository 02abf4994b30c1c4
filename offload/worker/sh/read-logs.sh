# read-logs.sh WORKSPACE JOB TASK OFFSET [TASK OFFSET ...]: the new bytes of several logs in one round trip.
# For each task, a header line `TASK COUNT` and then exactly COUNT bytes of its log from OFFSET on (a log only
# grows, so head -c gets them all).
set -u
workspace=${1:?workspace}
job=${2:?job}
shift 2
is_id "$job" || { printf 'offload: invalid job %s\n' "$job" >&2; exit 2; }
job_paths "$workspace" "$job"
while [ "$#" -ge 2 ]; do
	if ! is_id "$1" || ! is_number "$2"; then
		printf 'offload: invalid task or offset %s %s\n' "$1" "$2" >&2
		exit 2
	fi
	log=$_p_dir/tasks/$1/log
	size=$(wc -c < "$log" 2> /dev/null || echo 0)
	size=${size##* }
	count=$((size - $2))
	[ "$count" -gt 0 ] || count=0
	printf '%s %s\n' "$1" "$count"
	[ "$count" -eq 0 ] || tail -c +"$(($2 + 1))" "$log" | head -c "$count"
	shift 2
done
