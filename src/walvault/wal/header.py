"""Reading and checking the long page header at the start of a WAL segment."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from walvault.errors import InvalidWalName
from walvault.wal.names import (
    Segment,
    WalKind,
    classify,
    format_lsn,
    segments_per_log,
    valid_segment_size,
    validate_wal_name,
)

__all__ = [
    "KNOWN_MAGIC",
    "LONG_HEADER_SIZE",
    "SHORT_HEADER_SIZE",
    "XLP_ALL_FLAGS",
    "XLP_LONG_HEADER",
    "SupportsRead",
    "WalHeader",
    "check_segment",
    "parse_long_header",
    "read_header",
]

# XLOG_PAGE_MAGIC by PostgreSQL major version.  15 was checked against a
# segment written by a real PostgreSQL 15 server; the others come from the
# public xlog_internal.h of each release.  A magic missing here is not an
# error by itself: newer releases simply bump it.
KNOWN_MAGIC: dict[int, int] = {
    13: 0xD106,
    14: 0xD10D,
    15: 0xD110,
    16: 0xD113,
    17: 0xD116,
}

XLP_FIRST_IS_CONTRECORD = 0x0001
XLP_LONG_HEADER = 0x0002
XLP_ALL_FLAGS = 0x0007

# Layout (little-endian, as written on x86-64 and arm64; offsets in bytes):
#   0 uint16 xlp_magic        2 uint16 xlp_info      4 uint32 xlp_tli
#   8 uint64 xlp_pageaddr    16 uint32 xlp_rem_len  20 4 bytes alignment padding
#  -- end of XLogPageHeaderData: SizeOfXLogShortPHD = MAXALIGN(20) = 24 --
#  24 uint64 xlp_sysid       32 uint32 xlp_seg_size 36 uint32 xlp_xlog_blcksz
#  -- end of XLogLongPageHeaderData: SizeOfXLogLongPHD = 40 --
_LONG_HEADER = struct.Struct("<HHIQI4xQII")
SHORT_HEADER_SIZE = 24
LONG_HEADER_SIZE = _LONG_HEADER.size
assert LONG_HEADER_SIZE == 40

_MIN_BLOCK_SIZE = 1024
_MAX_BLOCK_SIZE = 65536


class SupportsRead(Protocol):
    """A binary file-like object (only ``read`` is used)."""

    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class WalHeader:
    """The fields of a WAL segment's long page header."""

    magic: int
    info: int
    timeline: int
    pageaddr: int
    system_identifier: int
    segment_size: int
    block_size: int
    rem_len: int = 0

    @property
    def pg_version(self) -> int | None:
        """PostgreSQL major version matching ``magic``, if it is a known one."""
        for version, magic in KNOWN_MAGIC.items():
            if magic == self.magic:
                return version
        return None


def parse_long_header(data: bytes | bytearray | memoryview) -> WalHeader:
    """Decode the first 40 bytes of ``data`` as a long page header (ValueError if not one)."""
    if len(data) < LONG_HEADER_SIZE:
        raise ValueError(f"WAL header too short: got {len(data)} bytes, need {LONG_HEADER_SIZE}")
    magic, info, tli, pageaddr, rem_len, sysid, seg_size, blcksz = _LONG_HEADER.unpack_from(data)
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
    return WalHeader(
        magic=magic,
        info=info,
        timeline=tli,
        pageaddr=pageaddr,
        system_identifier=sysid,
        segment_size=seg_size,
        block_size=blcksz,
        rem_len=rem_len,
    )


def read_header(fileobj: SupportsRead) -> WalHeader:
    """Read the first 40 bytes of a binary file object and parse them."""
    chunks: list[bytes] = []
    missing = LONG_HEADER_SIZE
    while missing > 0:
        chunk = fileobj.read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    return parse_long_header(b"".join(chunks))


def check_segment(
    header: WalHeader,
    *,
    expected_name: str,
    system_identifier: int | None = None,
    segment_size: int | None = None,
) -> list[str]:
    """List what is wrong with ``header`` for a file called ``expected_name``.

    An empty list means the header is consistent.  ``expected_name`` must be a
    segment or ``.partial`` name (else InvalidWalName).  Checks: known flag
    bits, block size, segment size (against ``segment_size`` if given),
    system identifier (if given), timeline and -- the decisive one -- that
    ``xlp_pageaddr`` equals the start LSN implied by the name (a recycled
    segment keeps an older address).  The header timeline may be *lower*
    than the name's: the first segment of a new timeline begins with
    records copied from its parent.
    """
    kind = classify(validate_wal_name(expected_name))
    if kind not in (WalKind.SEGMENT, WalKind.PARTIAL):
        assert kind is not None
        raise InvalidWalName(f"'{expected_name}' is a {kind.value} file, not a WAL segment")
    segment = Segment.from_name(expected_name)
    problems: list[str] = []
    if header.info & ~XLP_ALL_FLAGS:
        problems.append(f"unknown flag bits in xlp_info 0x{header.info:04X}")
    if not header.info & XLP_LONG_HEADER:
        problems.append("long-header flag missing from xlp_info")
    blcksz = header.block_size
    if not (_MIN_BLOCK_SIZE <= blcksz <= _MAX_BLOCK_SIZE and blcksz & (blcksz - 1) == 0):
        problems.append(f"invalid WAL block size {blcksz} in header")
    seg_size = header.segment_size
    if segment_size is not None and seg_size != segment_size:
        problems.append(f"segment size {seg_size} in header, expected {segment_size}")
        seg_size = segment_size
    if not valid_segment_size(seg_size):
        problems.append(f"invalid segment size {seg_size}")
        return problems
    if system_identifier is not None and header.system_identifier != system_identifier:
        problems.append(
            f"system identifier {header.system_identifier} in header, expected {system_identifier}"
        )
    if header.timeline > segment.tli:
        problems.append(
            f"timeline {header.timeline} in header is above the name's timeline {segment.tli}"
        )
    if segment.seg >= segments_per_log(seg_size):
        problems.append(f"{segment.name} is not a valid segment name for {seg_size}-byte segments")
        return problems
    start = segment.to_lsn(seg_size)
    if header.pageaddr != start:
        problems.append(
            f"page address {format_lsn(header.pageaddr)} in header does not match the start "
            f"{format_lsn(start)} of {segment.name} (recycled or misnamed segment?)"
        )
    return problems
