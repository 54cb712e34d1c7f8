"""Durable records of WAL gaps: ranges of segments that were lost and will never be archived.

A gap is recorded by ``receive-wal --reset`` (and by anything else that must skip WAL). ``check``
and ``status`` report every gap until a backup taken after it makes it irrelevant.
The record is ``<backup_directory>/walvault-gaps.json``, a JSON list, replaced atomically.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

from walvault.config import ServerConfig
from walvault.fs import durable_replace_bytes

GAPS_FILE = "walvault-gaps.json"


@dataclass(frozen=True)
class Gap:
    """Segments ``first_missing`` .. ``last_missing`` (inclusive) are not in the archive."""

    first_missing: str
    last_missing: str
    recorded_at: float
    reason: str

    def describe(self) -> str:
        """One line for check/status output."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.recorded_at))
        return f"{self.first_missing}..{self.last_missing} (recorded {when}: {self.reason})"


def gaps_path(server: ServerConfig) -> str:
    """Where the gap records of ``server`` live."""
    return os.path.join(server.backup_directory, GAPS_FILE)


def load_gaps(server: ServerConfig) -> list[Gap]:
    """Every recorded gap, oldest first (an unreadable file is an error, never 'no gaps')."""
    try:
        with open(gaps_path(server), encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return []
    return [Gap(**item) for item in data]


def record_gap(server: ServerConfig, first_missing: str, last_missing: str, reason: str) -> Gap:
    """Append a gap durably and return it."""
    gap = Gap(first_missing, last_missing, time.time(), reason)
    gaps = [*load_gaps(server), gap]
    payload = json.dumps([asdict(g) for g in gaps], indent=2) + "\n"
    os.makedirs(server.backup_directory, exist_ok=True)
    durable_replace_bytes(gaps_path(server), payload.encode())
    return gap


def open_gaps(server: ServerConfig, oldest_backup_begin_wal: str | None = None) -> list[Gap]:
    """Gaps that still matter: those not older than the begin WAL of a backup taken after them.

    ``oldest_backup_begin_wal`` is the begin WAL of the newest backup; a gap whose last
    missing segment is below it no longer breaks recovery from that backup.
    """
    gaps = load_gaps(server)
    if oldest_backup_begin_wal is None:
        return gaps
    return [g for g in gaps if g.last_missing[8:] >= oldest_backup_begin_wal[8:]]
