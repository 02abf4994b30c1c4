"""The launch script: POSIX sh, fed on stdin to `sh -s` on the worker, that writes a job and starts its tmux server.

Everything dynamic in the script is either quoted with `shlex.quote`, validated (ids, variable names), or carried
as the body of a quoted heredoc. Secrets travel only as `export NAME=...` lines of the script itself, so they
reach the job's tmux server through its environment and never appear in a file or in any process's argv.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Mapping

from offload.errors import UsageError
from offload.jobs.playbook import Playbook
from offload.worker.exits import LaunchExit
from offload.worker.layout import META_VALUE_BYTES, JobPaths, validate_id
from offload.worker.scripts import worker_script

LAUNCHED = "offload-launched"  # first word of the line the script prints when the job has started

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_META_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
# What the meta keeps of values that are only shown (status, check): a command job's command (JSON-encoded; the
# task's cmd file has all of it) and the branch or --ref a job ran.
META_COMMAND_BYTES = 2048
META_BRANCH_BYTES = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RESULT_KEY = re.compile(r"[0-9a-f]{64,128}")
# tmux finds its server through TMUX*, IFS would change how the runner reads its files, offload sets the
# OFFLOAD_* ones for every task, and graph.sh keeps its own variables to names starting with '_' (a variable
# imported from the environment stays exported, so a clash would change what the task sees).
_RESERVED_ENV = re.compile(r"(TMUX.*|IFS|_.*|OFFLOAD_(JOB|JOB_DIR|WORKTREE|TASK))")


def heredoc(path_expr: str, text: str, otherwise: str = "") -> str:
    """Shell that writes TEXT (plus a final newline if it lacks one) to the file PATH_EXPR, expanding nothing.

    OTHERWISE, when given, is shell run if the write fails.
    """
    on_error = f" || {otherwise}" if otherwise else ""
    if not text:
        return f": > {path_expr}{on_error}\n"
    lines = text.splitlines()
    while True:
        delimiter = f"OFFLOAD_EOF_{secrets.token_hex(8)}"
        if delimiter not in lines:
            break
    body = text if text.endswith("\n") else text + "\n"
    return f"cat > {path_expr} <<'{delimiter}'{on_error}\n{body}{delimiter}\n"


def validate_env(env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise UsageError(f"invalid environment variable name {name!r}: use letters, digits and '_'")
        if _RESERVED_ENV.fullmatch(name):
            raise UsageError(f"environment variable {name} cannot be passed to a job: offload's runner needs it")
        if not isinstance(value, str) or "\0" in value:
            raise UsageError(f"environment variable {name} must be text without NUL characters")


def validate_meta(meta: Mapping[str, str]) -> None:
    for key, value in meta.items():
        if not isinstance(key, str) or not _META_KEY.fullmatch(key):
            raise UsageError(f"invalid job meta key {key!r}: use lowercase letters, digits and '_'")
        if not isinstance(value, str) or _CONTROL.search(value):
            raise UsageError(f"job meta {key!r} must be one line of text without control characters")
        if len(value.encode("utf-8", "surrogateescape")) > META_VALUE_BYTES:
            raise UsageError(f"job meta {key!r} is longer than {META_VALUE_BYTES} bytes")


def cut_meta(text: str, most: int) -> str:
    """TEXT, or when it is longer than MOST bytes (UTF-8) its head ending in '…', MOST bytes in all: for a
    value that is only shown."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= most:
        return text
    return data[:most - 3].decode("utf-8", "ignore") + "…"


