# get.sh WORKSPACE JOB [--missing-ok] PATH...: a tar stream of PATHs (files or directories, relative to the job's
# worktree, ignored files included; a PATH may be a glob) as the job left them. With --missing-ok, a PATH that
# matches nothing is left out. Nothing is sent unless every PATH is good.
# Exit 5: no such job; 8: another job has had the worktree since; 9: a PATH that leaves the worktree (absolute,
# .., or through a symlink) or matches nothing (the message names it); 1: anything else.
set -u
workspace=${1:?workspace}
job=${2:?job}
shift 2
missing_ok=
if [ "${1:-}" = --missing-ok ]; then
	missing_ok=1
	shift
fi
is_id "$job" || exit 5
if ! tree_of_job "$workspace" "$job"; then
	job_paths "$workspace" "$job"
	[ -d "$_p_dir" ] && exit 8
	exit 5
fi
root=$(cd -P "$_p_tree" 2> /dev/null && pwd) || exit 1
cd "$root" || exit 1
refuse() {
	printf 'offload: %s\n' "$1" >&2
	exit 9
}
inside() { # PATH: its real location is the worktree or below it
	_real=$(realpath -- "$1" 2> /dev/null || readlink -f -- "$1" 2> /dev/null) || return 1
	case $_real in "$root" | "$root"/*) return 0 ;; esac
	return 1
}
for pattern in "$@"; do
	case /$pattern/ in
	//* | */../*) refuse "$pattern leaves the job's worktree" ;;
	esac
	matched=
	# Globs expand here, inside the worktree (IFS empty: no splitting, so spaces stay); a plain path is its own
	# match.
	IFS=
	# shellcheck disable=SC2086 # the glob expands on purpose
	for path in $pattern; do
		[ -e "$path" ] || [ -L "$path" ] || continue
		inside "$path" || refuse "$path leaves the job's worktree (through a symlink)"
		case $path in -*) path=./$path ;; esac
		matched=1
		set -- "$@" "$path"
	done
	unset IFS
	[ -n "$matched" ] || [ -n "$missing_ok" ] || refuse "$pattern: no such file or directory in the job's worktree"
	shift
done
[ $# -gt 0 ] || exit 0
exec tar -cf - "$@"
