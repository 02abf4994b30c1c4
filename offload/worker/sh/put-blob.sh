# put-blob.sh WORKSPACE REPO_ID SIZE, with SIZE bytes of a file on stdin: store them as a blob in the repository's
# bare repo on the worker, and print its object id. A large file the client sends ahead of a sync, while it still
# snapshots the working tree (offload/runtime/sync.py, send_ahead): the sync's pack then goes without it.
# Stored as it comes (not deflated), as the client stores files this large. Nothing is stored from input cut short.
# Exit 21: there is no such repository yet (the first sync makes it); 2: a bad size; 1: anything else.
set -u
workspace=${1:?workspace}
repo_id=${2:?repo}
size=${3:?size}
is_number "$size" || { echo "offload: invalid size $size" >&2; exit 2; }
repo_path "$workspace" "$repo_id"
repo=$_p_repo
[ -f "$repo/HEAD" ] || { echo "offload: no repository $repo_id on this worker yet" >&2; exit 21; }
tmp=$(mktemp "$repo/objects/tmp_blob_XXXXXX") || exit 1
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
cat > "$tmp" || { echo "offload: cannot store a file of $size bytes$(space_left "$workspace")" >&2; exit 1; }
got=$(wc -c < "$tmp") || exit 1
if [ "$got" -ne "$size" ]; then
	echo "offload: got $got of $size bytes" >&2
	exit 1
fi
# From a file, not a pipe: git maps it, or streams one above core.bigFileThreshold, instead of reading it into memory.
git -C "$repo" -c core.looseCompression=0 -c pack.compression=0 hash-object -w --stdin < "$tmp" || exit 1
