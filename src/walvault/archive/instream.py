"""put-wal's input: a byte stream read with an idle timeout and a byte budget.

PostgreSQL waits for its archive_command without any time limit, so a sender that stalls
mid-stream (a hung ssh, a frozen client) would hold put-wal, and PostgreSQL's archiver,
forever.  :class:`BoundedInput` waits at most ``timeout`` seconds for each read to return
something (``poll`` on the file descriptor, then one ``os.read``: a read never waits for
more bytes than are already there), and refuses to read more than ``budget`` bytes in all.

A stream without a file descriptor (an in-memory stream in tests) is read without a
timeout.  The budget is checked on whatever the stream returns.
"""

from __future__ import annotations

import io
import os
import select
from typing import BinaryIO

from walvault.errors import WalvaultError


class InputRefused(WalvaultError):
    """The stream stalled or is larger than allowed (the message says which)."""


class BoundedInput:
    """A ``read(size)``-only view of ``stream`` with an idle ``timeout`` and a ``budget``."""

    def __init__(self, stream: BinaryIO, *, timeout: float | None, budget: int) -> None:
        self._stream = stream
        self._timeout = timeout
        self._budget = budget
        self.total = 0
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self._fd = None
        self._poll: select.poll | None = None
        self._wait_ms = (timeout or 0) * 1000
        if self._fd is not None and timeout is not None:
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN | select.POLLPRI)

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (what is available, at least one unless at the end)."""
        want = size if size > 0 else 1 << 16
        want = min(want, self._budget - self.total + 1)  # one more byte tells "too much"
        data = self._read(want)
        self.total += len(data)
        if self.total > self._budget:
            raise InputRefused(f"the stream is larger than {self._budget} bytes")
        return data

    def _read(self, size: int) -> bytes:
        if self._fd is None:
            return self._stream.read(size)
        if self._poll is not None and not self._poll.poll(self._wait_ms):
            raise InputRefused(
                f"no data received for {self._timeout:g} seconds (put_wal_timeout): "
                "the sender stalled"
            )
        return os.read(self._fd, size)
