"""Tests for walvault.wal.header: decoding and checking WAL long page headers."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walvault.errors import InvalidWalName
from walvault.wal.header import (
    KNOWN_MAGIC,
    LONG_HEADER_SIZE,
    XLP_LONG_HEADER,
    WalHeader,
    check_segment,
    parse_long_header,
    read_header,
)
from walvault.wal.names import Segment, is_partial, is_segment, valid_segment_size

MiB = 1 << 20
SYSID = 7712154413990288428
NAME = "000000010000000000000006"

# XLogLongPageHeaderData as PostgreSQL writes it on little-endian machines:
#   <H magic> <H info> <I tli> <Q pageaddr> <I rem_len> <4 pad bytes>
#   <Q sysid> <I seg_size> <I xlog_blcksz>          = 40 bytes
LAYOUT = "<HHIQI4xQII"


def make_header(
    *,
    magic: int = 0xD110,
    info: int = XLP_LONG_HEADER,
    tli: int = 1,
    pageaddr: int = 6 * MiB,
    rem_len: int = 0,
    sysid: int = SYSID,
    seg_size: int = MiB,
    blcksz: int = 8192,
) -> bytes:
    return struct.pack(LAYOUT, magic, info, tli, pageaddr, rem_len, sysid, seg_size, blcksz)


def test_layout_size() -> None:
    assert struct.calcsize(LAYOUT) == LONG_HEADER_SIZE == 40


def test_parse_matches_real_bytes() -> None:
    # First 40 bytes of 000000010000000000000006 written by PostgreSQL 15
    # (initdb --wal-segsize=1; pg_controldata: system identifier below).
    raw = bytes.fromhex(
        "10 d1 07 00 01 00 00 00 00 00 60 00 00 00 00 00"
        " d9 00 00 00 00 00 00 00 2c 1c da 2a 94 13 07 6b"
        " 00 00 10 00 00 20 00 00"
    )
    header = parse_long_header(raw)
    assert header == WalHeader(
        magic=0xD110,
        info=0x0007,
        timeline=1,
        pageaddr=0x600000,
        system_identifier=SYSID,
        segment_size=MiB,
        block_size=8192,
        rem_len=0xD9,
    )
    assert header.pg_version == 15
    found = check_segment(header, expected_name=NAME, system_identifier=SYSID, segment_size=MiB)
    assert found == []


@given(
    magic=st.integers(0, 0xFFFF),
    info=st.integers(0, 0xFFFF).map(lambda i: i | XLP_LONG_HEADER),
    tli=st.integers(0, 0xFFFFFFFF),
    pageaddr=st.integers(0, (1 << 64) - 1),
    sysid=st.integers(0, (1 << 64) - 1),
    seg_size=st.sampled_from([1 << n for n in range(20, 31)]),
    blcksz=st.integers(0, 0xFFFFFFFF),
    trailing=st.binary(max_size=64),
)
def test_parse_round_trip(
    magic: int,
    info: int,
    tli: int,
    pageaddr: int,
    sysid: int,
    seg_size: int,
    blcksz: int,
    trailing: bytes,
) -> None:
    data = make_header(
        magic=magic,
        info=info,
        tli=tli,
        pageaddr=pageaddr,
        sysid=sysid,
        seg_size=seg_size,
        blcksz=blcksz,
    )
    header = parse_long_header(data + trailing)
    assert (header.magic, header.info, header.timeline, header.pageaddr) == (
        magic,
        info,
        tli,
        pageaddr,
    )
    assert (header.system_identifier, header.segment_size, header.block_size) == (
        sysid,
        seg_size,
        blcksz,
    )
    assert read_header(io.BytesIO(data + trailing)) == header


def test_parse_errors() -> None:
    with pytest.raises(ValueError, match="too short: got 39 bytes, need 40"):
        parse_long_header(make_header()[:39])
    with pytest.raises(ValueError, match="too short: got 0 bytes"):
        read_header(io.BytesIO(b""))
    with pytest.raises(ValueError, match="long-header flag missing"):
        parse_long_header(make_header(info=0x0001))
    with pytest.raises(ValueError, match="all zeros"):
        parse_long_header(bytes(8192))
    for bad_size in (0, 3 * MiB, MiB // 2, 2 << 30):
        with pytest.raises(ValueError, match="invalid segment size"):
            parse_long_header(make_header(seg_size=bad_size))


class ShortReads(io.RawIOBase):
    """A file object that hands out at most 7 bytes per read call."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        return self._buf.read(min(size, 7) if size >= 0 else 7)


