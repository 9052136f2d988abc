"""Progress of a run: a live status line on a terminal, one plain line per step elsewhere (CI).

The library reports through this object and never prints on its own.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class Progress:
    """Steps and live status. ``quiet`` prints nothing (tests and library use)."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = self.stream.isatty() and not quiet
        self._start = time.monotonic()
        self._step = ""
        self._status_shown = False

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self._start:5.1f}s"

    def step(self, text: str) -> None:
        """A new step: always one line of its own."""
        self._step = text
        self._clear()
        self._write(f"[{self._elapsed()}] {text}\n")

    def status(self, text: str) -> None:
        """Live detail of the current step (requests/s, time left); shown only on a terminal."""
        if not self.live:
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self._write(f"\r[{self._elapsed()}]   {text}"[: width + 1].ljust(width))
        self._status_shown = True

    def note(self, text: str) -> None:
        """A result worth keeping on screen."""
        self._clear()
        self._write(f"{text}\n")

    def _clear(self) -> None:
        if self._status_shown:
            self._write("\r" + " " * (shutil.get_terminal_size((100, 20)).columns - 1) + "\r")
            self._status_shown = False

    def _write(self, text: str) -> None:
        if self.quiet:
            return
        self.stream.write(text)
        self.stream.flush()
