# result.sh WORKSPACE JOB [HAVE...]: the result of JOB for `offload pull`: a line `result<TAB>RESULT<TAB>SNAPSHOT`,
# then a thin pack of what RESULT needs beyond those HAVE commits the worker knows (the client has them).
# A job that ended without recording its result (its runner died) gets it recorded now, if its worktree still
# holds what it left. Exit 5: no such job; 6: the job has not ended yet; 7: it has no result; 1: anything else.
set -u
workspace=${1:?workspace}
job=${2:?job}
shift 2
is_id "$job" || exit 5
job_paths "$workspace" "$job"
job_dir=$_p_dir snapshot_ref=$_p_ref result_ref=$_p_result
meta_value "$job_dir" repo
repo=$_got
[ -n "$repo" ] || { repo_with_ref "$workspace" "$result_ref" && repo=$_p_repo; }
[ -n "$repo" ] && [ -f "$repo/HEAD" ] || exit 5
if ! git -C "$repo" show-ref -q --verify "$result_ref"; then
	[ -d "$job_dir" ] || exit 5
	job_begin "$job_dir"
	job_state
	case $_state in running | pending) exit 6 ;; esac
	tree_of_job "$workspace" "$job" && record_result "$_p_tree" "$job"
	git -C "$repo" show-ref -q --verify "$result_ref" || exit 7
fi
result=$(git -C "$repo" rev-parse "$result_ref") || exit 1
snapshot=$(git -C "$repo" rev-parse -q --verify "$snapshot_ref") || snapshot=-
printf 'result\t%s\t%s\n' "$result" "$snapshot"
{
	printf '%s\n' "$result"
	for have in "$@"; do
		case $have in *[!0-9a-f]* | '') continue ;; esac
		git -C "$repo" cat-file -e "$have^{commit}" 2> /dev/null && printf '^%s\n' "$have"
	done
} | git -C "$repo" pack-objects --revs --thin --stdout --delta-base-offset -q
