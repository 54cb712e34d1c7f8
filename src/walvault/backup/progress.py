"""A one-line progress display for backup and recover: bytes, rate, ETA.

Shown only on a terminal (the stream's ``isatty``) and never with ``-q``: under cron, in
logs and in pipes nothing is printed.  The line is redrawn in place (``\\r``) at most twice
a second and cleared at the end.  The rate is the average since the start; the ETA needs
a total (pg_basebackup's own estimate while backing up, the stored size while
recovering) and is left out without one.  Thread-safe: parallel downloads report into it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TextIO

from walvault.humanize import pretty_duration, pretty_size

INTERVAL = 0.5


class Progress:
    """``add(n)`` as bytes go through; ``close()`` at the end."""

    def __init__(
        self, what: str, stream: TextIO | None, *, total: int | None = None, enabled: bool = True
    ) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self._stream = stream if enabled and stream is not None and _is_tty(stream) else None
        self._started = time.monotonic()
        self._shown = 0.0
        self._width = 0
        self._lock = threading.Lock()

    @property
    def shown(self) -> bool:
        """Whether anything is displayed (a terminal, not quiet)."""
        return self._stream is not None

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if self._stream is not None and now - self._shown >= INTERVAL:
                self._shown = now
                self._draw(self.line(now - self._started))

    def copy(self, source: str, target: str) -> object:
        """``shutil.copy2`` that counts the file (a ``copytree`` ``copy_function``)."""
        import shutil

        result = shutil.copy2(source, target)
        self.add(os.path.getsize(target))
        return result

    def set_total(self, total: int | None) -> None:
        with self._lock:
            self.total = total

    def line(self, elapsed: float) -> str:
        """The text shown after ``elapsed`` seconds (pure given the counters)."""
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.what}: {pretty_size(self.done)}"
        if self.total:
            share = min(100.0, 100.0 * self.done / self.total)
            text += f" of ~{pretty_size(self.total)} ({share:.0f}%)"
        text += f", {pretty_size(int(rate))}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {pretty_duration((self.total - self.done) / rate)}"
        return text

    def _draw(self, text: str) -> None:
        assert self._stream is not None
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()

    def close(self) -> None:
        """Clear the line (nothing was printed when not shown)."""
        with self._lock:
            if self._stream is not None and self._width:
                self._stream.write("\r" + " " * self._width + "\r")
                self._stream.flush()
                self._width = 0


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
