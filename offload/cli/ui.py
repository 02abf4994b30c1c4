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

    def note(self, message: str) -> None:
        """A line worth keeping (not only while the step runs), on stderr."""
        print(f"offload: {message}", file=sys.stderr)


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
