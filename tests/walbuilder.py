"""Build WAL segments record by record, as PostgreSQL lays them out, for the walker's unit tests.

Pages of 8 KiB with their headers (the long one on each segment's first page), records at
8-byte boundaries flowing over pages and segments with XLP_FIRST_IS_CONTRECORD and
``xlp_rem_len``, each record with its ``xl_prev`` and its CRC-32C.  Real WAL is exercised by
the integration tests; this is for the corner cases a real server rarely writes on demand.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from crc32c import crc32c

PG15_MAGIC = 0xD110
SYSID = 7301234567890123456
BLCKSZ = 8192
MIB = 1 << 20
LONG, SHORT = 40, 24
CONTRECORD, LONG_FLAG, OVERWRITE = 0x0001, 0x0002, 0x0008


def record_bytes(xl_prev: int, payload: bytes, *, rmid: int = 10, info: int = 0) -> bytes:
    """One XLogRecord: header with a correct CRC, then ``payload``."""
    tot_len = 24 + len(payload)
    head = struct.pack("<IIQBBxx", tot_len, 1234, xl_prev, info, rmid)
    crc = crc32c(head, crc32c(payload))
    return head + struct.pack("<I", crc) + payload


def segment_name(tli: int, segno: int, seg_size: int = MIB) -> str:
    per_log = (1 << 32) // seg_size
    return f"{tli:08X}{segno // per_log:08X}{segno % per_log:08X}"


@dataclass
class WalBuilder:
    """Writes records from ``start_lsn`` (a record position) on timeline ``tli``."""

    tli: int = 1
    seg_size: int = MIB
    sysid: int = SYSID
    start_segno: int = 3
    buffer: bytearray = field(default_factory=bytearray)
    starts: list[int] = field(default_factory=list)  # LSN of every record written
    ends: list[int] = field(default_factory=list)  # LSN just after each record
    prev: int = 0
    page_flags: dict[int, int] = field(default_factory=dict)  # page LSN -> extra xlp_info bits

    def __post_init__(self) -> None:
        self.base = self.start_segno * self.seg_size
        self.pos = self.base  # the next byte to write (an LSN)
        self._open_page(self.base, 0)

    def _header_size(self, lsn: int) -> int:
        return LONG if lsn % self.seg_size == 0 else SHORT

    def _put(self, data: bytes) -> None:
        """Write ``data`` at ``self.pos``, opening pages (and their headers) as needed."""
        view = memoryview(data)
        while view:
            if self.pos % BLCKSZ == 0:
                self._open_page(self.pos, rem_len=len(view) if len(view) < len(data) else 0)
            room = BLCKSZ - self.pos % BLCKSZ
            chunk = view[:room]
            self._write_at(self.pos, bytes(chunk))
            self.pos += len(chunk)
            view = view[len(chunk) :]

    def _write_at(self, lsn: int, data: bytes) -> None:
        offset = lsn - self.base
        if len(self.buffer) < offset + len(data):
            self.buffer.extend(bytes(offset + len(data) - len(self.buffer)))
        self.buffer[offset : offset + len(data)] = data

    def _open_page(self, lsn: int, rem_len: int) -> None:
        info = (CONTRECORD if rem_len else 0) | self.page_flags.get(lsn, 0)
        if lsn % self.seg_size == 0:
            header = struct.pack(
                "<HHIQI4xQII",
                PG15_MAGIC,
                info | LONG_FLAG,
                self.tli,
                lsn,
                rem_len,
                self.sysid,
                self.seg_size,
                BLCKSZ,
            )
        else:
            header = struct.pack("<HHIQI4x", PG15_MAGIC, info, self.tli, lsn, rem_len)
        self._write_at(lsn, header)
        self.pos = lsn + len(header)

    def add(self, payload_len: int, *, rmid: int = 10, info: int = 0, fill: int = 0x5A) -> int:
        """Append a record with ``payload_len`` bytes of payload; return its LSN."""
        self._align_start()
        lsn = self.pos
        data = record_bytes(self.prev, bytes([fill]) * payload_len, rmid=rmid, info=info)
        self._put(data)
        self.starts.append(lsn)
        self.ends.append(self.pos)
        self.prev = lsn
        self.pos = (self.pos + 7) & ~7
        return lsn

    def _align_start(self) -> None:
        self.pos = (self.pos + 7) & ~7
        if self.pos % BLCKSZ == 0:
            self._open_page(self.pos, 0)

    def switch(self) -> int:
        """An XLOG_SWITCH record; the next record starts the next segment."""
        lsn = self.add(0, rmid=0, info=0x40)
        seg_end = (lsn // self.seg_size + 1) * self.seg_size
        page = (self.pos + BLCKSZ - 1) // BLCKSZ * BLCKSZ
        while page < seg_end:  # PostgreSQL initialises the rest: page headers, zeros
            self._open_page(page, 0)
            page += BLCKSZ
        self.pos = seg_end
        return lsn

    def pad_to(self, lsn: int) -> None:
        """Move the write position to ``lsn`` (a page start), leaving zeros."""
        self.pos = lsn

    def segments(self) -> list[tuple[str, bytes]]:
        """Every segment touched so far (the last one zero-filled to its size)."""
        count = (len(self.buffer) + self.seg_size - 1) // self.seg_size
        data = bytes(self.buffer).ljust(count * self.seg_size, b"\0")
        return [
            (
                segment_name(self.tli, self.start_segno + i, self.seg_size),
                data[i * self.seg_size : (i + 1) * self.seg_size],
            )
            for i in range(count)
        ]
