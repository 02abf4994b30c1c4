"""The frames the connection agent and the warm command server speak: a peer that announces more than a frame may
carry is dropped unread."""

from __future__ import annotations

import socket
import threading

import pytest

from offload.frames import HEADER, MAX_PAYLOAD, pack, recv_frame, send_frame


def test_a_frame_arrives_whole_up_to_the_largest_a_frame_may_carry() -> None:
    a, b = socket.socketpair()
    with a, b:
        largest = bytes(MAX_PAYLOAD)
        sender = threading.Thread(target=lambda: (send_frame(a, b"o", b"small"), send_frame(a, b"q", largest)))
        sender.start()
        assert recv_frame(b) == (b"o", b"small")
        assert recv_frame(b) == (b"q", largest)
        sender.join(timeout=30)


def test_a_peer_that_announces_more_is_dropped_unread() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(HEADER.pack(b"q", MAX_PAYLOAD + 1) + b"the start of it")
        b.settimeout(10)
        assert recv_frame(b) is None
        assert b.recv(100) == b"the start of it", "nothing of the payload was read"


def test_nothing_larger_is_sent() -> None:
    with pytest.raises(ValueError):
        pack(b"q", bytes(MAX_PAYLOAD + 1))
