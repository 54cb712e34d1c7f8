"""What ``walvault serve`` keeps in memory about one server between passes.

Everything durable stays where the commands keep it (``walvault-receiver.json``, the
catalogue, ``walvault-gaps.json``, ``meta/``); this is only what the service learns while
it runs: its workers, the lag samples of the last hour, the latest check results and the
last errors.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from walvault.config import ServerConfig
from walvault.supervise.children import Child
from walvault.web.coverage import CoverageReader

#: Lag samples kept: one hour at the probe's pace (see :mod:`walvault.supervise.probe`).
LAG_WINDOW = 3600.0
KEEP_ERRORS = 20


@dataclass
class ServerRuntime:
    """The service's view of one server."""

    server: ServerConfig
    archive_only: bool = False
    receiver: Child | None = None
    receiver_starting: bool = False
    receiver_stop_requested: bool = False
    next_receiver_start: float = 0.0
    external_receiver: int | None = None
    archiver: Child | None = None
    next_archive: float = 0.0
    archive_failures: int = 0
    #: staging directory -> (mtime_ns, when) of its last listing
    listed: dict[str, tuple[int, float]] = field(default_factory=dict)
    maintenance: Child | None = None
    next_maintenance: float = 0.0
    removed: bool = False
    segment_size: int | None = None
    lag_samples: deque[tuple[float, int | None]] = field(default_factory=deque)
    lag_bytes: int | None = None
    lag_at: float | None = None
    lag_error: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    checks_at: float | None = None
    errors: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=KEEP_ERRORS))
    storage: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    coverage: CoverageReader | None = None

    def __post_init__(self) -> None:
        self.coverage = CoverageReader(self.server.xlogdb_path)

    @property
    def name(self) -> str:
        """The server's name."""
        return self.server.name

    @property
    def wants_receiver(self) -> bool:
        """Whether the service keeps a receiver running for this server."""
        s = self.server
        return s.active and not s.disabled and s.streaming_archiver and not self.removed

    @property
    def archives(self) -> bool:
        """Whether the service archives this server's staging directories."""
        s = self.server
        usable = not s.disabled or self.archive_only
        return s.active and usable and (s.streaming_archiver or s.archiver) and not self.removed

    def children(self) -> list[Child]:
        """The workers running for this server."""
        return [c for c in (self.receiver, self.archiver, self.maintenance) if c is not None]

    def error(self, source: str, message: str) -> None:
        """Remember an error for the status page (the newest last)."""
        self.errors.append((time.time(), source, message))

    def add_lag(self, at: float, lag: int | None, error: str | None) -> None:
        """A lag sample (None: could not be measured, with why)."""
        self.lag_bytes, self.lag_at, self.lag_error = lag, at, error
        self.lag_samples.append((round(at, 1), lag))
        while self.lag_samples and self.lag_samples[0][0] < at - LAG_WINDOW:
            self.lag_samples.popleft()

    def add_storage(self, rows: list[list[Any]]) -> None:
        """Add a worker's storage request counts (see :mod:`walvault.counters`)."""
        for driver, operation, count, failed in rows:
            entry = self.storage.setdefault((str(driver), str(operation)), [0, 0])
            entry[0] += int(count)
            entry[1] += int(failed)
