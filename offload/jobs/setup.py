"""A new worker's first contact: the host key it presents, then a login that makes and checks its workspace."""

from __future__ import annotations

from dataclasses import dataclass

from offload.errors import RemoteCommandError
from offload.jobs.fleet import Reach
from offload.outputs import StackOutputs, WorkerRecord
from offload.providers import provider_for

# What every job needs on the worker, and the argv that shows it is there.
REQUIRED_TOOLS = (("git", ("git", "--version")), ("tmux", ("tmux", "-V")))


@dataclass(frozen=True)
class WorkerCheck:
    """What the first login found: the worker's name and the tools jobs need that it lacks."""

    name: str
    missing: tuple[str, ...] = ()


def host_key(outputs: StackOutputs, record: WorkerRecord, reach: Reach) -> str:
    """The host key RECORD's worker presents ('type base64'), read without logging in."""
    with provider_for(outputs, record, reach.options()) as provider:
        return provider.scan_host_key()


def home_workspace(outputs: StackOutputs, record: WorkerRecord, reach: Reach) -> str | None:
    """`offload` in the login user's home on the worker (log in with the record's pinned keys only), or None
    when the home is not a usable absolute path."""
    with provider_for(outputs, record, reach.options()) as provider:
        # Fixed shell text: nothing of ours is interpolated into it.
        result = provider.exec(["sh", "-c", 'printf "%s" "$HOME"'], timeout=60)
    home = result.text().rstrip("/") if result.ok else ""
    if not home.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in home) or "/../" in f"{home}/":
        return None
    return f"{home}/offload"


def check_worker(outputs: StackOutputs, record: WorkerRecord, reach: Reach) -> WorkerCheck:
    """Log in (with the record's pinned keys only), make the workspace and check it is writable, and look for
    the tools jobs need. A refused login, a changed key or an unwritable workspace raises its one-line error."""
    with provider_for(outputs, record, reach.options()) as provider:
        try:
            provider.provision()
        except RemoteCommandError as e:
            raise RemoteCommandError(record.name, e.message, command=e.command, exit_code=e.remote_exit_code,
                                     stderr=e.stderr, hint=f"pass --workspace with a directory "
                                     f"{record.user or 'the login user'} may create") from None
        probe = ["test", "-w", record.workspace]
        if not provider.exec(probe, timeout=60).ok:
            raise RemoteCommandError(record.name, f"the workspace {record.workspace} on worker {record.name} is not "
                                     f"writable by {record.user or 'the login user'}", command=" ".join(probe),
                                     hint="pass --workspace with a directory that user may write")
        missing = tuple(tool for tool, argv in REQUIRED_TOOLS if not provider.exec(list(argv), timeout=60).ok)
    return WorkerCheck(record.name, missing)
