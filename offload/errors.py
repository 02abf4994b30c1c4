"""The error hierarchy: every failure the user can act on is an OffloadError with one clear line."""

from __future__ import annotations

import os


class OffloadError(Exception):
    """Base of every error offload reports to the user as a single line."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        """The one line shown on stderr."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(OffloadError):
    """A stack config key, outputs file or offload.yaml is missing or invalid."""

    exit_code = 2


class UsageError(OffloadError):
    """The command line asks for something that cannot be done as stated."""

    exit_code = 2


class WorkerError(OffloadError):
    """A failure tied to one worker; carries its name."""

    def __init__(self, worker: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.worker = worker


class WorkerUnreachable(WorkerError):
    """The worker could not be reached over its transport."""

    exit_code = 3


class AgentGone(WorkerUnreachable):
    """The connection agent went away in the middle of a step: a command that can resume (following a log)
    reconnects without a word."""


class HostKeyMismatch(WorkerError):
    """The worker presented a host key other than the pinned or remembered one."""

    exit_code = 4


class HostKeyUnknown(HostKeyMismatch):
    """Nothing vouches for the worker's host key (not pinned, not published, not remembered) and strict host-key
    checking refuses to trust it on first use."""


STRICT_HINT = ("pin it in the worker's host_keys (offload:hosts of an ssh stack), or drop --strict-host-keys and "
               "offload:strictHostKeys to trust it on first use")


class AuthFailed(WorkerError):
    """The worker answered but refused the SSH login, or there was no key to log in with. Not a kind of
    WorkerUnreachable: trying again cannot help, so nothing reconnects on it."""

    exit_code = 8


AUTH_HINT = "pass --identity or set OFFLOAD_SSH_KEY (a private key)"


class RemoteCommandError(WorkerError):
    """A step offload runs on the worker failed; carries the command and its output."""

    def __init__(self, worker: str, message: str, *, command: str = "", exit_code: int | None = None,
                 stderr: str = "", hint: str | None = None) -> None:
        super().__init__(worker, message, hint=hint)
        self.command = command
        self.remote_exit_code = exit_code
        self.stderr = stderr


class JobExists(WorkerError):
    """A job with that id is already on the worker; nothing of it was changed."""

    exit_code = 2


class SyncError(WorkerError):
    """The local working tree could not be reproduced on the worker."""


class JobNotFound(OffloadError):
    """No job with that id exists on any worker of the stack."""

    exit_code = 5


class JobRunning(OffloadError):
    """The job has not ended, so what only an ended job has (its result) is not there yet."""

    exit_code = 7


class CloudApiError(WorkerError):
    """A call to the cloud provider's API (wake, stop, guest attributes) failed."""


class CloudNotFound(CloudApiError):
    """The cloud provider's API answered that what was asked for does not exist (its 404): an instance that was
    never created or was deleted, guest attributes not yet published."""


class MissingExtra(OffloadError):
    """What the command needs is in an optional part of offload that is not installed; carries the extra's name
    (`gcp`, `docker`), and the line says how to install it."""

    exit_code = 2

    def __init__(self, message: str, *, extra: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.extra = extra


class CloudServiceDisabled(CloudApiError):
    """The call needs a Google API that is off in the project it is billed to (the API's SERVICE_DISABLED);
    `service` names it (`compute.googleapis.com`) and `consumer` the project (`projects/123`), when the API said."""

    def __init__(self, worker: str, message: str, *, service: str | None = None, consumer: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(worker, message, hint=hint)
        self.service = service
        self.consumer = consumer


class CloudPermissionDenied(CloudApiError):
    """The cloud provider's API refused the call (its 401 or 403): a missing grant, or one not propagated yet."""


class IapDenied(WorkerUnreachable):
    """IAP refused the tunnel (its 4033, "not authorized"): no IAP tunnel grant on the instance, or a new one that
    has not reached IAP yet."""


class PulumiUnavailable(OffloadError):
    """The Pulumi CLI, which the Automation API drives, is not installed."""

    exit_code = 6


def reason(e: BaseException) -> str:
    """What an exception says went wrong, for a one-line error; never empty, as an `EOFError()` or a socket error
    raised without a message would be: its strerror, its errno's text, its own text, else its class."""
    if isinstance(e, OSError):
        if e.strerror:
            return e.strerror
        if isinstance(e.errno, int):
            return os.strerror(e.errno)
    if isinstance(e, EOFError) and not str(e).strip():
        return "the other side closed the connection (EOFError)"
    return str(e).strip() or type(e).__name__
