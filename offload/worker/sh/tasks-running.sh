# tasks-running.sh WORKSPACE: exit 0 when a job under WORKSPACE is running (a task runs, or its runner lives and
# has tasks to start), 1 when none is. The idle stop asks this where the jobs run: inside the worker container
# when there is one, since it checks their pids.
set -u
workspace=${1:?workspace}
jobs_dir "$workspace"
for d in "$_p_jobs"/*; do
	[ -f "$d/tasks.list" ] || continue
	job_begin "$d"
	job_state
	[ "$_state" = running ] && exit 0
done
exit 1
