# result.sh WORKSPACE JOB [HAVE...]: the result of JOB for `offload pull`: a line
# `result<TAB>RESULT<TAB>SNAPSHOT<TAB>MAC`, then a thin pack of what RESULT needs beyond those HAVE commits the
# worker knows (the client has them). RESULT and MAC are the job's record (lib.sh: record_result; MAC is `-` when
# the record is not the runner's own); SNAPSHOT is what the worker's ref says (`-`: none). A job that ended without
# recording its result (its runner died) gets it recorded now, if its worktree still holds what it left.
# Exit 5: no such job; 6: the job has not ended yet; 7: it has no result; 1: anything else.
set -u
workspace=${1:?workspace}
job=${2:?job}
shift 2
is_id "$job" || exit 5
job_paths "$workspace" "$job"
job_dir=$_p_dir snapshot_ref=$_p_ref
[ -d "$job_dir" ] || exit 5
meta_value "$job_dir" repo
repo=$_got
[ -n "$repo" ] && [ -f "$repo/HEAD" ] || exit 5
if [ ! -f "$job_dir/result" ]; then
	job_begin "$job_dir"
	job_state
	case $_state in running | pending) exit 6 ;; esac
	# A runner that lives records the result itself, with the job's key, as soon as it sees the end.
	[ "$_runner" = 1 ] && [ ! -f "$job_dir/finished" ] && exit 6
	tree_of_job "$workspace" "$job" && record_result "$_p_tree" "$job"
	[ -f "$job_dir/result" ] || exit 7
fi
get "$job_dir/result"
result=${_got%% *} mac=${_got#* }
case $result in '' | *[!0-9a-f]*) exit 7 ;; esac
case $mac in - | [0-9a-f]*) ;; *) mac=- ;; esac
case $mac in *[!0-9a-f-]*) mac=- ;; esac
git -C "$repo" cat-file -e "$result^{commit}" 2> /dev/null || exit 7
snapshot=$(git -C "$repo" rev-parse -q --verify "$snapshot_ref") || snapshot=-
printf 'result\t%s\t%s\t%s\n' "$result" "$snapshot" "$mac"
{
	printf '%s\n' "$result"
	for have in "$@"; do
		case $have in *[!0-9a-f]* | '') continue ;; esac
		git -C "$repo" cat-file -e "$have^{commit}" 2> /dev/null && printf '^%s\n' "$have"
	done
} | git -C "$repo" pack-objects --revs --thin --stdout --delta-base-offset -q
