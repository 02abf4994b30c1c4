"""Frames on this user's Unix sockets, spoken by the connection agent and the warm command server: a kind byte, a
4-byte big-endian length and the payload. Also who is at the other end of such a socket.

A leaf: it imports nothing of offload, so the `offload` executable's first steps stay light.
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct(">cI")
# The most a frame may carry: a warm command's request (its arguments and environment) is the largest. A peer that
# announces more is dropped unread, so that no peer makes the other side wait for, or hold, more than this.
MAX_PAYLOAD = 1 << 24


def pack(kind: bytes, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame carries at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    return HEADER.pack(kind, len(payload)) + payload


def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    sock.sendall(pack(kind, payload))


def recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """SIZE bytes, or None when the other side went away first."""
    # Into one buffer of the full size: `recv(n)` would make a buffer of n bytes for each piece that arrives, which
    # costs a relayed input of a megabyte a frame as much as copying it several times.
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            return None
        got += n
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The next frame as (kind, payload), or None when the other side has gone (closed or reset) or has announced
    more than MAX_PAYLOAD (the caller then drops it, as a peer gone)."""
    try:
        return _recv_frame(sock)
    except OSError:
        return None


def _recv_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    head = recv_exact(sock, HEADER.size)
    if head is None:
        return None
    kind, size = HEADER.unpack(head)
    if size > MAX_PAYLOAD:
        return None
    payload = recv_exact(sock, size) if size else b""
    return None if payload is None else (kind, payload)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]
