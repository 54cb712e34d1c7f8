"""Where a base backup starts and ends: ``backup_label``, backup history files (``.backup``)
and ``backup_manifest``, parsed purely.

One strict parser reads both kinds of label.  PostgreSQL writes them line by line as
``KEY: value`` (xlog.c ``do_pg_backup_start``/``do_pg_backup_stop`` up to 15, xlogbackup.c
``build_backup_content`` from 16)::

    START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
    STOP WAL LOCATION: 0/2000138 (file 000000010000000000000002)     (history file only)
    CHECKPOINT LOCATION: 0/2000060
    BACKUP METHOD: streamed
    BACKUP FROM: primary
    START TIME: 2026-11-25 16:00:39 UTC
    LABEL: pg_basebackup base backup
    START TIMELINE: 1
    STOP TIME: 2026-11-25 16:00:40 UTC                                (history file only)
    STOP TIMELINE: 1                                                  (history file only)

(up to 15 the STOP WAL LOCATION line comes second, from 16 ``INCREMENTAL FROM LSN/TLI`` may
follow START TIMELINE).  Each known key once; an unknown ``KEY: value`` line is allowed (a
newer release); a line that is neither is only accepted as the continuation of a LABEL
holding a newline.  The positions must agree with each other: the ``(file ...)`` names with
their LSNs and timelines, the checkpoint between start and stop.  A history file's own name
is ``<stop timeline><segment of START>.<offset of START>.backup``; the STOP file is the
segment holding the stop LSN (16 and later) or the one before a segment boundary (15 and
earlier): both are accepted.  Without a known segment size, a label is accepted when some
valid size makes every position agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from walvault.wal.names import is_backup_label, lsn_to_segment, parse_lsn
from walvault.wal.pagecheck import MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, format_lsn

_KEY_RE = re.compile(r"([A-Z][A-Z ]*[A-Z]):(?: (.*))?")
_LSN = r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}"
_LOCATION_RE = re.compile(rf"{_LSN} \(file [0-9A-F]{{24}}\)")
_LSN_RE = re.compile(_LSN)
_TLI_RE = re.compile(r"[0-9]{1,10}")
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} \S+")
_TIME_FORMAT = "'YYYY-MM-DD HH:MM:SS <zone>'"
_METHODS = ("streamed", "pg_start_backup")
_FROM = ("primary", "standby", "master")
_LABEL_KEYS = (
    "START WAL LOCATION",
    "CHECKPOINT LOCATION",
    "BACKUP METHOD",
    "BACKUP FROM",
    "START TIME",
    "LABEL",
    "START TIMELINE",
)
_STOP_KEYS = ("STOP WAL LOCATION", "STOP TIME", "STOP TIMELINE")
_OTHER_KEYS = ("INCREMENTAL FROM LSN", "INCREMENTAL FROM TLI")
_KNOWN_KEYS = frozenset(_LABEL_KEYS + _STOP_KEYS + _OTHER_KEYS)
#: every valid WAL segment size, 1 MiB to 1 GiB
_SIZES = tuple(1 << bits for bits in range(40) if MIN_SEGMENT_SIZE <= 1 << bits <= MAX_SEGMENT_SIZE)
_SHOWN = 60


@dataclass(frozen=True)
class BackupLabel:
    """A ``backup_label`` or backup history file; the ``stop_*`` fields only in the latter."""

    start_lsn: int
    start_wal: str
    checkpoint_lsn: int
    method: str
    backup_from: str
    start_time_text: str
    label: str
    start_timeline: int
    stop_lsn: int | None = None
    stop_wal: str | None = None
    stop_time_text: str | None = None
    stop_timeline: int | None = None

    @property
    def start_time(self) -> datetime | None:
        """START TIME as an aware datetime (None when its zone is not UTC/GMT or numeric)."""
        return parse_label_time(self.start_time_text)


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


def _shown(line: str) -> str:
    """A value quoted for a one-line message (escaped, shortened)."""
    return repr(line if len(line) <= _SHOWN else line[:_SHOWN] + "...")


def _fields(text: str) -> dict[str, str]:
    """The ``KEY: value`` lines of a label (ValueError on anything else)."""
    if "\0" in text:
        raise ValueError("NUL byte (a backup label is text)")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    fields: dict[str, str] = {}
    in_label = False
    for lineno, line in enumerate(lines, start=1):
        match = _KEY_RE.fullmatch(line)
        key = match.group(1) if match else ""
        if match is not None and key in _KNOWN_KEYS:
            if key in fields:
                raise ValueError(f"line {lineno}: {key} given twice")
            fields[key] = match.group(2) or ""
            in_label = key == "LABEL"
        elif in_label:  # a label holding a newline
            fields["LABEL"] += "\n" + line
        elif match is None:
            raise ValueError(f"line {lineno}: {_shown(line)} is not a 'KEY: value' line")
    return fields


def _value(fields: dict[str, str], key: str, pattern: re.Pattern[str], expected: str) -> str:
    value = fields[key]
    if not pattern.fullmatch(value):
        raise ValueError(f"{key} {_shown(value)} is not {expected}")
    return value


def _location(fields: dict[str, str], key: str) -> tuple[int, str]:
    value = _value(fields, key, _LOCATION_RE, "'<LSN> (file <24 hex digits>)'")
    lsn, _, wal = value.partition(" (file ")
    return parse_lsn(lsn), wal[:-1]


def _timeline(fields: dict[str, str], key: str) -> int:
    tli = int(_value(fields, key, _TLI_RE, "a timeline ID"))
    if not 1 <= tli <= 0xFFFFFFFF:
        raise ValueError(f"{key} {tli} is not a timeline ID")
    return tli


def _choice(fields: dict[str, str], key: str, accepted: tuple[str, ...]) -> str:
    value = fields[key]
    if value not in accepted:
        raise ValueError(f"{key} {_shown(value)} is not one of: {', '.join(accepted)}")
    return value


def _holds(wal: str, lsn: int, seg_size: int, *, end: bool = False) -> bool:
    """Whether the segment ``wal`` holds ``lsn`` with ``seg_size``-byte segments (for an end
    position, the segment before a boundary too)."""
    tli = int(wal[:8], 16)
    if lsn_to_segment(lsn, tli, seg_size).name == wal:
        return True
    return end and lsn_to_segment(lsn, tli, seg_size, prev_on_boundary=True).name == wal


def _check(label: BackupLabel, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The segment sizes (of ``sizes``) with which every position of ``label`` agrees."""
    if int(label.start_wal[:8], 16) != label.start_timeline:
        raise ValueError(
            f"START WAL LOCATION file {label.start_wal} is not on START TIMELINE "
            f"{label.start_timeline}"
        )
    if label.checkpoint_lsn < label.start_lsn:
        raise ValueError("CHECKPOINT LOCATION is before START WAL LOCATION")
    sizes = tuple(s for s in sizes if _holds(label.start_wal, label.start_lsn, s))
    if not sizes:
        raise ValueError(
            f"START WAL LOCATION {format_lsn(label.start_lsn)} is not in file {label.start_wal}"
        )
    if label.stop_lsn is None or label.stop_wal is None or label.stop_timeline is None:
        return sizes
    if int(label.stop_wal[:8], 16) != label.stop_timeline:
        raise ValueError(
            f"STOP WAL LOCATION file {label.stop_wal} is not on STOP TIMELINE {label.stop_timeline}"
        )
    if label.stop_timeline < label.start_timeline:
        raise ValueError("STOP TIMELINE is below START TIMELINE")
    if not label.start_lsn <= label.checkpoint_lsn <= label.stop_lsn:
        raise ValueError("STOP WAL LOCATION is before START WAL LOCATION or the checkpoint")
    sizes = tuple(s for s in sizes if _holds(label.stop_wal, label.stop_lsn, s, end=True))
    if not sizes:
        raise ValueError(
            f"STOP WAL LOCATION {format_lsn(label.stop_lsn)} is not in file {label.stop_wal}"
        )
    return sizes


