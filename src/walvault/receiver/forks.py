"""Durable records of timeline forks: WAL walvault streamed that the server's history abandoned.

When the WAL source was promoted from a standby that had less WAL than walvault (an
asynchronous standby, the old primary dead), walvault holds WAL of the old timeline past the
point where the new timeline starts.  receive-wal keeps that WAL (archived as it is, never
deleted), restarts at the fork point on the new timeline and records the event here, in
``<backup_directory>/walvault-forks.json``: a JSON list of objects, replaced atomically.

``check`` shows ``timeline fork: FAILED`` while a fork is not superseded by a DONE backup
that begins after it (on the new timeline or a later one), like ``WAL gaps``: the commits in
the abandoned WAL are not in the cluster's history any more, and someone must know.
:func:`fork_summary` gives the same facts as plain values (for metrics).

The file is validated on read: anything but the expected list of objects with the expected
types is reported as one line naming the file (:class:`ForkFileError`), never taken as
"no forks".
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.fs import durable_replace_bytes, ensure_dir
from walvault.humanize import pretty_size
from walvault.wal.names import format_lsn, is_segment, parse_lsn

FORKS_FILE = "walvault-forks.json"
_MAX_TLI = 0xFFFFFFFF


class ForkFileError(WalvaultError):
    """``walvault-forks.json`` exists but is not a valid record (named in the message)."""


@dataclass(frozen=True)
class Fork:
    """Timeline ``old_timeline`` was streamed up to ``streamed_to``, past ``fork_lsn`` where
    the server's history continues on ``new_timeline``; ``abandoned_bytes`` of WAL lie between.
    Streaming restarted with segment ``restart_segment``."""

    old_timeline: int
    new_timeline: int
    fork_lsn: int
    streamed_to: int
    abandoned_bytes: int
    restart_segment: str
    recorded_at: float

    def describe(self) -> str:
        """One line for check/status output."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.recorded_at))
        return (
            f"timeline {self.old_timeline} -> {self.new_timeline} at "
            f"{format_lsn(self.fork_lsn)} (recorded {when}): "
            f"{pretty_size(self.abandoned_bytes)} of WAL streamed on timeline "
            f"{self.old_timeline} up to {format_lsn(self.streamed_to)} is not in the new "
            f"history (kept in the archive); streaming restarted at {self.restart_segment}"
        )

    def to_json(self) -> dict[str, Any]:
        """The stored form (LSNs as PostgreSQL prints them)."""
        return {
            "old_timeline": self.old_timeline,
            "new_timeline": self.new_timeline,
            "fork_lsn": format_lsn(self.fork_lsn),
            "streamed_to": format_lsn(self.streamed_to),
            "abandoned_bytes": self.abandoned_bytes,
            "restart_segment": self.restart_segment,
            "recorded_at": self.recorded_at,
        }

    @property
    def key(self) -> tuple[int, int, int]:
        """What makes two records the same event."""
        return (self.old_timeline, self.new_timeline, self.fork_lsn)


_FIELDS = tuple(Fork.__dataclass_fields__)


def forks_path(server: ServerConfig) -> str:
    """Where the fork records of ``server`` live."""
    return os.path.join(server.backup_directory, FORKS_FILE)


