"""What a command and the connection agent say to each other over the agent's socket.

Protocol: one Unix stream connection per request. The client sends one JSON line, its `op` (`open` a worker's
transport, run a `step` on it (streamed), run `steps` whose client waits for their whole answers (sent to the
worker's dispatcher together), ask whether it is `alive`, parse `ssh-config` for a host, `status`, `stop`) with
what it needs and the client's code stamp (see `offload.paths.code_stamp`), then, for a step with input, the input
as frames while it reads the answer (for `steps`, each input in turn, each ending with its empty frame); the agent
answers with frames (for `steps`, each step's `o` and `e` frames, then its `x`). A frame is a kind byte, a
4-byte big-endian length and the payload. Kinds: `i` input (empty: end of input); `n` a notice for the user; `s` the step has started on the
worker; `o` and `e` its stdout and stderr; `x` its exit (`{"exit": N}`); `r` a reply (JSON); `!` an error (`{"type",
"worker", "message", "hint"}`); `d` the request was declined before anything ran (`{"reason", "retry"}`).

The agent relays a step's input to the worker as it comes, holding none of it. After the input the client sends
nothing, so its end of the socket closing means it was interrupted: the agent then gives the step up, and its
channel closes, so the command on the worker loses its input and output and ends.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import offload.errors as errors
from offload.errors import OffloadError

CHUNK = 65536  # the most a step's input or output frame carries


# --- errors across the socket ------------------------------------------------------------------------------------


def error_payload(e: OffloadError) -> bytes:
    return json.dumps({"type": type(e).__name__, "worker": getattr(e, "worker", None), "message": e.message,
                       "hint": e.hint}).encode()


def error_from(payload: bytes) -> OffloadError:
    """The OffloadError the agent reported, as its own class where offload has one."""
    data = json.loads(payload)
    cls = getattr(errors, str(data.get("type")), None)
    message, hint, worker = str(data.get("message")), data.get("hint"), data.get("worker")
    if isinstance(cls, type) and issubclass(cls, errors.WorkerError) and worker is not None:
        try:
            return cls(worker, message, hint=hint)
        except TypeError:
            pass
    if isinstance(cls, type) and issubclass(cls, OffloadError) and not issubclass(cls, errors.WorkerError):
        try:
            return cls(message, hint=hint)
        except TypeError:
            pass
    return OffloadError(message, hint=hint)


# --- what a transport is for --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DialSpec:
    """Everything a dial depends on, as the agent receives it: the worker, how to authenticate, whom to trust."""

    name: str
    host: str
    port: int
    user: str | None
    workspace: str
    host_keys: tuple[str, ...] = ()          # pinned in the outputs, plus keys from an authenticated API
    proxy_command: str | None = None         # as given (unexpanded), the record's or the options'
    identity: str | None = None
    known_hosts: str = ""
    connect_timeout: float = 15.0
    timeout: float | None = None
    auth_sock: str | None = None             # the request's ssh-agent (its SSH_AUTH_SOCK), the only one its dial uses
    identity_stamp: str = ""                 # the identity file's inode, size and mtime: a new key, a new login
    key_source: str = ""                     # where HOST_KEYS come from (a KeySource), for what a refusal says
    strict_host_keys: bool = False           # an unknown host key is refused, not trusted on first use

    @classmethod
    def of(cls, record: Any, options: Any, *, extra_keys: Sequence[str] | None = None,
           proxy_command: str | None = None, timeout: float | None = None) -> "DialSpec":
        identity = str(options.identity) if options.identity else None
        stamp = ""
        if identity:
            try:
                st = os.stat(identity)
                stamp = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
        source = "outputs" if record.host_keys else ("published" if extra_keys else "remembered")
        return cls(name=record.name, host=record.host, port=record.port, user=record.user,
                   workspace=record.workspace, host_keys=tuple(record.host_keys) + tuple(extra_keys or ()),
                   proxy_command=proxy_command or record.proxy_command or options.proxy_command,
                   identity=identity, known_hosts=str(options.known_hosts.path),
                   connect_timeout=options.connect_timeout, timeout=timeout,
                   auth_sock=options.ssh_agent, identity_stamp=stamp,
                   key_source=source,
                   strict_host_keys=bool(options.strict_host_keys or getattr(record, "strict_host_keys", False)))

    def key(self) -> str:
        """Two requests share a transport only when this is the same."""
        parts = [self.host, str(self.port), self.user or "", self.identity or "", self.identity_stamp,
                 self.auth_sock or "", "\n".join(sorted(set(self.host_keys))), self.proxy_command or "",
                 self.known_hosts, "strict" if self.strict_host_keys else ""]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DialSpec":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["host_keys"] = tuple(values.get("host_keys") or ())
        return cls(**values)


