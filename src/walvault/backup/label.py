"""Where a base backup starts and ends: ``backup_label`` and ``backup_manifest``, parsed purely."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from walvault.wal.names import lsn_to_segment, parse_lsn

_START_RE = re.compile(r"^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+)", re.MULTILINE)
_TIME_RE = re.compile(r"^START TIME: (.+)$", re.MULTILINE)
_TLI_RE = re.compile(r"^START TIMELINE: (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class LabelFacts:
    """What ``backup_label`` says: start LSN, start time and start timeline (PG 11+)."""

    start_lsn: int
    start_time: datetime | None
    start_timeline: int | None


@dataclass(frozen=True)
class WalRange:
    """One entry of the manifest's ``WAL-Ranges``."""

    timeline: int
    start_lsn: int
    end_lsn: int


@dataclass(frozen=True)
class BackupPosition:
    """Begin and end of a backup in WAL terms (what backup.info records)."""

    begin_lsn: int
    end_lsn: int
    begin_timeline: int
    end_timeline: int
    seg_size: int

    @property
    def begin_wal(self) -> str:
        """The segment holding the start LSN."""
        return lsn_to_segment(self.begin_lsn, self.begin_timeline, self.seg_size).name

    @property
    def end_wal(self) -> str:
        """The segment holding the last byte before the end LSN (a boundary belongs before)."""
        segment = lsn_to_segment(
            self.end_lsn, self.end_timeline, self.seg_size, prev_on_boundary=True
        )
        return segment.name

    @property
    def begin_offset(self) -> int:
        """Offset of the start LSN in its segment."""
        return self.begin_lsn % self.seg_size

    @property
    def end_offset(self) -> int:
        """Offset of the end LSN in its segment (0 at a boundary, as Barman records)."""
        return self.end_lsn % self.seg_size


def parse_label_time(text: str) -> datetime | None:
    """``2026-11-25 16:00:39 UTC`` (or with a numeric zone) -> an aware datetime."""
    text = text.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S %Z", "%Y-%m-%d %H:%M:%S %z"):
        try:
            value = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if value.tzinfo is None:  # %Z parses "UTC"/"GMT" but leaves the datetime naive
            if text.endswith((" UTC", " GMT")):
                value = value.replace(tzinfo=UTC)
            else:
                return None
        return value
    return None


def parse_backup_label(text: str) -> LabelFacts:
    """Parse the ``backup_label`` file pg_basebackup writes (ValueError without a start LSN)."""
    start = _START_RE.search(text)
    if start is None:
        raise ValueError("backup_label has no START WAL LOCATION line")
    when = _TIME_RE.search(text)
    tli = _TLI_RE.search(text)
    return LabelFacts(
        start_lsn=parse_lsn(start.group(1)),
        start_time=parse_label_time(when.group(1)) if when else None,
        start_timeline=int(tli.group(1)) if tli else None,
    )


def parse_manifest_ranges(text: str) -> list[WalRange]:
    """The ``WAL-Ranges`` of a ``backup_manifest`` (JSON), ordered by start LSN."""
    data = json.loads(text)
    ranges = [
        WalRange(int(item["Timeline"]), parse_lsn(item["Start-LSN"]), parse_lsn(item["End-LSN"]))
        for item in data.get("WAL-Ranges", [])
    ]
    if not ranges:
        raise ValueError("backup_manifest has no WAL-Ranges")
    return sorted(ranges, key=lambda r: (r.start_lsn, r.timeline))


def backup_position(
    label: LabelFacts, ranges: list[WalRange] | None, seg_size: int, end_hint: int | None = None
) -> BackupPosition:
    """Combine the label and the manifest; the manifest gives the end, the label the start.

    Without a manifest (``--no-manifest``, PostgreSQL < 13) the end comes from ``end_hint``
    (pg_basebackup's "write-ahead log end point") on the start timeline.
    """
    if ranges:
        first, last = ranges[0], max(ranges, key=lambda r: (r.end_lsn, r.timeline))
        if first.start_lsn != label.start_lsn:
            raise ValueError(
                "backup_label and backup_manifest disagree on the start LSN "
                f"({label.start_lsn:X} != {first.start_lsn:X})"
            )
        return BackupPosition(
            first.start_lsn, last.end_lsn, first.timeline, last.timeline, seg_size
        )
    if end_hint is None or label.start_timeline is None:
        raise ValueError("cannot tell where the backup ends: no backup_manifest")
    tli = label.start_timeline
    return BackupPosition(label.start_lsn, end_hint, tli, tli, seg_size)
