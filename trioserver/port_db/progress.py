"""The progress bar of ``port-db``, in plain text on stderr.

On a terminal one line per table is redrawn in place (``\\r``), at most ten times a second;
elsewhere (a log file, a pipe) each table gets its one line when it is done, so logs stay
readable. Either way a line reads ``events  12000/48211 [#####     ] 25%``.
"""

from __future__ import annotations

import time
from typing import TextIO

_BAR_WIDTH = 20
_REDRAW_S = 0.1
# The longest table name is 28 characters; names line up under each other.
_NAME_WIDTH = 28


def render(name: str, done: int, total: int) -> str:
    """One progress line (no line end)."""
    fraction = 1.0 if total <= 0 else min(done / total, 1.0)
    filled = int(fraction * _BAR_WIDTH)
    bar = "#" * filled + " " * (_BAR_WIDTH - filled)
    width = len(str(total))
    return f"{name:<{_NAME_WIDTH}} {done:>{width}}/{total} [{bar}] {int(fraction * 100):3d}%"


class Progress:
    """Reports one table at a time: `start`, any number of `update`, `finish`."""

    def __init__(self, stream: TextIO, *, interactive: bool | None = None) -> None:
        self._stream = stream
        self._interactive = stream.isatty() if interactive is None else interactive
        self._name = ""
        self._total = 0
        self._drawn_at = 0.0

    def start(self, name: str, total: int, done: int) -> None:
        """A table begins (or resumes with `done` rows already copied)."""
        self._name = name
        self._total = total
        self._drawn_at = 0.0
        self.update(done)

    def update(self, done: int) -> None:
        """`done` rows of the current table are copied."""
        if not self._interactive:
            return
        now = time.monotonic()
        if now - self._drawn_at >= _REDRAW_S:
            self._drawn_at = now
            self._stream.write("\r" + render(self._name, done, self._total))
            self._stream.flush()

    def finish(self, done: int) -> None:
        """The current table is complete with `done` rows."""
        start = "\r" if self._interactive else ""
        self._stream.write(start + render(self._name, done, self._total) + "\n")
        self._stream.flush()

    def interrupted(self) -> None:
        """End a half-drawn line, so that what follows starts on its own."""
        if self._interactive:
            self._stream.write("\n")
            self._stream.flush()
