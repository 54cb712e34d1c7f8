"""Reading and checking the long page header at the start of a WAL segment."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from walvault.errors import InvalidWalName
from walvault.wal.names import WalKind, classify, validate_wal_name
from walvault.wal.pagecheck import (
    LONG_HEADER_SIZE,
    SHORT_HEADER_SIZE,
    XLP_ALL_FLAGS,
    XLP_LONG_HEADER,
    header_problems,
    unpack_long_header,
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


class SupportsRead(Protocol):
    """A binary file-like object (only ``read`` is used)."""

    def read(self, size: int = ..., /) -> bytes: ...


class WalHeader(NamedTuple):
    """The fields of a WAL segment's long page header, in the header's order (so the tuple
    is what :func:`walvault.wal.pagecheck.unpack_long_header` returns)."""

    magic: int
    info: int
    timeline: int
    pageaddr: int
    rem_len: int
    system_identifier: int
    segment_size: int
    block_size: int

    @property
    def pg_version(self) -> int | None:
        """PostgreSQL major version matching ``magic``, if it is a known one."""
        for version, magic in KNOWN_MAGIC.items():
            if magic == self.magic:
                return version
        return None


def parse_long_header(data: bytes | bytearray | memoryview) -> WalHeader:
    """Decode the first 40 bytes of ``data`` as a long page header (ValueError if not one)."""
    return WalHeader(*unpack_long_header(data))


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
    return header_problems(
        header, expected_name, system_identifier=system_identifier, segment_size=segment_size
    )
