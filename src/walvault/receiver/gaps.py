"""Durable records of WAL gaps: ranges of segments that were lost and will never be archived.

A gap is recorded by ``receive-wal --reset`` (and by anything else that must skip WAL). ``check``
and ``status`` report every gap until a backup taken after it makes it irrelevant.
The record is ``<backup_directory>/walvault-gaps.json``, a JSON list, replaced atomically.
It is validated when read: a list of objects with two segment names (first <= last, one
timeline), a time and a reason.  A malformed or unreadable record is a
:class:`~walvault.errors.StateFileError`, never "no gaps": ``check`` fails on it and
:func:`record_gap` refuses to replace it (it is an audit trail).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

from walvault.config import ServerConfig
from walvault.errors import StateFileError, describe_os_error
from walvault.fs import durable_replace_bytes
from walvault.wal.names import is_segment

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


def _gap(item: object, number: int) -> Gap:
    """One validated record (ValueError saying what is wrong with it)."""
    if not isinstance(item, dict):
        raise ValueError(f"gap {number} is not a JSON object")
    missing = {"first_missing", "last_missing", "recorded_at", "reason"} - item.keys()
    if missing:
        raise ValueError(f"gap {number} has no {', '.join(sorted(missing))}")
    first, last, when, reason = (
        item["first_missing"],
        item["last_missing"],
        item["recorded_at"],
        item["reason"],
    )
    for label, name in (("first_missing", first), ("last_missing", last)):
        if not isinstance(name, str) or not is_segment(name):
            raise ValueError(f"gap {number}: {label} is not a WAL segment name")
    if first[:8] != last[:8] or first > last:
        raise ValueError(f"gap {number}: {first}..{last} is not a range of one timeline")
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise ValueError(f"gap {number}: recorded_at is not a time (seconds since the epoch)")
    if not isinstance(reason, str):
        raise ValueError(f"gap {number}: reason is not text")
    return Gap(first, last, float(when), reason)


def load_gaps(server: ServerConfig) -> list[Gap]:
    """Every recorded gap, oldest first (an unreadable or malformed file raises
    :class:`StateFileError`, never 'no gaps')."""
    path = gaps_path(server)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateFileError(path, f"unreadable: {describe_os_error(exc)}") from None
    except UnicodeDecodeError:
        raise StateFileError(path, "malformed: not UTF-8 text") from None
    try:
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError("not a JSON list of gaps")
        return [_gap(item, number) for number, item in enumerate(data, 1)]
    except ValueError as exc:  # json.JSONDecodeError is one
        raise StateFileError(path, f"malformed: {exc}") from None


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
