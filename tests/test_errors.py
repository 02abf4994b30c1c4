"""One-line errors say why: an exception that says nothing of itself still gives a reason."""

from __future__ import annotations

import errno
import socket

import pytest

from offload.errors import reason


@pytest.mark.parametrize(("exception", "said"), [
    (EOFError(), "the other side closed the connection (EOFError)"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "Connection refused"),
    (OSError(errno.EPIPE, ""), "Broken pipe"),
    (socket.gaierror(), "gaierror"),
    (ValueError("not a key"), "not a key"),
    (RuntimeError(), "RuntimeError"),
])
def test_a_reason_is_never_empty(exception: BaseException, said: str) -> None:
    assert reason(exception) == said
