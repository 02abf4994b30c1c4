"""The connection agent: one background process per user that keeps each worker's SSH transport (and the proxy or
IAP tunnel under it) open, so that a warm command opens no connection and loads no SSH library.

A command dials through `connect()`: it finds the agent's Unix socket, starting the agent when none answers, and
asks it for the worker's transport; every later step of the command is one request on that socket, and the agent
runs it over the transport it keeps. The agent reuses a transport only for the same host, port, user, identity,
pinned host keys, proxy command and known_hosts file, and checks a transport's host key against the trust of the
request each time, so trust is exactly what it is without the agent. It exits after OFFLOAD_PERSIST idle seconds
(default 600); `OFFLOAD_PERSIST=0` turns it off. When the agent cannot be used (it will not start, or it dies
before a step has started) the command falls back to its own connection without a word.

The socket lives in `$XDG_RUNTIME_DIR/offload/` (else offload's cache directory), in a directory only the user
may enter; the socket is mode 0600 and both sides check the other's uid. A step's input (a job's `--env` values
travel in the launch script on stdin) passes through the socket only, never an argv or a file.

Each installation of offload (a Python and a copy of the package) has an agent of its own: its socket, lock, pid
file and log are named after the installation (`offload.paths.InstallationFiles`), so two installations side by
side never run each other's code, and each keeps its own connections. A request of the same installation whose
code has changed (offload was upgraded or edited) retires the agent: it lets go of its socket, declines that
request and any later one with `retry` (the client asks again and so starts a new agent), finishes the requests it
has in hand, then exits.

`client` is the command's side (`connect`, the `AgentTransport` it returns, `host_config`, `status`, `stop`);
`server` is the agent process (`python -m offload.runtime.agent`); `protocol` is what they say to each other.
"""

from offload.paths import persist_seconds
from offload.runtime.agent.client import (START_TIMEOUT, AgentTransport, AgentUnavailable, agent_files, connect,
                                          host_config, status, stop)
from offload.runtime.agent.protocol import DialSpec

__all__ = ["START_TIMEOUT", "AgentTransport", "AgentUnavailable", "DialSpec", "agent_files", "connect",
           "host_config", "persist_seconds", "status", "stop"]
