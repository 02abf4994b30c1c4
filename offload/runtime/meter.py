"""Counting the bytes of a transfer (a sync's pack, a pulled result, files fetched) for whoever shows them: a
front end hands in `Meters`, opened once per transfer with its direction and total (None: not known ahead), and
advanced as the bytes move. Nothing here prints."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from enum import Enum
from typing import Protocol

CHUNK = 1 << 18  # what a metered input hands the connection at a time: fine enough for a second's progress


class Direction(str, Enum):
    SENT = "sent"
    RECEIVED = "received"


class Transfer(Protocol):
    """One transfer being counted."""

    def advance(self, n: int) -> None: ...

    def sized(self, total: int) -> None:
        """The total of a transfer opened without one, once it is known (a pack still being made as it goes)."""

    def done(self) -> None: ...


Meters = Callable[[Direction, "int | None"], Transfer]


class _Uncounted:
    def advance(self, n: int) -> None:
        pass

    def sized(self, total: int) -> None:
        pass

    def done(self) -> None:
        pass


def unmetered(direction: Direction, total: int | None) -> Transfer:
    """Meters that count nothing: a caller without a display."""
    return _Uncounted()


class MeteredInput:
    """DATA for a step's stdin, in pieces counted as the connection takes each (asks for the next). It can be
    read again from the start (a step that goes again over another connection)."""

    def __init__(self, data: bytes, transfer: Transfer, chunk: int = CHUNK) -> None:
        self.data = data
        self.transfer = transfer
        self.chunk = chunk

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, len(view), self.chunk):
            piece = view[start:start + self.chunk]
            yield piece  # type: ignore[misc]  (a memoryview: the connection sends it without a copy)
            self.transfer.advance(len(piece))


class MeteredStream:
    """SOURCE's pieces for a step's stdin, as they are made, counted as the connection takes each. No length: a
    step with it streams on a channel of its own. It can be read again from the start when SOURCE can."""

    def __init__(self, source: Iterable[bytes], transfer: Transfer, chunk: int = CHUNK) -> None:
        self.source = source
        self.transfer = transfer
        self.chunk = chunk

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.source:
            view = memoryview(piece)
            for start in range(0, len(view), self.chunk):
                part = view[start:start + self.chunk]
                yield part  # type: ignore[misc]
                self.transfer.advance(len(part))


def metered_sink(sink: Callable[[bytes], object], transfer: Transfer) -> Callable[[bytes], None]:
    """SINK, counting what passes through it."""

    def counted(chunk: bytes) -> None:
        transfer.advance(len(chunk))
        sink(chunk)

    return counted
