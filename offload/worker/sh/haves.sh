# haves.sh WORKSPACE REPO_ID: the commits the worker's bare repo of that repository already has, one per line.
set -u
repo_path "${1:?workspace}" "${2:?repo}"
[ -f "$_p_repo/HEAD" ] || exit 0
git -C "$_p_repo" for-each-ref --format='%(objectname)' refs/offload/
