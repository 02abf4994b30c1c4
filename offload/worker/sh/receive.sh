# receive.sh WORKSPACE REPO_ID JOB COMMIT MODE, with a pack on stdin: put a snapshot in the repository's bare repo
# on the worker, keep it under the job's ref, and lease the job a warm worktree of that repository. Prints
# `tree<TAB>PATH`, the worktree; its files move to the snapshot when the job's runner starts (graph.sh).
# MODE: none (nothing to read), unpack (a few objects) or index (a larger pack).
# Exit 3: the worker lacks objects the pack builds on (the client sends everything again); 4: the job exists
# already (its directory, ref or lease), and nothing was changed; 1: anything else.
set -u
workspace=${1:?workspace}
repo_id=${2:?repo}
job=${3:?job}
commit=${4:?commit}
mode=${5:?mode}
is_id "$job" || { echo "offload: invalid job id $job" >&2; exit 1; }
repo_path "$workspace" "$repo_id"
job_paths "$workspace" "$job"
repo=$_p_repo job_dir=$_p_dir ref=$_p_ref # the library's _p_ variables are overwritten by what it calls
# A job id in use stays with its job: nothing of it is touched, not even by the rollback below.
if [ -e "$job_dir" ] || lease_of "$workspace" "$job" ||
	{ [ -f "$repo/HEAD" ] && git -C "$repo" show-ref -q --verify "$ref"; }; then
	echo "offload: job $job already exists on this worker" >&2
	exit 4
fi
if [ ! -f "$repo/HEAD" ]; then
	mkdir -p "${repo%/*}" && git init -q --bare "$repo" 2> /dev/null
	[ -f "$repo/HEAD" ] || { echo "offload: cannot create repository $repo" >&2; exit 1; }
	git -C "$repo" config gc.auto 0
	git -C "$repo" config core.logAllRefUpdates false
fi
case $mode in
unpack) git -C "$repo" unpack-objects -q || exit 3 ;;
index) git -C "$repo" index-pack --stdin --fix-thin > /dev/null || exit 3 ;;
esac
git -C "$repo" cat-file -e "$commit^{commit}" 2> /dev/null || exit 3
git -C "$repo" update-ref "$ref" "$commit" || exit 1
if ! lease_tree "$workspace" "$repo_id" "$job" "$commit"; then
	git -C "$repo" update-ref -d "$ref"
	echo "offload: cannot lease a worktree for job $job$(space_left "$workspace")" >&2
	exit 1
fi
printf 'tree\t%s\n' "$_p_tree"
