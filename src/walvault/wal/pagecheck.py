"""A WAL segment's long page header, unpacked and checked on plain values.

This module imports nothing but :mod:`struct`, on purpose: walvault-wal-restore runs once per
segment, and checking a prefetched segment must not cost it dataclasses, enum or re (~15 ms
of start-up).  :mod:`walvault.wal.header` and :mod:`walvault.wal.names` build their richer
API on these functions, so each rule is written once.
"""

from __future__ import annotations

import struct

MIN_SEGMENT_SIZE = 1 << 20  # 1 MiB, PostgreSQL's WalSegMinSize
MAX_SEGMENT_SIZE = 1 << 30  # 1 GiB, PostgreSQL's WalSegMaxSize
MAX_LSN = (1 << 64) - 1
UINT32_MAX = 0xFFFFFFFF

# xlp_info flags (PostgreSQL's xlog_internal.h).  XLP_FIRST_IS_OVERWRITE_CONTRECORD (a page
# whose expected continuation was lost in a crash, see CreateOverwriteContrecordRecord) came
# with the 2021 minor releases of 10 to 14, and with 15.
XLP_FIRST_IS_CONTRECORD = 0x0001
XLP_LONG_HEADER = 0x0002
XLP_BKP_REMOVABLE = 0x0004
XLP_FIRST_IS_OVERWRITE_CONTRECORD = 0x0008
XLP_ALL_FLAGS = 0x000F
_MIN_BLOCK_SIZE = 1024
_MAX_BLOCK_SIZE = 65536

# Layout (little-endian, as written on x86-64 and arm64; offsets in bytes):
#   0 uint16 xlp_magic        2 uint16 xlp_info      4 uint32 xlp_tli
#   8 uint64 xlp_pageaddr    16 uint32 xlp_rem_len  20 4 bytes alignment padding
#  -- end of XLogPageHeaderData: SizeOfXLogShortPHD = MAXALIGN(20) = 24 --
#  24 uint64 xlp_sysid       32 uint32 xlp_seg_size 36 uint32 xlp_xlog_blcksz
#  -- end of XLogLongPageHeaderData: SizeOfXLogLongPHD = 40 --
LONG_HEADER = struct.Struct("<HHIQI4xQII")
SHORT_HEADER_SIZE = 24
LONG_HEADER_SIZE = LONG_HEADER.size

#: (magic, info, timeline, pageaddr, rem_len, system identifier, segment size, block size)
HeaderFields = tuple[int, int, int, int, int, int, int, int]

_UPPER_HEX = frozenset("0123456789ABCDEF")


def is_upper_hex(text: str, length: int) -> bool:
    """True when ``text`` is exactly ``length`` upper-case hexadecimal digits."""
    return type(text) is str and len(text) == length and _UPPER_HEX.issuperset(text)


def is_segment_name(name: str) -> bool:
    """True for a plain 24-hex-digit (upper case) segment name."""
    return is_upper_hex(name, 24)


def valid_segment_size(size: int) -> bool:
    """True when ``size`` is a power of two between 1 MiB and 1 GiB (inclusive)."""
    if not isinstance(size, int) or isinstance(size, bool):
        return False
    return MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE and size & (size - 1) == 0


def format_lsn(lsn: int) -> str:
    """Format an integer LSN the way PostgreSQL does (``%X/%X``)."""
    if not isinstance(lsn, int) or isinstance(lsn, bool) or not 0 <= lsn <= MAX_LSN:
        raise ValueError(f"LSN out of range: {lsn!r}")
    return f"{lsn >> 32:X}/{lsn & UINT32_MAX:X}"


def unpack_long_header(data: bytes | bytearray | memoryview) -> HeaderFields:
    """The fields of the long page header starting ``data`` (ValueError if it is not one)."""
    if len(data) < LONG_HEADER_SIZE:
        raise ValueError(f"WAL header too short: got {len(data)} bytes, need {LONG_HEADER_SIZE}")
    fields: HeaderFields = LONG_HEADER.unpack_from(data)
    magic, info, seg_size = fields[0], fields[1], fields[6]
    if not info & XLP_LONG_HEADER:
        if not any(bytes(data[:LONG_HEADER_SIZE])):
            raise ValueError("not a WAL segment: header is all zeros (unused or truncated file?)")
        raise ValueError(
            f"not a WAL segment start: long-header flag missing "
            f"(xlp_info=0x{info:04X}, xlp_magic=0x{magic:04X})"
        )
    if not valid_segment_size(seg_size):
        raise ValueError(
            f"WAL header has invalid segment size {seg_size} "
            "(must be a power of two between 1 MiB and 1 GiB)"
        )
    return fields


def whole_segment_problem(head: bytes | bytearray | memoryview, size: int) -> str | None:
    """Why a file of ``size`` bytes starting with ``head`` is not one whole segment (no long
    page header, or not the segment size that header states), or None when it is."""
    try:
        fields = unpack_long_header(head)
    except ValueError as exc:
        return str(exc)
    if size != fields[6]:
        return f"size {size} is not the segment size {fields[6]} of its header"
    return None


def header_problems(
    fields: HeaderFields,
    name: str,
    *,
    system_identifier: int | None = None,
    segment_size: int | None = None,
) -> list[str]:
    """What is wrong with a long page header for the segment (or ``.partial``) ``name``.

    ``name`` must already be known to start with a valid segment name.  Checks: known flag
    bits, block size, segment size (against ``segment_size`` if given), system identifier
    (if given), timeline and -- the decisive one -- that ``xlp_pageaddr`` equals the start
    LSN implied by the name (a recycled segment keeps an older address).  The header's
    timeline may be *lower* than the name's: the first segment of a new timeline begins
    with records copied from its parent.
    """
    _, info, timeline, pageaddr, _, sysid, header_size, blcksz = fields
    tli, log, seg = int(name[0:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    problems: list[str] = []
    if info & ~XLP_ALL_FLAGS:
        problems.append(f"unknown flag bits in xlp_info 0x{info:04X}")
    if not info & XLP_LONG_HEADER:
        problems.append("long-header flag missing from xlp_info")
    if not (_MIN_BLOCK_SIZE <= blcksz <= _MAX_BLOCK_SIZE and blcksz & (blcksz - 1) == 0):
        problems.append(f"invalid WAL block size {blcksz} in header")
    seg_size = header_size
    if segment_size is not None and header_size != segment_size:
        problems.append(f"segment size {header_size} in header, expected {segment_size}")
        seg_size = segment_size
    if not valid_segment_size(seg_size):
        problems.append(f"invalid segment size {seg_size}")
        return problems
    if system_identifier is not None and sysid != system_identifier:
        problems.append(f"system identifier {sysid} in header, expected {system_identifier}")
    if timeline > tli:
        problems.append(f"timeline {timeline} in header is above the name's timeline {tli}")
    per_log = (UINT32_MAX + 1) // seg_size
    if seg >= per_log:
        problems.append(f"{name[:24]} is not a valid segment name for {seg_size}-byte segments")
        return problems
    start = (log * per_log + seg) * seg_size
    if pageaddr != start:
        problems.append(
            f"page address {format_lsn(pageaddr)} in header does not match the start "
            f"{format_lsn(start)} of {name[:24]} (recycled or misnamed segment?)"
        )
    return problems
