# launch.sh WORKSPACE JOB, with a launch script (offload/jobs/launch.py, built with `leased`) on stdin: run it as
# `sh -s WORKTREE`, WORKTREE being the warm worktree the sync leased JOB. It goes to the worker together with the
# sync (receive.sh), before the sync has answered, and runs after it: when the sync leased JOB nothing (it failed,
# or must send again), it exits 18 (the launch's NO_WORKTREE) without reading its input, and the launch goes again
# once the sync is done.
set -u
workspace=${1:?workspace}
job=${2:?job}
is_id "$job" || { echo "offload: invalid job id $job" >&2; exit 1; }
if ! lease_of "$workspace" "$job"; then
	echo "offload: job $job holds no worktree on this worker" >&2
	exit 18
fi
exec sh -s "$_p_tree"
