# haves.sh WORKSPACE REPO_ID: the commits the worker's bare repo of that repository already has, one per line:
# the snapshots it holds and their parents (commits of the local repository, which the client has too); then
# `shallow COMMIT` for each commit whose parents it lacks (git's shallow file: a history cut at a depth).
set -u
repo_path "${1:?workspace}" "${2:?repo}"
[ -f "$_p_repo/HEAD" ] || exit 0
git -C "$_p_repo" rev-list --no-walk --parents --glob='refs/offload/*' 2> /dev/null | tr ' ' '\n' | sort -u
[ -f "$_p_repo/shallow" ] && sed 's/^/shallow /' "$_p_repo/shallow"
exit 0
