"""A simulated wide-area link, as a ProxyCommand: `python3 link_relay.py HOST PORT RTT_MS UP_BPS DOWN_BPS`.

It relays stdin to HOST:PORT and back, each direction through a link of its own: a queue drained at the
direction's rate (bytes a second, 0 for no limit; the queue holds at most QUEUE_SECONDS of data, and a sender
beyond that waits, as TCP does behind a full router queue) followed by a delay line of half the RTT. A chunk leaves
the queue when the bytes ahead of it have gone, and arrives half the RTT later, whatever comes after it: the delay
is a property of the line, not a sleep per chunk.

Kept free of offload's imports (and run with -S): it starts for every connection.
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import threading
import time

QUEUE_SECONDS = 0.05  # the router's buffer, as time at the link's rate
CHUNK = 65536


class Direction:
    """One direction of the link: bytes in at `put`, out at SINK after their turn in the queue and the delay."""

    def __init__(self, sink, rate: float, delay: float) -> None:
        self.sink = sink
        self.rate = rate
        self.delay = delay
        self.free_at = 0.0          # when the link has sent everything queued so far
        self.line: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.ready = threading.Condition()
        threading.Thread(target=self._deliver, daemon=True).start()

    def put(self, data: bytes | None) -> None:
        """Queue DATA (None: the end); waits while the queue is full."""
        now = time.monotonic()
        if self.rate and data:
            backlog = self.free_at - now
            if backlog > QUEUE_SECONDS:
                time.sleep(backlog - QUEUE_SECONDS)
                now = time.monotonic()
            self.free_at = max(self.free_at, now) + len(data) / self.rate
            leaves = self.free_at
        else:
            leaves = max(self.free_at, now)
        with self.ready:
            self.line.append((leaves + self.delay, data))
            self.ready.notify()

    def _deliver(self) -> None:
        while True:
            with self.ready:
                while not self.line:
                    self.ready.wait()
                due, data = self.line[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                continue
            with self.ready:
                self.line.popleft()
            if data is None:
                self.sink(None)
                return
            self.sink(data)


def main() -> None:
    host, port, rtt_ms, up, down = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), \
        float(sys.argv[5])
    delay = rtt_ms / 2000.0
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = sys.stdout.fileno()
    done = threading.Event()

    def to_worker(data: bytes | None) -> None:
        if data is None:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        else:
            s.sendall(data)

    def to_client(data: bytes | None) -> None:
        if data is None:
            done.set()
            return
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]

    upward = Direction(to_worker, up, delay)
    downward = Direction(to_client, down, delay)

    def read_client() -> None:
        fd = sys.stdin.fileno()
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                data = b""
            upward.put(data or None)
            if not data:
                return

    threading.Thread(target=read_client, daemon=True).start()
    while True:
        try:
            data = s.recv(CHUNK)
        except OSError:
            data = b""
        downward.put(data or None)
        if not data:
            break
    done.wait()


if __name__ == "__main__":
    main()
