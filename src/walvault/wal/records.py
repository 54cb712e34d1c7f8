"""Walking the records of one WAL segment: PostgreSQL's record chain, checked without PostgreSQL.

**The format** (PostgreSQL's ``xlog_internal.h`` and ``xlogrecord.h``; little-endian).  A
segment is a run of XLOG_BLCKSZ pages, each opening with a page header: the long one (40
bytes, see :mod:`walvault.wal.pagecheck`) on the segment's first page, the short one (24
bytes: magic, info, timeline, page address, ``xlp_rem_len``) on the others.  Records follow
one another at 8-byte (MAXALIGN) boundaries and flow over page and segment boundaries; a page
whose first bytes continue a record has XLP_FIRST_IS_CONTRECORD in ``xlp_info`` and says in
``xlp_rem_len`` how many bytes of that record are still to come.  A record opens with the
24-byte XLogRecord header::

     0 uint32 xl_tot_len   4 uint32 xl_xid   8 uint64 xl_prev
    16 uint8  xl_info     17 uint8  xl_rmid  18 2 bytes padding   20 uint32 xl_crc

``xl_crc`` is the CRC-32C of the record's bytes after the header, then of the header up to
``xl_crc``; ``xl_prev`` is the start LSN of the previous record.  An XLOG_SWITCH record
(rmgr 0, info 0x40) ends its segment: the next record starts the next one.  After a crash
that lost a record's continuation, PostgreSQL marks the page where it goes on with
XLP_FIRST_IS_OVERWRITE_CONTRECORD instead.

**What is checked**, as PostgreSQL's xlogreader checks it when recovery reads the WAL: the
long header (through :func:`walvault.wal.pagecheck.header_problems`: page address, timeline,
system identifier, segment size); every page header the records reach (magic, flags, page
address, a timeline that never goes down nor above the segment's); every record's length,
resource manager, ``xl_prev`` link and CRC; that each continuation is announced by its page
with the right ``xlp_rem_len``, and that no page announces one that is not there.  Record
contents (the resource managers' own formats) are not decoded.

**How**: the page headers are cut out first (one ``bytes.join``), so every record is one
contiguous slice of the payload and the loop visits each record once: two CRC-32C calls in C
(the ``crc32c`` package, hardware-accelerated) and one ``struct`` unpack.  Page headers are
checked lazily, as the walk reaches their page, so the pages after an XLOG_SWITCH or after the
end of the WAL (zeros, or old bytes of a recycled file) are never judged.

**Pure**: bytes in, a :class:`SegmentWalk` out.  A :class:`Carry` hands what the next
segment needs -- the start of the last record (for its successor's ``xl_prev``), the record
cut by the segment's end (its header bytes and a running CRC), the last page timeline -- to
the walk of the next segment, so the chain is checked across segment boundaries.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from crc32c import crc32c

from walvault.wal.pagecheck import (
    LONG_HEADER_SIZE,
    SHORT_HEADER_SIZE,
    UINT32_MAX,
    XLP_ALL_FLAGS,
    XLP_FIRST_IS_CONTRECORD,
    XLP_FIRST_IS_OVERWRITE_CONTRECORD,
    XLP_LONG_HEADER,
    format_lsn,
    header_problems,
    is_segment_name,
    unpack_long_header,
    valid_segment_size,
)

__all__ = [
    "CONTINUES",
    "END",
    "SWITCH",
    "Carry",
    "SegmentWalk",
    "walk_segment",
]

#: The segment's last record goes on in the next segment (or ends exactly at its end).
CONTINUES = "continues"
#: An XLOG_SWITCH record ends the segment's records; the next record starts the next segment.
SWITCH = "switch"
#: The records stop inside this segment (zeros, an invalid record, a problem).
END = "end"

RECORD_HEADER = struct.Struct("<IIQBBxxI")
SIZE_OF_XLOG_RECORD = RECORD_HEADER.size  # 24
_CRC_OFFSET = 20  # offsetof(XLogRecord, xl_crc)
_PAGE_HEADER = struct.Struct("<HHIQI")
_TOT_LEN = struct.Struct("<I")
_ALIGN = 8
RM_XLOG_ID = 0
XLOG_SWITCH = 0x40
_RMGR_INFO_MASK = 0xF0  # the low 4 bits of xl_info are XLogInsert's own flags
#: Built-in resource managers are 0..21 in PostgreSQL 13 to 17; 128..255 are custom ones (15+).
RM_MAX_BUILTIN_ID = 21
RM_MIN_CUSTOM_ID = 128
#: PostgreSQL refuses records of MaxAllocSize (1 GiB - 1) or more.
MAX_RECORD_SIZE = 0x3FFFFFFF


class Carry(NamedTuple):
    """What the walk of the next segment needs from this one."""

    next_lsn: int  # the LSN the next segment must start at
    prev_lsn: int | None  # start of the last complete record: its successor's xl_prev
    page_tli: int  # timeline of the last page read (it may only grow)
    pending_lsn: int | None = None  # start of a record cut by the segment's end
    pending_head: bytes = b""  # that record's first bytes (up to its 24-byte header)
    pending_crc: int = 0  # CRC-32C of its bytes after the header, so far
    pending_left: int = 0  # bytes of it still to come (also when skipping an unchecked one)


class SegmentWalk(NamedTuple):
    """The verdict on one segment.

    ``verdict`` is :data:`CONTINUES`, :data:`SWITCH` or :data:`END`.  ``end_lsn``: for
    CONTINUES and SWITCH the start of the next segment; for END where the records stop (the
    first position no valid record could be read at).  ``valid_until`` is the end of the last
    complete, valid record that ends in this segment (None when none does): recovery can
    replay up to there.  ``problems`` is empty when the segment is sound; the walk stops at
    the first one (verdict END).  ``end_reason`` says why an END ended.  ``carry`` is for the
    next segment (None after END).
    """

    verdict: str
    end_lsn: int
    valid_until: int | None
    records: int
    problems: tuple[str, ...]
    carry: Carry | None
    end_reason: str = ""

    @property
    def ok(self) -> bool:
        """True when nothing is wrong with the segment."""
        return not self.problems


class _Stop(Exception):
    """Ends a walk: where (a payload offset, or an LSN), why, and whether it is a problem.

    ``problem`` None: what a ``.partial`` may end with (zeros, a torn last record), so a
    problem only in a complete segment, or when valid records follow in the ``.partial``.
    """

    def __init__(
        self, offset: int, reason: str, problem: bool | None, lsn: int | None = None
    ) -> None:
        super().__init__(reason)
        self.offset, self.reason, self.problem, self.lsn = offset, reason, problem, lsn


def _align(offset: int) -> int:
    return (offset + _ALIGN - 1) & ~(_ALIGN - 1)


class _Walker:
    """One walk over one segment's payload: its pages without their headers."""

    def __init__(
        self, view: memoryview, name: str, seg_start: int, blcksz: int, magic: int, partial: bool
    ) -> None:
        self.view, self.name, self.seg_start = view, name, seg_start
        self.blcksz, self.magic, self.partial = blcksz, magic, partial
        self.seg_tli = int(name[:8], 16)
        self.first = blcksz - LONG_HEADER_SIZE  # payload bytes of page 0
        self.body = blcksz - SHORT_HEADER_SIZE  # payload bytes of every other page
        npages = len(view) // blcksz
        parts = [view[LONG_HEADER_SIZE:blcksz]]
        parts += [view[k * blcksz + SHORT_HEADER_SIZE : (k + 1) * blcksz] for k in range(1, npages)]
        self.stream = b"".join(parts)
        self.size = len(self.stream)
        self.next_page = 1  # the first page whose header is still unchecked
        self.next_boundary = self.first if npages > 1 else self.size  # its payload offset
        self.page_tli = 0
        self.records = 0
        self.prev_lsn: int | None = None
        self.last_end: int | None = None  # payload offset just after the last valid record
        self.pending: Carry | None = None

    # ------------------------------------------------------------------ positions

    def lsn(self, offset: int) -> int:
        """The LSN of the payload byte at ``offset``."""
        if offset < self.first:
            return self.seg_start + LONG_HEADER_SIZE + offset
        page, within = divmod(offset - self.first, self.body)
        return self.seg_start + (page + 1) * self.blcksz + SHORT_HEADER_SIZE + within

    def end_lsn(self, offset: int) -> int:
        """The LSN just after the payload byte before ``offset`` (for end positions)."""
        return self.seg_start if offset <= 0 else self.lsn(offset - 1) + 1

    def offset_of(self, lsn: int) -> int | None:
        """The payload offset of ``lsn``, or None when it is not a payload byte of this segment."""
        rel = lsn - self.seg_start
        if not 0 <= rel < len(self.view):
            return None
        page, within = divmod(rel, self.blcksz)
        header = LONG_HEADER_SIZE if page == 0 else SHORT_HEADER_SIZE
        if within < header:
            return None
        return (0 if page == 0 else self.first + (page - 1) * self.body) + within - header

    def followed(self, offset: int, targets: set[int]) -> bool:
        """Is there a valid record at or after payload ``offset`` whose ``xl_prev`` is one of
        ``targets``?  Where a ``.partial``'s records stop, that tells damage (the chain goes
        on after it) from the torn or unwritten end of the WAL (nothing links past it)."""
        stream = self.stream
        for target in targets:
            key = struct.pack("<Q", target)
            found = stream.find(key, offset + 8)
            while found != -1:
                start = found - 8
                if start % _ALIGN == 0 and start + SIZE_OF_XLOG_RECORD <= self.size:
                    tot_len, _xid, _prev, _info, _rmid, crc = RECORD_HEADER.unpack_from(
                        stream, start
                    )
                    end = start + tot_len
                    if tot_len >= SIZE_OF_XLOG_RECORD and end <= self.size:
                        body = crc32c(stream[start + SIZE_OF_XLOG_RECORD : end])
                        if crc32c(stream[start : start + _CRC_OFFSET], body) == crc:
                            return True
                found = stream.find(key, found + 1)
        return False

    # ------------------------------------------------------------------ pages

    def check_page(self, index: int) -> tuple[int, int]:
        """Check the header of page ``index`` (>= 1); return its ``(xlp_info, xlp_rem_len)``."""
        start = index * self.blcksz
        magic, info, tli, pageaddr, rem_len = _PAGE_HEADER.unpack_from(self.view, start)
        address = self.seg_start + start
        here = f"{self.name}: page at {format_lsn(address)}"
        if not (magic or info or tli or pageaddr or rem_len):
            raise _Stop(0, f"{here} is empty (zeros)", None, address)
        if magic != self.magic:
            why = f"magic 0x{magic:04X}, expected 0x{self.magic:04X}"
        elif info & ~XLP_ALL_FLAGS or info & XLP_LONG_HEADER:
            why = f"invalid info bits 0x{info:04X}"
        elif pageaddr != address:
            why = f"unexpected page address {format_lsn(pageaddr)}"
        elif tli > self.seg_tli:
            why = f"timeline {tli} is above the segment's"
        elif tli < self.page_tli:
            why = f"out-of-sequence timeline {tli} (after {self.page_tli})"
        else:
            self.page_tli = tli
            return info, rem_len
        raise _Stop(0, f"{here}: {why}", True, address)

    def page_starting_record(self, pos: int) -> None:
        """A record starts at the first payload byte of the next page: check that page."""
        info, _ = self.check_page(self.next_page)
        if info & XLP_FIRST_IS_CONTRECORD and not info & XLP_FIRST_IS_OVERWRITE_CONTRECORD:
            raise _Stop(
                pos,
                f"{self.name}: page at {format_lsn(self.lsn(pos) - SHORT_HEADER_SIZE)} continues "
                "a record, but the previous record ended before it",
                True,
            )
        self.next_page += 1
        self.next_boundary += self.body

    def span(self, lsn: int | None, end: int) -> int | None:
        """Check the pages that a record ending at payload offset ``end`` (possibly past this
        segment) flows onto within this segment.  Returns the payload offset where an
        overwrite-contrecord page abandons the record, else None."""
        what = f"{self.name}: record at {format_lsn(lsn)}" if lsn is not None else self.name
        while self.next_boundary < end and self.next_boundary < self.size:
            boundary = self.next_boundary
            try:
                info, rem_len = self.check_page(self.next_page)
            except _Stop as stop:
                if stop.problem is not None or lsn is None:
                    raise
                raise _Stop(0, f"{what}: cut by an empty page", None, lsn) from None
            self.next_page += 1
            self.next_boundary += self.body
            if info & XLP_FIRST_IS_OVERWRITE_CONTRECORD:
                return boundary
            at = format_lsn(self.lsn(boundary) - SHORT_HEADER_SIZE)
            if not info & XLP_FIRST_IS_CONTRECORD:
                raise _Stop(
                    boundary,
                    f"{what}: goes on at the page {at}, which has no contrecord flag",
                    True,
                )
            if rem_len != end - boundary:
                raise _Stop(
                    boundary,
                    f"{what}: the page {at} says {rem_len} bytes of it remain,"
                    f" not {end - boundary}",
                    True,
                )
        return None

    # ------------------------------------------------------------------ records

    def check_header(self, lsn: int, head: bytes) -> None:
        """Check a record header that was cut by the previous segment's end."""
        _len, _xid, xl_prev, _info, rmid, _crc = RECORD_HEADER.unpack_from(head)
        if not (rmid <= RM_MAX_BUILTIN_ID or rmid >= RM_MIN_CUSTOM_ID):
            raise _Stop(
                -1, f"{self.name}: record at {format_lsn(lsn)}: invalid rmgr {rmid}", None, lsn
            )
        if xl_prev != self.prev_lsn and (self.prev_lsn is not None or xl_prev >= lsn):
            raise _Stop(-1, self.bad_prev(lsn, xl_prev), None, lsn)

    def bad_prev(self, lsn: int, xl_prev: int) -> str:
        expected = (
            f"the previous record {format_lsn(self.prev_lsn)}"
            if self.prev_lsn is not None
            else "an earlier position"
        )
        return (
            f"{self.name}: record at {format_lsn(lsn)}: xl_prev {format_lsn(xl_prev)} does not "
            f"point at {expected}"
        )

    def complete(self, carry: Carry) -> int | None:
        """Read the end of the record ``carry`` left pending.

        Returns the payload offset after it, -1 when it was an XLOG_SWITCH, or None when it
        goes on past this segment too (then ``self.pending`` is set).
        """
        left, lsn = carry.pending_left, carry.pending_lsn
        overwritten = self.span(lsn, left)
        if overwritten is not None:
            return overwritten
        take = min(left, self.size)
        chunk = memoryview(self.stream)[:take]
        head, body_crc = carry.pending_head, carry.pending_crc
        if lsn is not None and len(head) < SIZE_OF_XLOG_RECORD:
            missing = SIZE_OF_XLOG_RECORD - len(head)
            head += bytes(chunk[:missing])
            chunk = chunk[missing:]
            if len(head) == SIZE_OF_XLOG_RECORD:
                self.check_header(lsn, head)
        if lsn is not None:
            body_crc = crc32c(chunk, body_crc)
        if left > self.size:
            self.pending = carry._replace(
                pending_head=head, pending_crc=body_crc, pending_left=left - self.size
            )
            return None
        if lsn is None:  # the skipped continuation of a record before the walk's start
            return _align(left)
        _tot, _xid, _prev, info, rmid, crc = RECORD_HEADER.unpack_from(head)
        if crc32c(head[:_CRC_OFFSET], body_crc) != crc:
            raise _Stop(-1, f"{self.name}: record at {format_lsn(lsn)}: CRC mismatch", None, lsn)
        self.records += 1
        self.prev_lsn = lsn
        self.last_end = take
        if rmid == RM_XLOG_ID and info & _RMGR_INFO_MASK == XLOG_SWITCH:
            return -1
        return _align(take)

    def run(self, pos: int) -> str:
        """Walk the records from payload offset ``pos``; return the verdict.

        The loop is the hot path (one pass per record): it keeps its state in locals and
        leaves page boundaries and cut records to the methods above.
        """
        stream, size = self.stream, self.size
        view = memoryview(stream)
        unpack = RECORD_HEADER.unpack_from
        seg_start, first, body, blcksz = self.seg_start, self.first, self.body, self.blcksz
        prev = self.prev_lsn
        records = 0
        last_end = self.last_end
        try:
            while True:
                if pos >= self.next_boundary and pos < size:
                    self.page_starting_record(pos)
                if pos + SIZE_OF_XLOG_RECORD > size:
                    if pos >= size:
                        return CONTINUES
                    (tot_len,) = _TOT_LEN.unpack_from(stream, pos)
                    if tot_len < SIZE_OF_XLOG_RECORD or tot_len > MAX_RECORD_SIZE:
                        self.invalid_length(pos, tot_len)
                    lsn = self.lsn(pos)
                    self.span(lsn, pos + tot_len)
                    self.pending = Carry(0, None, 0, lsn, stream[pos:size], 0, pos + tot_len - size)
                    return CONTINUES
                tot_len, _xid, xl_prev, info, rmid, crc = unpack(stream, pos)
                if pos < first:
                    lsn = seg_start + LONG_HEADER_SIZE + pos
                else:
                    page, within = divmod(pos - first, body)
                    lsn = seg_start + (page + 1) * blcksz + SHORT_HEADER_SIZE + within
                if tot_len < SIZE_OF_XLOG_RECORD or tot_len > MAX_RECORD_SIZE:
                    self.invalid_length(pos, tot_len)
                if RM_MAX_BUILTIN_ID < rmid < RM_MIN_CUSTOM_ID:
                    raise _Stop(
                        pos,
                        f"{self.name}: record at {format_lsn(lsn)}: invalid rmgr {rmid}",
                        None,
                    )
                if xl_prev != prev and (prev is not None or xl_prev >= lsn):
                    self.prev_lsn = prev
                    raise _Stop(pos, self.bad_prev(lsn, xl_prev), None)
                end = pos + tot_len
                if end > self.next_boundary:
                    overwritten = self.span(lsn, end)
                    if overwritten is not None:
                        pos = overwritten
                        continue
                    if end > size:
                        self.pending = Carry(
                            0, None, 0, lsn, stream[pos : pos + SIZE_OF_XLOG_RECORD],
                            crc32c(view[pos + SIZE_OF_XLOG_RECORD : size]), end - size,
                        )  # fmt: skip
                        return CONTINUES
                if crc32c(view[pos : pos + _CRC_OFFSET], crc32c(view[pos + 24 : end])) != crc:
                    raise _Stop(
                        pos,
                        f"{self.name}: record at {format_lsn(lsn)}: CRC mismatch",
                        None,
                    )
                records += 1
                prev = lsn
                last_end = end
                if rmid == RM_XLOG_ID and info & _RMGR_INFO_MASK == XLOG_SWITCH:
                    return SWITCH
                pos = (end + _ALIGN - 1) & ~(_ALIGN - 1)
        finally:
            self.prev_lsn, self.last_end = prev, last_end
            self.records += records

    def invalid_length(self, pos: int, tot_len: int) -> None:
        if tot_len == 0:
            raise _Stop(pos, f"{self.name}: no record at {format_lsn(self.lsn(pos))} (zeros)", None)
        raise _Stop(
            pos,
            f"{self.name}: record at {format_lsn(self.lsn(pos))}: invalid length {tot_len}",
            None,
        )