def _timeline(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _MAX_TLI:
        return value
    return None


def _parse_entry(item: object) -> Fork:
    """One record, or ValueError saying what is wrong with it."""
    if not isinstance(item, dict):
        raise ValueError("is not a JSON object")
    missing = [name for name in _FIELDS if name not in item]
    unknown = sorted(set(item) - set(_FIELDS))
    if missing or unknown:
        raise ValueError(f"must have exactly the keys {', '.join(_FIELDS)}")
    old, new = _timeline(item["old_timeline"]), _timeline(item["new_timeline"])
    if old is None or new is None or old == new:
        raise ValueError("old_timeline and new_timeline must be two timeline IDs (1..2^32-1)")
    lsns = []
    for key in ("fork_lsn", "streamed_to"):
        value = item[key]
        try:
            lsns.append(parse_lsn(value) if isinstance(value, str) else -1)
        except ValueError:
            lsns.append(-1)
        if lsns[-1] < 0:
            raise ValueError(f"{key} must be an LSN such as 0/5010E40")
    size = item["abandoned_bytes"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("abandoned_bytes must be a whole number of bytes")
    segment = item["restart_segment"]
    if not isinstance(segment, str) or not is_segment(segment):
        raise ValueError("restart_segment must be a WAL segment name")
    stamp = item["recorded_at"]
    if not isinstance(stamp, int | float) or isinstance(stamp, bool) or not math.isfinite(stamp):
        raise ValueError("recorded_at must be a time in seconds since the epoch")
    return Fork(old, new, lsns[0], lsns[1], size, segment, float(stamp))


def parse_forks(text: str, path: str) -> list[Fork]:
    """The records in ``text`` (the content of ``path``), or ForkFileError in one line."""
    hint = "(fix it or move it away; receive-wal writes a new one at the next fork)"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ForkFileError(f"{path} is not valid JSON ({exc.msg}) {hint}") from None
    if not isinstance(data, list):
        raise ForkFileError(f"{path} must hold a JSON list of fork records {hint}")
    forks = []
    for number, item in enumerate(data, start=1):
        try:
            forks.append(_parse_entry(item))
        except ValueError as exc:
            raise ForkFileError(f"{path}: record {number} {exc} {hint}") from None
    return forks


def load_forks(server: ServerConfig) -> list[Fork]:
    """Every recorded fork, oldest first; [] when none was ever recorded."""
    path = forks_path(server)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ForkFileError(f"cannot read {path}: {reason}") from None
    return parse_forks(text, path)


def record_fork(server: ServerConfig, fork: Fork) -> Fork:
    """Add ``fork`` durably unless the same event is recorded already; return the record kept.

    Re-running after a crash must not count one fork twice: a record with the same
    timelines and fork point is kept, with the larger abandoned amount.
    """
    forks = load_forks(server)
    for index, known in enumerate(forks):
        if known.key == fork.key:
            if fork.streamed_to <= known.streamed_to:
                return known
            forks[index] = kept = Fork(
                known.old_timeline,
                known.new_timeline,
                known.fork_lsn,
                fork.streamed_to,
                fork.abandoned_bytes,
                known.restart_segment,
                known.recorded_at,
            )
            break
    else:
        forks.append(fork)
        kept = fork
    payload = json.dumps([f.to_json() for f in forks], indent=2) + "\n"
    ensure_dir(server.backup_directory)
    durable_replace_bytes(forks_path(server), payload.encode())
    return kept


def superseded(fork: Fork, backups: Iterable[tuple[int, int]]) -> bool:
    """True when a DONE backup, given as (timeline, begin LSN), begins after ``fork``."""
    return any(tli >= fork.new_timeline and lsn >= fork.fork_lsn for tli, lsn in backups)


def open_forks(forks: Iterable[Fork], backups: Iterable[tuple[int, int]]) -> list[Fork]:
    """The forks no DONE backup supersedes yet."""
    done = list(backups)
    return [fork for fork in forks if not superseded(fork, done)]


@dataclass(frozen=True)
class ForkSummary:
    """Plain values about a server's forks (for metrics and status)."""

    forks: int
    open_forks: int
    abandoned_bytes: int
    last_recorded_at: float | None


def done_backup_starts(server: ServerConfig) -> list[tuple[int, int]]:
    """(timeline, begin LSN) of every DONE backup that records both."""
    from walvault.backup.info import DONE, iter_backups

    starts = []
    for info in iter_backups(server):
        if info.status != DONE or info.timeline is None or not info.begin_xlog:
            continue
        try:
            starts.append((info.timeline, parse_lsn(info.begin_xlog)))
        except ValueError:
            continue
    return starts


def fork_summary(server: ServerConfig) -> ForkSummary:
    """How many forks were recorded, how many still matter, and the WAL they abandoned."""
    forks = load_forks(server)
    still = open_forks(forks, done_backup_starts(server))
    return ForkSummary(
        forks=len(forks),
        open_forks=len(still),
        abandoned_bytes=sum(f.abandoned_bytes for f in forks),
        last_recorded_at=max((f.recorded_at for f in forks), default=None),
    )
