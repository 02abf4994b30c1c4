#!/bin/sh
# dispatch.sh: the worker side of a held connection. It runs the steps it reads on stdin, one at a time, and
# answers each on stdout, so that a step costs one round trip: no channel to open, no exec to wait for.
#
# It says `offload-dispatch 1` once it runs (`offload-dispatch no` and exits when it cannot work here). A request
# is a line `CMDLEN INLEN`, then CMDLEN bytes of shell text (the step's argv, quoted and joined), then INLEN bytes
# of the step's stdin. The answer is a line `a` as soon as the request is read whole (from then on the step has
# run, or is running), then a line `x CODE OUTLEN ERRLEN` and that many bytes of the step's stdout, then of its
# stderr. Input that is not a request ends the dispatcher; so does the end of its stdin.
#
# Reading exactly LEN bytes off a pipe needs a `head -c` that reads no further than it is asked: GNU coreutils'
# does; busybox's reads ahead through stdio. Without it the client keeps running each step as an exec of its own.
set -u
case $(head --version 2> /dev/null) in
*coreutils*) ;;
*)
	echo 'offload-dispatch no'
	exit 0
	;;
esac
# The step's output waits in a private directory until the step has ended; the step's input never touches a file.
out_dir=$(mktemp -d 2> /dev/null) || {
	echo 'offload-dispatch no'
	exit 0
}
trap 'rm -rf "$out_dir"' EXIT
trap 'exit 1' HUP INT TERM
echo 'offload-dispatch 1'
while IFS=' ' read -r cmd_len in_len; do
	case "$cmd_len:$in_len" in
	:* | *: | *[!0-9:]*) exit 2 ;;
	esac
	# The trailing dot keeps the text's own trailing newlines.
	cmd=$(head -c "$cmd_len" && echo .) || exit 2
	cmd=${cmd%.}
	echo a
	if [ "$in_len" -gt 0 ]; then
		# Input the step leaves unread is read away, so that the next request starts where it should.
		# The step runs in the pipeline's subshell: its status comes back through a file.
		head -c "$in_len" | {
			sh -c "$cmd" > "$out_dir/o" 2> "$out_dir/e"
			echo "$?" > "$out_dir/c"
			cat > /dev/null
		}
		read -r code < "$out_dir/c" || exit 1
	else
		sh -c "$cmd" < /dev/null > "$out_dir/o" 2> "$out_dir/e"
		code=$?
	fi
	out_len=$(wc -c < "$out_dir/o") && err_len=$(wc -c < "$out_dir/e") || exit 1
	echo "x $code $((out_len)) $((err_len))" && cat "$out_dir/o" "$out_dir/e" || exit 1
done