def walk_segment(
    data: bytes | bytearray | memoryview,
    name: str,
    *,
    segment_size: int,
    carry: Carry | None = None,
    start_lsn: int | None = None,
    system_identifier: int | None = None,
    partial: bool = False,
) -> SegmentWalk:
    """Walk the records of the segment ``name``, given its decoded bytes ``data``.

    * ``carry``: from the walk of the previous segment; the chain must go on here (the first
      record's ``xl_prev``, the continuation of a cut record, the page timeline).
    * ``start_lsn`` (without a carry): start at this record, e.g. a backup's begin LSN (a
      record start by definition); its ``xl_prev`` can only be checked to be before it.
    * neither: start at the first record that begins in this segment (the bytes continuing an
      earlier record are skipped, as PostgreSQL's XLogFindNextRecord does).
    * ``system_identifier``: the cluster the segment must belong to.
    * ``partial``: the file is a ``.partial`` (the end of a timeline or of the stream).  Zeros
      after its last record, or a torn last record followed by zeros, are its normal end
      (verdict END, no problem); in a complete segment they are problems, as is anything that
      stops the records before an XLOG_SWITCH or the segment's end: PostgreSQL would end
      recovery there.  A ``.partial`` shorter than a segment is read as if zero-padded.
    """
    if not is_segment_name(name[:24]):
        raise ValueError(f"{name!r} is not a WAL segment name")
    name = name[:24]
    if not valid_segment_size(segment_size):
        raise ValueError(f"invalid WAL segment size {segment_size!r}")
    per_log = (UINT32_MAX + 1) // segment_size
    seg_start = (int(name[8:16], 16) * per_log + int(name[16:24], 16)) * segment_size
    next_lsn = seg_start + segment_size
    view = memoryview(data).cast("B")

    def stopped(problem: str) -> SegmentWalk:
        return SegmentWalk(END, seg_start, None, 0, (f"{name}: {problem}",), None, problem)

    if carry is not None and carry.next_lsn != seg_start:
        return stopped(f"does not follow the previous segment (it ended at "
                       f"{format_lsn(carry.next_lsn)})")  # fmt: skip
    try:
        fields = unpack_long_header(view)
    except ValueError as exc:
        return stopped(str(exc))
    found = header_problems(
        fields, name, system_identifier=system_identifier, segment_size=segment_size
    )
    if found:
        return stopped("; ".join(found))
    magic, info, header_tli, _, rem_len, _, _, blcksz = fields
    if len(view) != segment_size:
        if not (partial and len(view) < segment_size):
            return stopped(f"{len(view)} bytes, not one {segment_size}-byte segment")
        view = memoryview(bytes(view) + bytes(segment_size - len(view)))
    if carry is not None and header_tli < carry.page_tli:
        return stopped(f"out-of-sequence timeline {header_tli} (after {carry.page_tli})")
    walker = _Walker(view, name, seg_start, blcksz, magic, partial)
    walker.page_tli = header_tli
    try:
        pos = _start(walker, info, rem_len, carry, start_lsn)
        verdict = SWITCH if pos == -1 else CONTINUES if pos is None else walker.run(pos)
    except _Stop as stop:
        if stop.lsn is not None:
            where = stop.lsn
        elif stop.offset < 0:
            where = carry.pending_lsn if carry and carry.pending_lsn is not None else seg_start
        else:
            where = walker.lsn(stop.offset) if stop.offset < walker.size else next_lsn
        valid = None if walker.last_end is None else walker.end_lsn(_align(walker.last_end))
        problem = stop.problem
        if problem is None:
            offset = walker.offset_of(where)
            targets = {where} | ({walker.prev_lsn} if walker.prev_lsn is not None else set())
            problem = not partial or walker.followed(offset or 0, targets)
        problems = (stop.reason,) if problem else ()
        return SegmentWalk(END, where, valid, walker.records, problems, None, stop.reason)
    valid = None if walker.last_end is None else walker.end_lsn(_align(walker.last_end))
    if walker.pending is not None:
        out = walker.pending._replace(
            next_lsn=next_lsn, prev_lsn=walker.prev_lsn, page_tli=walker.page_tli
        )
    else:
        out = Carry(next_lsn, walker.prev_lsn, walker.page_tli)
    reason = "XLOG_SWITCH" if verdict == SWITCH else ""
    return SegmentWalk(verdict, next_lsn, valid, walker.records, (), out, reason)


