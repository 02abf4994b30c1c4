# receive.sh WORKSPACE REPO_ID JOB COMMIT MODE [BOUNDARY...], with a pack on stdin: put a snapshot in the
# repository's bare repo on the worker, keep it under the job's ref, and lease the job a warm worktree of that
# repository. Prints `tree<TAB>PATH`, the worktree (its files move to the snapshot when the job's runner starts,
# graph.sh), then `shallow<TAB>COMMIT` for each shallow commit of the repository.
# MODE: none (nothing to read), unpack (a few objects) or index (a larger pack). BOUNDARY: commits the pack may
# hold without their parents (a history cut at a depth). The repository is shallow the way git makes it: its
# `shallow` file names the commits whose parents it lacks, and a commit leaves it once its parents are all there.
# Exit 3: the worker lacks objects the pack builds on (the client sends everything again); 4: the job exists
# already (its directory, ref or lease), and nothing was changed; 1: anything else.
set -u
workspace=${1:?workspace}
repo_id=${2:?repo}
job=${3:?job}
commit=${4:?commit}
mode=${5:?mode}
shift 5

commit_parents() { # REPO, commits on stdin: `COMMIT PARENT...` for each, as the commit says (no shallow graft)
	git -C "$1" cat-file --batch-check='%(objectname) %(objecttype)' 2> /dev/null |
		awk '$2 == "commit" { print $1 }' | git -C "$1" cat-file --batch 2> /dev/null |
		LC_ALL=C awk 'left <= 0 { oid = $1; left = $3 + 1; head = 1; line = oid; next }
			{ left -= length($0) + 1
			  if (head && $0 == "") head = 0
			  else if (head && $1 == "parent") line = line " " $2
			  if (left <= 0) { print line; head = 0 } }'
}

update_shallow() { # REPO COMMIT [BOUNDARY...] (holding the repository's lock): the shallow file is the shallow
	# commits it had and BOUNDARY, less those whose parents are all present now; then everything COMMIT and the
	# commits that left the file need must be there (exit 3 otherwise). Written whole and renamed into place, so
	# git never reads half a file.
	_us_repo=$1 _us_commit=$2
	shift 2
	_us_file=$_us_repo/shallow _us_tmp=$_us_repo/shallow.new.$$
	{
		[ -f "$_us_file" ] && cat "$_us_file"
		for _us_c in "$@"; do printf '%s\n' "$_us_c"; done
	} | grep -E '^[0-9a-f]{40}([0-9a-f]{24})?$' | sort -u | commit_parents "$_us_repo" > "$_us_tmp.parents" || return 1
	cut -d' ' -f2- < "$_us_tmp.parents" | tr ' ' '\n' | grep . | sort -u |
		git -C "$_us_repo" cat-file --batch-check='%(objectname)' 2> /dev/null | awk 'NF == 2 { print $1 }' \
		> "$_us_tmp.missing" || return 1
	awk -v kept="$_us_tmp" -v joined="$_us_tmp.joined" 'NR == FNR { gone[$1] = 1; next }
		{ cut = 0; for (i = 2; i <= NF; i++) if ($i in gone) cut = 1; print $1 > (cut ? kept : joined) }
		END { printf "" > kept; printf "" > joined }' "$_us_tmp.missing" "$_us_tmp.parents" || return 1
	if [ -s "$_us_tmp" ]; then
		mv -f "$_us_tmp" "$_us_file" || return 1
	else
		rm -f "$_us_file" "$_us_tmp"
	fi
	# As receive-pack does: whatever is new must be whole, down to the shallow commits. What the refs hold is
	# whole already; not `--all`, which also reads the HEAD of every worktree, and a worktree another receive is
	# adding has none yet.
	{
		printf '%s\n' "$_us_commit"
		cat "$_us_tmp.joined"
		git -C "$_us_repo" for-each-ref --format='^%(objectname)' refs/
	} | git -C "$_us_repo" rev-list --objects --stdin > /dev/null 2>&1 || _us_rc=3
	rm -f "$_us_tmp.parents" "$_us_tmp.missing" "$_us_tmp.joined"
	return "${_us_rc:-0}"
}
init_repo() { # REPO (holding its lock): the bare repository the snapshots go into, unless it is there already
	[ -f "$1/HEAD" ] && return 0
	git init -q --bare "$1" 2> /dev/null &&
		git -C "$1" config gc.auto 0 &&
		git -C "$1" config core.logAllRefUpdates false
}

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
	# Under the repository's lock: two first runs at once would each `git init` it, and one would find it half made.
	mkdir -p "$repo" && locked "$repo" init_repo "$repo"
	[ -f "$repo/HEAD" ] || { echo "offload: cannot create repository $repo$(space_left "$workspace")" >&2; exit 1; }
fi
case $mode in
unpack) git -C "$repo" unpack-objects -q || exit 3 ;;
index)
	# Into a directory of its own, as git's receive-pack does, and moved in whole (the index last, which makes a
	# pack count): a pack cut short leaves nothing in the repository, not even its temporary file. The bases of
	# the thin pack are read through the repository's own objects, named in the directory's alternates file (a
	# line, where the environment's list would split a path at a colon).
	incoming=$(mktemp -d "$repo/objects/incoming-XXXXXX") || exit 1
	trap 'rm -rf "$incoming"' EXIT
	trap 'exit 1' HUP INT TERM
	mkdir "$incoming/pack" "$incoming/info" && printf '%s\n' "$repo/objects" > "$incoming/info/alternates" || exit 1
	GIT_OBJECT_DIRECTORY=$incoming git -C "$repo" index-pack --stdin --fix-thin > /dev/null || exit 3
	for kind in pack rev idx; do
		for f in "$incoming"/pack/pack-*."$kind"; do
			[ -f "$f" ] || continue
			mv -f "$f" "$repo/objects/pack/" && continue
			echo "offload: cannot keep the pack$(space_left "$workspace")" >&2
			exit 1
		done
	done
	;;
esac
git -C "$repo" cat-file -e "$commit^{commit}" 2> /dev/null || exit 3
locked "$repo" update_shallow "$repo" "$commit" "$@"
case $? in
0) ;;
3) echo "offload: the repository lacks objects the snapshot needs" >&2 && exit 3 ;;
*) echo "offload: cannot update the shallow commits of $repo$(space_left "$workspace")" >&2 && exit 1 ;;
esac
git -C "$repo" update-ref "$ref" "$commit" || exit 1
if ! lease_tree "$workspace" "$repo_id" "$job" "$commit"; then
	git -C "$repo" update-ref -d "$ref"
	echo "offload: cannot lease a worktree for job $job$(space_left "$workspace")" >&2
	exit 1
fi
printf 'tree\t%s\n' "$_p_tree"
[ -f "$repo/shallow" ] && sed 's/^/shallow	/' "$repo/shallow"
exit 0
