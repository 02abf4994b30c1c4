"""Terminal output: rich progress on a terminal, silence in --json or when piped; one table renderer."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence


class Progress:
    """Shows what a long step is doing, on stderr, only when stderr is a terminal and output isn't --json."""

    def __init__(self, enabled: bool | None = None, *, json_mode: bool = False) -> None:
        self.enabled = (sys.stderr.isatty() if enabled is None else enabled) and not json_mode
        self._status = None

    @contextmanager
    def activity(self, message: str) -> Iterator["Progress"]:
        if not self.enabled:
            yield self
            return
        from rich.console import Console

        console = Console(stderr=True)
        with console.status(message) as status:
            self._status = status
            try:
                yield self
            finally:
                self._status = None

    def update(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)

    @property
    def active(self) -> bool:
        """A spinner is showing (a transfer's progress goes into it)."""
        return self._status is not None

    def note(self, message: str) -> None:
        """A line worth keeping (not only while the step runs), on stderr."""
        print(f"offload: {message}", file=sys.stderr)


SUMMARY_FROM = 1_000_000  # bytes: a transfer this large ends with a line saying what it moved, in how long
SHOW_AFTER = 1.0  # seconds: a transfer shows its progress once it has lasted this long
_REDRAW = 0.1


def size_text(n: float) -> str:
    """N bytes as people read them: 3.6 MB, 130.2 MB, 912 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit != "kB" else f"{n / scale:.0f} kB"
    return f"{int(n)} bytes"


class TransferDisplay:
    """Meters (offload/runtime/meter.py) for a command's transfers: one that lasts past a second shows its bytes,
    total, rate and time left on stderr when stderr is a terminal (in the spinner of PROGRESS when one runs, else in
    a bar of its own), and every transfer over 1 MB ends with one line on stderr: `offload: sent 3.6 MB in 1.9 s`.
    Nothing goes to stdout."""

    def __init__(self, progress: Progress | None = None, *, live: bool | None = None, summaries: bool = True) -> None:
        self.progress = progress or Progress(False)
        self.live = sys.stderr.isatty() if live is None else live
        self.summaries = summaries

    def __call__(self, direction: Any, total: int | None) -> "_ShownTransfer":
        return _ShownTransfer(self, str(getattr(direction, "value", direction)), total)


class _ShownTransfer:
    def __init__(self, display: TransferDisplay, verb: str, total: int | None) -> None:
        import threading
        import time

        self.display = display
        self.verb = verb
        self.total = total
        self.moved = 0
        self.clock = time.monotonic
        self.started = self.clock()
        self.drawn = 0.0
        self.bar: Any = None
        self.task: Any = None
        self.lock = threading.Lock()

    def advance(self, n: int) -> None:
        with self.lock:
            self.moved += n
            now = self.clock()
            if not self.display.live or now - self.started < SHOW_AFTER or now - self.drawn < _REDRAW:
                return
            self.drawn = now
            self._draw(now)

    def sized(self, total: int) -> None:
        with self.lock:
            self.total = total
            if self.bar is not None:
                self.bar.update(self.task, total=total)

    def _draw(self, now: float) -> None:
        doing = "sending" if self.verb == "sent" else "receiving"
        if self.display.progress.active:
            rate = self.moved / max(now - self.started, 1e-6)
            text = f"{doing} {size_text(self.moved)}"
            if self.total:
                left = max(self.total - self.moved, 0) / rate if rate else 0
                text += f" of {size_text(self.total)}, {size_text(rate)}/s, {left:.0f} s left"
            else:
                text += f", {size_text(rate)}/s"
            self.display.progress.update(text)
            return
        if self.bar is None:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress as Bar, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.bar = Bar(TextColumn(f"offload: {doing}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(doing, total=self.total)
        self.bar.update(self.task, completed=self.moved)

    def done(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.stop()
                self.bar = None
            elapsed = self.clock() - self.started
        if self.display.summaries and self.moved > SUMMARY_FROM:
            self.display.progress.note(f"{self.verb} {size_text(self.moved)} in {elapsed:.1f} s")


def detach_keys() -> str:
    """The keys that detach from a job's tmux session. Inside a tmux of the user's own (TMUX set), C-b d would
    detach that outer session; C-b C-b sends one C-b through to the job's."""
    return "C-b C-b d" if os.environ.get("TMUX") else "C-b d"


def attach_note(job: str) -> str:
    inside = " (inside your own tmux)" if os.environ.get("TMUX") else ""
    return f"attaching to job {job}; detach with {detach_keys()}{inside}, and the job keeps running"


class OutputClosed(Exception):
    """Whoever read our standard output has stopped (`offload run --wait | head -1`)."""


def write_out(chunk: bytes) -> None:
    """CHUNK to standard output at once; OutputClosed when the reader has gone."""
    try:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # Nothing more can be written there, not even at exit: point stdout at nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise OutputClosed() from None


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                header: bool = False) -> None:
    """The same rows as a rich table on a terminal and as tab-separated lines when piped (after a line of the
    column names, with HEADER)."""
    if not sys.stdout.isatty():
        if header:
            print("\t".join(columns))
        for row in rows:
            print("\t".join("" if v is None else str(v) for v in row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row))
    Console().print(table)