def _start(
    walker: _Walker, info: int, rem_len: int, carry: Carry | None, start_lsn: int | None
) -> int | None:
    """Where the walk begins: a payload offset; -1 when a continued XLOG_SWITCH ended the
    segment at once; None when the continued record goes on past this segment."""
    name = walker.name
    continues = (
        bool(info & XLP_FIRST_IS_CONTRECORD) and not info & XLP_FIRST_IS_OVERWRITE_CONTRECORD
    )
    if carry is not None:
        walker.prev_lsn = carry.prev_lsn
        if not carry.pending_left or info & XLP_FIRST_IS_OVERWRITE_CONTRECORD:
            if continues:  # (an overwrite page: the cut record was lost in a crash)
                raise _Stop(0, f"{name}: its first page continues a record, but the "
                            "previous segment's records ended", True)  # fmt: skip
            return 0
        what = (
            f"the record at {format_lsn(carry.pending_lsn)}"
            if carry.pending_lsn is not None
            else "the record cut by the previous segment's end"
        )
        if not continues:
            raise _Stop(0, f"{name}: {what} is not continued (no contrecord flag)", True,
                        carry.pending_lsn)  # fmt: skip
        if rem_len != carry.pending_left:
            raise _Stop(0, f"{name}: {what} has {carry.pending_left} bytes to come, the first "
                        f"page says {rem_len}", True, carry.pending_lsn)  # fmt: skip
        return walker.complete(carry)
    if start_lsn is not None:
        if start_lsn % walker.blcksz == 0:  # a page's start: its first record follows the header
            start_lsn += LONG_HEADER_SIZE if start_lsn == walker.seg_start else SHORT_HEADER_SIZE
        offset = walker.offset_of(start_lsn)
        if offset is None or start_lsn % _ALIGN:
            raise ValueError(f"{format_lsn(start_lsn)} is not a record position in {name}")
        page = (start_lsn - walker.seg_start) // walker.blcksz
        if page >= 1:
            walker.next_page = page
            walker.next_boundary = walker.first + (page - 1) * walker.body
            walker.check_page(page)
            walker.next_page = page + 1
            walker.next_boundary += walker.body
        return offset
    if continues and rem_len:  # resynchronise: skip what continues an earlier record
        return walker.complete(
            Carry(walker.seg_start, None, walker.page_tli, None, b"", 0, rem_len)
        )
    return 0