def _parse(
    text: str, segment_size: int | None, *, history: bool
) -> tuple[BackupLabel, tuple[int, ...]]:
    """The label and the segment sizes its positions agree with."""
    fields = _fields(text)
    wanted = _LABEL_KEYS + (_STOP_KEYS if history else ())
    missing = [key for key in wanted if key not in fields]
    if missing:
        raise ValueError(f"no {', '.join(missing)} line")
    for key in _OTHER_KEYS:
        if key in fields:
            _value(fields, key, _LSN_RE if key.endswith("LSN") else _TLI_RE, "valid")
    start_lsn, start_wal = _location(fields, "START WAL LOCATION")
    label = BackupLabel(
        start_lsn=start_lsn,
        start_wal=start_wal,
        checkpoint_lsn=parse_lsn(_value(fields, "CHECKPOINT LOCATION", _LSN_RE, "an LSN")),
        method=_choice(fields, "BACKUP METHOD", _METHODS),
        backup_from=_choice(fields, "BACKUP FROM", _FROM),
        start_time_text=_value(fields, "START TIME", _TIME_RE, _TIME_FORMAT),
        label=fields["LABEL"],
        start_timeline=_timeline(fields, "START TIMELINE"),
    )
    if history:
        stop_lsn, stop_wal = _location(fields, "STOP WAL LOCATION")
        label = replace(
            label,
            stop_lsn=stop_lsn,
            stop_wal=stop_wal,
            stop_time_text=_value(fields, "STOP TIME", _TIME_RE, _TIME_FORMAT),
            stop_timeline=_timeline(fields, "STOP TIMELINE"),
        )
    if segment_size is not None and segment_size not in _SIZES:
        raise ValueError(f"invalid segment size {segment_size}")
    return label, _check(label, (segment_size,) if segment_size else _SIZES)


