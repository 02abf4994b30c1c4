"""The exit codes of the worker-side scripts: one table per script in `sh/`, and the launch script's (built in
offload/jobs/launch.py). Python compares a script's exit code with its own table's names, never with a number.

A code of 2 or more means one thing in every table: 2 is always a bad argument, 5 always "no such job", and no
two scripts give one number two meanings. 0 and 1 are each script's own (for most, success and "anything else").
A code in no table is the exit code of a program the script ran last or `exec`s (git, tar) or the shell's own
(a missing argument): a failure like 1. tests/worker/test_exits.py checks every table against its script.
"""

from __future__ import annotations

from enum import IntEnum


class ReceiveExit(IntEnum):
    """receive.sh: put a snapshot in the worker's repository and lease the job a warm worktree."""

    OK = 0
    FAILED = 1
    MISSING_OBJECTS = 3  # the pack builds on objects the worker lacks: send them all
    JOB_EXISTS = 4  # its directory, a lease or its ref; nothing was changed


class PutBlobExit(IntEnum):
    """put-blob.sh: store a large file sent ahead of a sync as a blob of the worker's repository."""

    OK = 0
    FAILED = 1  # input cut short, or a write that failed: nothing was stored
    USAGE = 2  # a bad size
    NO_REPOSITORY = 21  # the worker has no repository of it yet (its first sync makes one)


class LogExit(IntEnum):
    """log.sh: a task's log from an offset, or followed to its end."""

    OK = 0
    FAILED = 1
    USAGE = 2  # a bad offset, limit, job id or task name
    NO_TASK = 10  # the job has no such task (or there is no such job)


class ReadLogsExit(IntEnum):
    """read-logs.sh: the new bytes of several task logs."""

    OK = 0
    USAGE = 2  # a bad job id, task name or offset


class ResultExit(IntEnum):
    """result.sh: a job's result record and a pack of its objects."""

    OK = 0
    FAILED = 1
    NO_JOB = 5
    NOT_ENDED = 6  # the job runs, or its runner has yet to record the result
    NO_RESULT = 7  # it ended without one, and its worktree has been used since


class GetExit(IntEnum):
    """get.sh: a tar stream of paths from a job's worktree."""

    OK = 0
    FAILED = 1
    NO_JOB = 5
    WORKTREE_GONE = 8  # another job has had the worktree since
    PATH_REFUSED = 9  # a path leaves the worktree or matches nothing; stderr names it


class AttachProbeExit(IntEnum):
    """attach-probe.sh: whether a job's tmux session lives, and a task's window."""

    OK = 0
    NO_SESSION = 11  # the job has no live tmux session


class CleanExit(IntEnum):
    """clean.sh: remove jobs; what it found is in its output."""

    OK = 0


class StatusExit(IntEnum):
    """status.sh: the state of the jobs, as records on stdout."""

    OK = 0


class HavesExit(IntEnum):
    """haves.sh: the commits a worker's repository has."""

    OK = 0


class TasksRunningExit(IntEnum):
    """tasks-running.sh, for the idle stop (idle-stop.sh reads the same two codes)."""

    RUNNING = 0
    IDLE = 1


class GraphExit(IntEnum):
    """graph.sh: the runner of a job (window 0), or one task (a task window)."""

    OK = 0
    FAILED = 1  # a state it cannot write
    USAGE = 2  # bad arguments, not a job directory, no such task
    RUNNER_ALIVE = 12  # the job already has a live runner


class MountDataExit(IntEnum):
    """mount-data.sh (boot)."""

    OK = 0
    FAILED = 1


class StartWorkerExit(IntEnum):
    """start-worker.sh (boot)."""

    OK = 0
    FAILED = 1


class IdleStopExit(IntEnum):
    """idle-stop.sh (boot, by timer)."""

    OK = 0
    USAGE = 2  # OFFLOAD_IDLE_MINUTES is no number


class WatchImageExit(IntEnum):
    """watch-image.sh (boot)."""

    OK = 0
    FAILED = 1


class HostKeysExit(IntEnum):
    """host-keys.sh (boot)."""

    OK = 0


class LaunchExit(IntEnum):
    """The launch script (offload/jobs/launch.py), which is built in Python rather than kept in `sh/`, and launch.sh,
    which runs one in the worktree the sync leased."""

    OK = 0
    FAILED = 1  # anything else; the message is on stderr
    JOB_EXISTS = 17  # the job directory, or a tmux server for this job, already exists
    NO_WORKTREE = 18  # the worktree the sync step should have made is missing
    NO_TMUX = 19  # tmux is not installed where the job runs
    TMUX_FAILED = 20  # tmux could not start the job's session


class LeasedLaunchExit(IntEnum):
    """launch.sh: it runs a launch script in the worktree the sync leased, and passes on that script's LaunchExit."""

    OK = 0
    FAILED = 1
    NO_WORKTREE = 18  # the sync leased the job no worktree (as LaunchExit.NO_WORKTREE): nothing was launched


class DispatchExit(IntEnum):
    """dispatch.sh, the step dispatcher: it ends when its input does (0), or on a request it cannot read."""

    OK = 0
    FAILED = 1  # its answer could not be written (the connection went away)
    USAGE = 2  # input that is not a request


SCRIPT_EXITS: dict[str, type[IntEnum]] = {
    "receive.sh": ReceiveExit,
    "put-blob.sh": PutBlobExit,
    "launch.sh": LeasedLaunchExit,
    "dispatch.sh": DispatchExit,
    "log.sh": LogExit,
    "read-logs.sh": ReadLogsExit,
    "result.sh": ResultExit,
    "get.sh": GetExit,
    "attach-probe.sh": AttachProbeExit,
    "clean.sh": CleanExit,
    "status.sh": StatusExit,
    "haves.sh": HavesExit,
    "tasks-running.sh": TasksRunningExit,
    "graph.sh": GraphExit,
    "mount-data.sh": MountDataExit,
    "start-worker.sh": StartWorkerExit,
    "idle-stop.sh": IdleStopExit,
    "watch-image.sh": WatchImageExit,
    "host-keys.sh": HostKeysExit,
}
