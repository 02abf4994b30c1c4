"""What offload relies on inside paramiko beyond its public API. A paramiko release that changes any of it fails
here, naming what changed and what in offload depends on it, instead of as a hung or dropped connection later."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import paramiko
import pytest
from paramiko.agent import AgentSSH

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _require(owner: type, name: str, params: list[str], used_by: str) -> None:
    method = getattr(owner, name, None)
    if not callable(method):
        pytest.fail(f"paramiko {paramiko.__version__} has no {owner.__name__}.{name}, which {used_by} calls",
                    pytrace=False)
    found = list(inspect.signature(method).parameters)
    if found != params:
        pytest.fail(f"paramiko {paramiko.__version__}: {owner.__name__}.{name} takes ({', '.join(found)}), not "
                    f"({', '.join(params)}) as {used_by} expects", pytrace=False)


def test_paramiko_is_within_the_bound_pyproject_sets() -> None:
    """The bound is what keeps an untested major version of paramiko out; this is the version tested here."""
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (bound,) = [d for d in deps if re.match(r"paramiko\b", d)]
    low, high = (int(n) for n in re.fullmatch(r"paramiko>=(\d+),<(\d+)", bound).groups())
    major = int(paramiko.__version__.split(".")[0])
    assert low <= major < high, f"paramiko {paramiko.__version__} is outside {bound}"


def test_a_channel_builds_its_eof_and_the_transport_sends_it() -> None:
    """offload.runtime.transport._end_input sends a channel's EOF under the channel's lock (shutdown_write lets go
    of the lock first, and an EOF after a CLOSE makes sshd drop the connection)."""
    _require(paramiko.Channel, "_send_eof", ["self"], "offload.runtime.transport._end_input")
    _require(paramiko.Transport, "_send_user_message", ["self", "data"], "offload.runtime.transport._end_input")
    source = inspect.getsource(paramiko.Channel._send_eof)
    assert "eof_sent" in source and "return m" in source, \
        "Channel._send_eof no longer returns the EOF message for the caller to send (transport._end_input)"


def test_a_client_logs_in_with_the_ssh_agent_it_is_given() -> None:
    """offload.runtime.connection.use_ssh_agent binds an Agent to one request's socket (AgentSSH._connect) and
    hands it to the client in `_agent`, which SSHClient's login uses instead of reading SSH_AUTH_SOCK."""
    _require(AgentSSH, "_connect", ["self", "conn"], "offload.runtime.connection._agent_at")
    assert paramiko.SSHClient()._agent is None, "SSHClient no longer keeps its ssh-agent in _agent (use_ssh_agent)"
    login = inspect.getsource(paramiko.SSHClient._auth)
    assert "if self._agent is None" in login and "self._agent.get_keys()" in login, \
        "SSHClient's login no longer takes the ssh-agent in _agent (offload.runtime.connection.use_ssh_agent)"