def launch_script(paths: JobPaths, playbook: Playbook, *, env: Mapping[str, str],
                  meta: Mapping[str, str], result_key: str | None = None, leased: bool = False) -> str:
    """A script for `sh -s` that creates the job directory and starts the job's tmux server.

    With LEASED, the worktree is not known yet (PATHS.worktree is not used): the script runs as
    `sh -s WORKTREE`, given the worktree the sync leased the job by launch.sh on the worker, and writes it in the
    job's meta itself. This is what lets the launch go out with the sync, before the sync has answered.

    RESULT_KEY (hex) is the key the runner signs the job's result with: it travels in the script, as secrets do,
    and waits in a private file of the job's directory only until the runner has read it, before any task runs.
    It prints `offload-launched JOB RUNNER_PID` on success and exits with a LaunchExit code otherwise.
    """
    job = validate_id(paths.job, "job id")
    if result_key is not None and not _RESULT_KEY.fullmatch(result_key):
        raise UsageError("a result key is 32 to 64 bytes of hex")
    if not leased and not paths.worktree.startswith("/"):
        raise UsageError(f"job {job} has no worktree to run in")
    validate_env(env)
    validate_meta(meta)
    q = shlex.quote
    # Paths are written out literally (quoted) wherever they are used: the job's environment is exported into
    # this same shell, so no shell variable can be trusted to still hold a path after the exports.
    # A leased worktree is named by a variable whose name no --env export can take (names starting with '_').
    job_dir, worktree = q(paths.job_dir), '"$_offload_tree"' if leased else q(paths.worktree)
    missing = ('the worktree "$_offload_tree" does not exist' if leased
               else q(f"the worktree {paths.worktree} does not exist"))
    if leased:
        meta = {k: v for k, v in meta.items() if k != "worktree"}
    abort = f"abort {LaunchExit.FAILED}"  # a failure once the job directory exists: it goes again
    lines = [
        "set -u",
        # The job's files are private; its tmux server (so the runner, the tasks and the checkout) gets the
        # worker's own umask back. A name starting with '_' cannot be an --env name, so no export clobbers it.
        "_offload_umask=$(umask)",
        "umask 077",
        "die() { code=$1; shift; printf 'offload: %s\\n' \"$*\" >&2; exit \"$code\"; }",
        f"command -v tmux >/dev/null 2>&1 || die {LaunchExit.NO_TMUX} 'tmux is not installed on the worker'",
        f"[ -d {worktree} ] || die {LaunchExit.NO_WORKTREE} {missing}",
        f"mkdir -p {q(paths.workspace + '/jobs')} || die {LaunchExit.FAILED} 'cannot create the jobs directory'",
        f"if [ -e {job_dir} ] || [ -L {job_dir} ]; then die {LaunchExit.JOB_EXISTS} "
        f"{q(f'job {job} already exists on this worker')}; fi",
        f"tmux -f /dev/null -L {q(paths.tmux_socket)} has-session </dev/null >/dev/null 2>&1 && "
        f"die {LaunchExit.JOB_EXISTS} {q(f'a tmux server for job {job} is already running')}",
        f"mkdir -m 700 {job_dir} || die {LaunchExit.JOB_EXISTS} {q(f'cannot create the directory of job {job}')}",
        # From here on a failure must not leave a half-written job behind.
        f"abort() {{ rm -rf {job_dir}; die \"$@\"; }}",
        f"mkdir {job_dir}/tasks || {abort} 'cannot write the job directory'",
        # The boot it started in: after a reboot, the pids it records name other processes.
        f"cat /proc/sys/kernel/random/boot_id > {job_dir}/boot 2>/dev/null || rm -f {job_dir}/boot",
        heredoc(f"{job_dir}/graph.sh", worker_script("graph.sh"), f"{abort} 'cannot write graph.sh'").rstrip("\n"),
        heredoc(f"{job_dir}/meta", "".join(f"{k}={v}\n" for k, v in meta.items()),
                f"{abort} 'cannot write meta'").rstrip("\n"),
    ]
    if leased:
        lines.insert(0, "_offload_tree=${1:?}")
        lines.append(f"printf 'worktree=%s\\n' {worktree} >> {job_dir}/meta || {abort} 'cannot write meta'")
    if result_key is not None:
        # printf is a builtin: the key is in no argv. The umask is 077 here.
        lines.append(f"printf '%s\\n' {result_key} > {job_dir}/result-key || {abort} 'cannot write the job directory'")
    for task in playbook.tasks:
        task_dir = q(paths.task_dir(task.name))
        lines += [
            f"mkdir {task_dir} || {abort} 'cannot write the job directory'",
            heredoc(f"{task_dir}/cmd", task.run, f"{abort} 'cannot write a task'").rstrip("\n"),
            (f"printf '%s\\n' {' '.join(q(n) for n in task.needs)} > {task_dir}/needs" if task.needs
             else f": > {task_dir}/needs") + f" || {abort} 'cannot write a task'",
            f"printf '%s\\n' {q(task.when.value)} > {task_dir}/when || {abort} 'cannot write a task'",
        ]
    # tasks.list is written last: graph.sh takes a directory without it for one that is not a job.
    lines.append(f"printf '%s\\n' {' '.join(q(t.name) for t in playbook.tasks)} > {job_dir}/tasks.list "
                 f"|| {abort} 'cannot write tasks.list'")
    lines += [f"export {name}={q(value)}" for name, value in env.items()]
    lines.append(f"export OFFLOAD_JOB={q(job)} OFFLOAD_JOB_DIR={job_dir} OFFLOAD_WORKTREE={worktree}")
    # The session's command is constant text: the paths reach it through the server's environment.
    # SHELL=/bin/sh makes tmux's default-shell a POSIX shell, whatever the login shell is.
    runner = 'exec sh "$OFFLOAD_JOB_DIR/graph.sh" "$OFFLOAD_JOB_DIR" "$OFFLOAD_WORKTREE"'
    lines += [
        'umask "$_offload_umask"',
        # The tmux server and the runner outlive the launch (they linger for `offload attach`) and keep the
        # directory they start in: the job's own, not wherever the caller was (its repository, on the local
        # worker). Each task enters its worktree itself.
        f"cd {job_dir} || {abort} {q(f'cannot enter the directory of job {job}')}",
        f"runner=$(SHELL=/bin/sh tmux -f /dev/null -L {q(paths.tmux_socket)} new-session -d -s {q(job)} "
        f"-n offload -x 200 -y 50 -P -F '#{{pane_pid}}' {q(runner)} </dev/null) "
        f"|| abort {LaunchExit.TMUX_FAILED} {q(f'tmux could not start the session of job {job}')}",
        # The runner records itself too; a launch that cannot (a full disk) takes the job back entirely. The job's
        # files stay private: the umask is the worker's again by now.
        f"case $runner in ''|*[!0-9]*) ;; *) {{ (umask 077 && printf '%s\\n' \"$runner\" > {job_dir}/runner.pid.tmp) "
        f"&& mv -f {job_dir}/runner.pid.tmp {job_dir}/runner.pid; }} 2>/dev/null || "
        f"{{ tmux -f /dev/null -L {q(paths.tmux_socket)} kill-server </dev/null >/dev/null 2>&1; "
        f"{abort} {q(f'cannot write the state of job {job}')}\"$(df -Pk {job_dir} 2>/dev/null | "
        "awk 'NR == 2 && $4 < 64 {print \": no space left on the worker (\" $4 \" KB free)\"}')\"; } ;; esac",
        f"printf '%s %s %s\\n' {q(LAUNCHED)} {q(job)} \"$runner\"",
    ]
    return "\n".join(lines) + "\n"
