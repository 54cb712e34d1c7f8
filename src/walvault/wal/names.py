"""WAL file names: strict classification, segment arithmetic and LSN helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from walvault.errors import InvalidWalName
from walvault.wal.pagecheck import (
    MAX_LSN,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    UINT32_MAX,
    format_lsn,
    is_segment_name,
    is_upper_hex,
    valid_segment_size,
)

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "MAX_LSN",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "Segment",
    "WalKind",
    "classify",
    "format_lsn",
    "hash_dir",
    "is_any_wal_name",
    "is_backup_label",
    "is_history",
    "is_partial",
    "is_segment",
    "lsn_to_name_offset",
    "lsn_to_segment",
    "parse_lsn",
    "segment_range",
    "segments_per_log",
    "shown_name",
    "timeline_of",
    "valid_segment_size",
    "validate_wal_name",
]

DEFAULT_SEGMENT_SIZE = 16 << 20
_MAX_SHOWN_NAME = 128

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import ClassVar


class WalKind:
    """The kinds of file that live in a WAL archive: four constants, compared with ``is``."""

    __slots__ = ("value",)
    SEGMENT: ClassVar[WalKind]
    HISTORY: ClassVar[WalKind]
    BACKUP: ClassVar[WalKind]
    PARTIAL: ClassVar[WalKind]

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"WalKind.{self.value.upper()}"

    def __reduce__(self) -> tuple[object, tuple[object, str]]:
        return getattr, (WalKind, self.value.upper())  # copies and pickles stay the constant


WalKind.SEGMENT = WalKind("segment")
WalKind.HISTORY = WalKind("history")
WalKind.BACKUP = WalKind("backup")
WalKind.PARTIAL = WalKind("partial")


def is_segment(name: str) -> bool:
    """True for a plain 24-hex-digit segment name."""
    return is_segment_name(name)


def is_history(name: str) -> bool:
    """True for a timeline history file name (``<8 hex>.history``)."""
    return len(name) == 16 and name.endswith(".history") and is_upper_hex(name[:8], 8)


def is_backup_label(name: str) -> bool:
    """True for a backup history file name (``<24 hex>.<8 hex>.backup``)."""
    return (
        len(name) == 40
        and name[24] == "."
        and name.endswith(".backup")
        and is_upper_hex(name[:24], 24)
        and is_upper_hex(name[25:33], 8)
    )


def is_partial(name: str) -> bool:
    """True for a partial segment name (``<24 hex>.partial``)."""
    return len(name) == 32 and name.endswith(".partial") and is_upper_hex(name[:24], 24)


def classify(name: str) -> WalKind | None:
    """Return the kind of WAL file ``name`` is, or None when it is not one."""
    if is_segment(name):
        return WalKind.SEGMENT
    if is_partial(name):
        return WalKind.PARTIAL
    if is_backup_label(name):
        return WalKind.BACKUP
    if is_history(name):
        return WalKind.HISTORY
    return None


def is_any_wal_name(name: str) -> bool:
    """True when ``name`` is any of the accepted WAL file names."""
    return classify(name) is not None


def shown_name(name: str) -> str:
    """Escape control and non-ASCII characters so a name is safe to print."""
    text = name if len(name) <= _MAX_SHOWN_NAME else name[:_MAX_SHOWN_NAME] + "..."
    return text.encode("unicode_escape", errors="backslashreplace").decode("ascii")


def validate_wal_name(name: str) -> str:
    """Return ``name`` unchanged when it is a WAL file name, else raise InvalidWalName."""
    if isinstance(name, str) and is_any_wal_name(name):
        return name
    shown = shown_name(name) if isinstance(name, str) else shown_name(repr(name))
    raise InvalidWalName(
        f"'{shown}' is not a valid WAL file name (expected 24 hex digits, optionally with"
        " .partial or .<8 hex>.backup, or <8 hex>.history)"
    )


def _check_size(seg_size: int) -> int:
    if not valid_segment_size(seg_size):
        raise ValueError(f"invalid WAL segment size {seg_size!r}")
    return seg_size


def segments_per_log(seg_size: int) -> int:
    """Segments per 4 GiB "log" id (PostgreSQL's XLogSegmentsPerXLogId): 256 for 16 MiB."""
    return 0x100000000 // _check_size(seg_size)


def _max_segno(seg_size: int) -> int:
    return (MAX_LSN + 1) // seg_size - 1


class _SegmentFields(NamedTuple):
    tli: int
    log: int
    seg: int


class Segment(_SegmentFields):
    """A WAL segment identified by timeline, log id and segment index within the log id.

    An immutable ``(tli, log, seg)`` tuple, so segments compare and sort in WAL order.
    """

    __slots__ = ()

    def __new__(cls, tli: int, log: int, seg: int) -> Segment:
        for field, value in (("tli", tli), ("log", log), ("seg", seg)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Segment.{field} must be an int, not {type(value).__name__}")
            if not 0 <= value <= UINT32_MAX:
                raise ValueError(f"Segment.{field} out of range: {value}")
        return super().__new__(cls, tli, log, seg)

    def _replace(self, **changes: int) -> Segment:
        """A copy with some fields changed, checked as the constructor checks them."""
        unknown = changes.keys() - set(self._fields)
        if unknown:
            raise ValueError(f"Segment has no field(s) {', '.join(sorted(unknown))}")
        values = {"tli": self.tli, "log": self.log, "seg": self.seg, **changes}
        return Segment(values["tli"], values["log"], values["seg"])

    @property
    def name(self) -> str:
        """The 24-character segment file name."""
        return f"{self.tli:08X}{self.log:08X}{self.seg:08X}"

    @classmethod
    def from_name(cls, name: str) -> Segment:
        """Build from a segment, partial or backup label name (raises InvalidWalName)."""
        kind = classify(validate_wal_name(name))
        if kind is WalKind.HISTORY:
            raise InvalidWalName(f"'{shown_name(name)}' is a timeline history file, not a segment")
        return cls(int(name[0:8], 16), int(name[8:16], 16), int(name[16:24], 16))

    @classmethod
    def from_segno(cls, tli: int, segno: int, seg_size: int) -> Segment:
        """Build from an absolute segment number (PostgreSQL's XLogSegNo)."""
        if not 0 <= segno <= _max_segno(_check_size(seg_size)):
            raise ValueError(f"segment number {segno} out of range for size {seg_size}")
        per_log = segments_per_log(seg_size)
        return cls(tli, segno // per_log, segno % per_log)

    def segno(self, seg_size: int) -> int:
        """The absolute segment number; ValueError if ``seg`` is too big for ``seg_size``."""
        per_log = segments_per_log(seg_size)
        if self.seg >= per_log:
            raise ValueError(
                f"{self.name} is not a valid segment for {seg_size}-byte segments "
                f"(segment index must be below {per_log:X})"
            )
        return self.log * per_log + self.seg

    def to_lsn(self, seg_size: int) -> int:
        """The LSN at which this segment starts."""
        return self.segno(seg_size) * seg_size

    def next(self, seg_size: int) -> Segment:
        """The following segment on the same timeline."""
        segno = self.segno(seg_size)
        if segno >= _max_segno(seg_size):
            raise ValueError(f"{self.name} is the last possible segment")
        return Segment.from_segno(self.tli, segno + 1, seg_size)

    def previous(self, seg_size: int) -> Segment:
        """The preceding segment on the same timeline."""
        segno = self.segno(seg_size)
        if segno == 0:
            raise ValueError(f"{self.name} is the first possible segment")
        return Segment.from_segno(self.tli, segno - 1, seg_size)

    def __str__(self) -> str:
        return self.name


def hash_dir(name: str) -> str:
    """Archive sub-directory for ``name``: its first 16 chars, or "" for history files."""
    kind = classify(validate_wal_name(name))
    return "" if kind is WalKind.HISTORY else name[:16]


def timeline_of(name: str) -> int:
    """Timeline ID encoded in any WAL file name (raises InvalidWalName)."""
    return int(validate_wal_name(name)[:8], 16)


def parse_lsn(text: str) -> int:
    """Parse ``"16/B374D848"`` into an integer LSN (ValueError on anything else)."""
    if isinstance(text, str):
        high, slash, low = text.partition("/")
        if slash and _is_lsn_half(high) and _is_lsn_half(low):
            return (int(high, 16) << 32) | int(low, 16)
    raise ValueError(f"invalid LSN {text!r} (expected <hex>/<hex>, e.g. 16/B374D848)")


def _is_lsn_half(text: str) -> bool:
    """1 to 8 hex digits, either case."""
    return 1 <= len(text) <= 8 and all(char in _HEX_DIGITS for char in text)


def _check_lsn(lsn: int) -> int:
    if not isinstance(lsn, int) or isinstance(lsn, bool) or not 0 <= lsn <= MAX_LSN:
        raise ValueError(f"LSN out of range: {lsn!r}")
    return lsn


def lsn_to_segment(lsn: int, tli: int, seg_size: int, *, prev_on_boundary: bool = False) -> Segment:
    """Segment holding ``lsn`` (XLByteToSeg).

    With ``prev_on_boundary`` an LSN exactly at a segment start is taken to
    belong to the previous segment (XLByteToPrevSeg, as ``pg_walfile_name``
    does), which is what you want for an *end* position.
    """
    _check_lsn(lsn)
    _check_size(seg_size)
    if prev_on_boundary and lsn > 0:
        return Segment.from_segno(tli, (lsn - 1) // seg_size, seg_size)
    return Segment.from_segno(tli, lsn // seg_size, seg_size)


def lsn_to_name_offset(lsn: int, tli: int, seg_size: int) -> tuple[str, int]:
    """Segment name and byte offset within it, like ``pg_walfile_name_offset``."""
    return lsn_to_segment(lsn, tli, seg_size).name, lsn % seg_size


def segment_range(begin: Segment, end: Segment, seg_size: int) -> Iterator[Segment]:
    """Iterate from ``begin`` to ``end`` inclusive (empty if begin > end).

    Arguments are checked eagerly: a timeline mismatch or an index that does
    not fit ``seg_size`` raises ValueError at call time, not on iteration.
    """
    if begin.tli != end.tli:
        raise ValueError(
            f"segment range crosses timelines: {begin.name} (TLI {begin.tli}) "
            f"to {end.name} (TLI {end.tli})"
        )
    tli, first, last = begin.tli, begin.segno(seg_size), end.segno(seg_size)
    return (Segment.from_segno(tli, segno, seg_size) for segno in range(first, last + 1))