def _text(content: str | bytes) -> str:
    return content.decode("utf-8", errors="replace") if isinstance(content, bytes) else content


def parse_backup_label(content: str | bytes, *, segment_size: int | None = None) -> BackupLabel:
    """Parse the ``backup_label`` of a base backup (ValueError saying what is wrong)."""
    return _parse(_text(content), segment_size, history=False)[0]


def parse_backup_history(
    name: str, content: str | bytes, *, segment_size: int | None = None
) -> BackupLabel:
    """Parse the backup history file called ``name`` (``<24 hex>.<8 hex>.backup``).

    Besides :func:`parse_backup_label`'s rules: the STOP lines, and a name made of the
    STOP TIMELINE, the segment of START WAL LOCATION and its offset in that segment.
    ValueError says what is wrong.
    """
    if not is_backup_label(name):
        raise ValueError(f"{name!r} is not a backup history file name")
    label, sizes = _parse(_text(content), segment_size, history=True)
    assert label.stop_timeline is not None
    expected = f"{label.stop_timeline:08X}{label.start_wal[8:]}"
    if name[:24] != expected:
        raise ValueError(
            f"its name does not match its content (expected {expected}.<offset>.backup from "
            "START WAL LOCATION and STOP TIMELINE)"
        )
    offset = int(name[25:33], 16)
    if not any(label.start_lsn % size == offset for size in sizes):
        raise ValueError(
            f"offset {name[25:33]} in its name is not that of START WAL LOCATION "
            f"{format_lsn(label.start_lsn)}"
        )
    return label


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
    label: BackupLabel, ranges: list[WalRange] | None, seg_size: int, end_hint: int | None = None
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
    if end_hint is None:
        raise ValueError("cannot tell where the backup ends: no backup_manifest")
    tli = label.start_timeline
    return BackupPosition(label.start_lsn, end_hint, tli, tli, seg_size)