def test_read_header_handles_short_reads() -> None:
    assert read_header(ShortReads(make_header())) == parse_long_header(make_header())


def test_known_magic() -> None:
    assert KNOWN_MAGIC[15] == 0xD110
    assert len(set(KNOWN_MAGIC.values())) == len(KNOWN_MAGIC)
    assert parse_long_header(make_header(magic=0xBEEF)).pg_version is None


def problems(data: bytes, name: str = NAME, **kwargs: int) -> list[str]:
    return check_segment(parse_long_header(data), expected_name=name, **kwargs)


def test_check_segment_ok_for_segment_and_partial() -> None:
    assert problems(make_header()) == []
    assert problems(make_header(), NAME + ".partial", segment_size=MiB) == []
    big = make_header(pageaddr=0x1600000000, seg_size=16 * MiB)
    assert problems(big, "000000010000001600000000") == []


def test_check_segment_recycled_pageaddr() -> None:
    # A recycled segment keeps the address of the segment it used to be.
    (problem,) = problems(make_header(pageaddr=4 * MiB), "000000010000000000000007")
    assert "page address 0/400000" in problem
    assert "0/700000" in problem


def test_check_segment_mismatches() -> None:
    (problem,) = problems(make_header(), system_identifier=SYSID + 1)
    assert "system identifier" in problem
    found = problems(make_header(), segment_size=16 * MiB)
    assert any("segment size 1048576 in header, expected 16777216" in p for p in found)
    # 16 MiB addressing of segment 6 is 0/6000000, not the header's 0/600000
    assert any("page address" in p for p in found)
    (problem,) = problems(make_header(tli=2))
    assert "timeline 2 in header" in problem
    (problem,) = problems(make_header(blcksz=1000))
    assert "block size" in problem
    (problem,) = problems(make_header(info=XLP_LONG_HEADER | 0x0100))
    assert "flag bits" in problem


def test_check_segment_accepts_every_flag_postgresql_15_defines() -> None:
    # XLP_FIRST_IS_OVERWRITE_CONTRECORD (0x0008): the segment's first page replaces a
    # continuation lost in a crash; PostgreSQL writes it, so it is not an unknown bit.
    assert problems(make_header(info=XLP_LONG_HEADER | 0x0008)) == []
    assert problems(make_header(info=0x000F)) == []
    (problem,) = problems(make_header(info=XLP_LONG_HEADER | 0x0010))
    assert "flag bits" in problem


def test_check_segment_allows_parent_timeline_at_switch() -> None:
    # The first segment of timeline 2 starts with pages copied from timeline 1.
    assert problems(make_header(tli=1), "000000020000000000000006") == []


def test_check_segment_index_not_valid_for_size() -> None:
    (problem,) = problems(make_header(seg_size=16 * MiB), "000000010000000000000100")
    assert "not a valid segment name" in problem


@pytest.mark.parametrize(
    "name", ["00000002.history", "000000010000000000000002.00000028.backup", "../x", NAME + "\n"]
)
def test_check_segment_rejects_non_segment_names(name: str) -> None:
    with pytest.raises(InvalidWalName):
        check_segment(parse_long_header(make_header()), expected_name=name)


@pytest.mark.skipif(not os.environ.get("WALVAULT_SAMPLE_WAL"), reason="WALVAULT_SAMPLE_WAL not set")
def test_real_sample_segment() -> None:
    """Check a real segment; its file name must be the segment's own name."""
    path = Path(os.environ["WALVAULT_SAMPLE_WAL"])
    with path.open("rb") as fileobj:
        header = read_header(fileobj)
    assert is_segment(path.name) or is_partial(path.name)
    assert valid_segment_size(header.segment_size)
    assert header.pg_version is not None
    assert header.timeline <= Segment.from_name(path.name).tli
    if is_segment(path.name):
        assert path.stat().st_size == header.segment_size
    assert check_segment(header, expected_name=path.name) == []
