# attach-probe.sh WORKSPACE JOB [TASK]: exit 11 when the job has no live tmux session; else print the tmux
# window id of TASK, waiting a few seconds for a task that is just starting.
set -u
workspace=${1:?workspace}
job=${2:?job}
task=${3:-}
job_paths "$workspace" "$job"
tmux -f /dev/null -L "$_p_socket" has-session -t "=$job" < /dev/null 2> /dev/null || exit 11
[ -n "$task" ] || exit 0
i=0
while [ ! -s "$_p_dir/tasks/$task/window" ] && [ "$i" -lt 50 ]; do
	sleep 0.1 2> /dev/null || sleep 1
	i=$((i + 1))
done
get "$_p_dir/tasks/$task/window"
printf '%s\n' "$_got"
