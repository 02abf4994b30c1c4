# clean.sh WORKSPACE REPO JOB...: remove jobs: their processes, the tmux server, their lease on a warm worktree
# (the worktree stays in the pool), the job's refs and its directory. REPO is the bare repository to use for a job
# whose meta names none (a launch that never happened), or empty. Prints `cleaned<TAB>JOB` or `missing<TAB>JOB` for
# each job, and `survivor<TAB>JOB<TAB>PID<TAB>COMMAND` for a process of it that outlived SIGKILL; exits 0. Never
# touches another job.
set -u
workspace=${1:?workspace}
fallback_repo=${2-}
shift 2
for j in "$@"; do
	is_id "$j" && remove_job "$workspace" "$j" "$fallback_repo"
done
exit 0
