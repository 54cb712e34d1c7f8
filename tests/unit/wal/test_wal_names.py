"""Tests for walvault.wal.names: name classification, Segment arithmetic and LSNs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walvault.errors import InvalidWalName
from walvault.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    MAX_LSN,
    Segment,
    WalKind,
    classify,
    format_lsn,
    hash_dir,
    is_any_wal_name,
    is_backup_label,
    is_history,
    is_partial,
    is_segment,
    lsn_to_name_offset,
    lsn_to_segment,
    parse_lsn,
    segment_range,
    segments_per_log,
    timeline_of,
    valid_segment_size,
    validate_wal_name,
)

MiB = 1 << 20
GiB = 1 << 30
SIZES = [MiB, 16 * MiB, GiB]
SEG = "000000010000000200000003"

all_sizes = st.sampled_from([1 << n for n in range(20, 31)])
key_sizes = st.sampled_from(SIZES)
u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
lsns = st.integers(min_value=0, max_value=MAX_LSN)


@st.composite
def segnos(draw: st.DrawFn, sizes: st.SearchStrategy[int] = all_sizes) -> tuple[int, int]:
    size = draw(sizes)
    return size, draw(st.integers(min_value=0, max_value=(1 << 64) // size - 1))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (SEG, WalKind.SEGMENT),
        ("00000001000000000000000A.partial", WalKind.PARTIAL),
        ("000000010000000000000002.00000028.backup", WalKind.BACKUP),
        ("0000000A.history", WalKind.HISTORY),
        ("FFFFFFFFFFFFFFFFFFFFFFFF", WalKind.SEGMENT),
    ],
)
def test_classify_valid(name: str, kind: WalKind) -> None:
    assert classify(name) is kind
    assert is_any_wal_name(name)
    assert validate_wal_name(name) == name
    checks = {
        WalKind.SEGMENT: is_segment,
        WalKind.PARTIAL: is_partial,
        WalKind.BACKUP: is_backup_label,
        WalKind.HISTORY: is_history,
    }
    for other, check in checks.items():
        assert check(name) is (other is kind)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../../etc/passwd",
        "/abs/path",
        "/tmp/" + SEG,
        "wals/" + SEG,
        "00000001000000000000000G",
        SEG + "\n",
        "0000000A.history\n",
        SEG + ".partial\n",
        "\n" + SEG,
        " " + SEG,
        SEG + " ",
        "0000000A000000B2000000C3".lower(),
        "00000001000000000000000a",
        "0000000a.history",
        "00000001000000000000000A.Partial",
        "00000001000000000000000A.PARTIAL",
        "000000010000000000000002.0000002b.backup",
        "000000010000000000000002.backup",
        "00000001000000000000000",
        "0000000100000000000000001",
        "000000010000000000000001.partial.partial",
        "0000001.history",
        "00000001.history.partial",
        "00000001000000000000000１",  # full-width digit one
        "000000010000000000000001\x00",
    ],
)
def test_classify_rejects(name: str) -> None:
    assert classify(name) is None
    assert not is_any_wal_name(name)
    with pytest.raises(InvalidWalName) as info:
        validate_wal_name(name)
    assert info.value.exit_code == 3


def test_invalid_name_message_escapes_control_characters() -> None:
    with pytest.raises(InvalidWalName) as info:
        validate_wal_name(SEG + "\n")
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"'{SEG}\\n' is not a valid WAL file name (expected 24 hex digits, optionally with "
        ".partial or .<8 hex>.backup, or <8 hex>.history)"
    )


def test_invalid_name_message_is_bounded_and_printable() -> None:
    with pytest.raises(InvalidWalName) as info:
        validate_wal_name("\x1b[31m" + "A" * 5000 + "\udcff")
    message = str(info.value)
    assert "\x1b" not in message
    assert message.isascii()
    assert len(message) < 400


@given(u32, u32, u32)
def test_segment_name_round_trip(tli: int, log: int, seg: int) -> None:
    segment = Segment(tli, log, seg)
    assert is_segment(segment.name)
    assert Segment.from_name(segment.name) == segment
    assert Segment.from_name(segment.name + ".partial") == segment
    assert Segment.from_name(segment.name + ".00000028.backup") == segment
    assert str(segment) == segment.name


def test_segment_from_name_rejects_history_and_garbage() -> None:
    with pytest.raises(InvalidWalName):
        Segment.from_name("00000002.history")
    with pytest.raises(InvalidWalName):
        Segment.from_name("../" + SEG)


@pytest.mark.parametrize("bad", [-1, 1 << 32])
def test_segment_fields_are_32_bit(bad: int) -> None:
    with pytest.raises(ValueError):
        Segment(bad, 0, 0)
    with pytest.raises(ValueError):
        Segment(1, bad, 0)
    with pytest.raises(ValueError):
        Segment(1, 0, bad)


def test_segments_per_log_follows_postgresql() -> None:
    assert segments_per_log(16 * MiB) == 256
    assert segments_per_log(MiB) == 4096
    assert segments_per_log(GiB) == 4
    with pytest.raises(ValueError):
        segments_per_log(3 * MiB)


@pytest.mark.parametrize(
    ("size", "last", "first_of_next"),
    [
        (16 * MiB, "0000000100000000000000FF", "000000010000000100000000"),
        (MiB, "000000010000000000000FFF", "000000010000000100000000"),
        (GiB, "000000010000000000000003", "000000010000000100000000"),
    ],
)
def test_next_crosses_log_boundary(size: int, last: str, first_of_next: str) -> None:
    assert Segment.from_name(last).next(size).name == first_of_next
    assert Segment.from_name(first_of_next).previous(size).name == last


@given(segnos(key_sizes), u32)
def test_segno_round_trip(size_segno: tuple[int, int], tli: int) -> None:
    size, segno = size_segno
    segment = Segment.from_segno(tli, segno, size)
    assert segment.seg < segments_per_log(size)
    assert segment.segno(size) == segno
    assert segment.to_lsn(size) == segno * size
    assert Segment.from_name(segment.name) == segment


@given(segnos(), u32)
def test_next_previous_inverse(size_segno: tuple[int, int], tli: int) -> None:
    size, segno = size_segno
    segment = Segment.from_segno(tli, segno, size)
    if segno > 0:
        assert segment.previous(size).next(size) == segment
        assert segment.previous(size) < segment
    if segno < (1 << 64) // size - 1:
        assert segment.next(size).previous(size) == segment
        assert segment.next(size).segno(size) == segno + 1


@pytest.mark.parametrize("size", SIZES)
def test_next_previous_at_extremes(size: int) -> None:
    with pytest.raises(ValueError):
        Segment(1, 0, 0).previous(size)
    last = Segment.from_segno(1, (1 << 64) // size - 1, size)
    assert last.log == 0xFFFFFFFF
    with pytest.raises(ValueError):
        last.next(size)


def test_segment_index_too_big_for_size() -> None:
    segment = Segment.from_name("000000010000000000000100")
    assert segment.segno(MiB) == 256
    with pytest.raises(ValueError):
        segment.segno(16 * MiB)
    with pytest.raises(ValueError):
        segment.next(16 * MiB)


def test_hash_dir_and_timeline() -> None:
    assert hash_dir(SEG) == "0000000100000002"
    assert hash_dir(SEG + ".partial") == "0000000100000002"
    assert hash_dir(SEG + ".00000028.backup") == "0000000100000002"
    assert hash_dir("0000000A.history") == ""
    assert timeline_of("0000000A.history") == 10
    assert timeline_of("0000001F" + SEG[8:]) == 31
    for bad in ("../../etc/passwd", SEG + "\n"):
        with pytest.raises(InvalidWalName):
            hash_dir(bad)
        with pytest.raises(InvalidWalName):
            timeline_of(bad)


def test_parse_and_format_lsn_examples() -> None:
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert parse_lsn("0/0") == 0
    assert parse_lsn("ffffffff/FFFFFFFF") == MAX_LSN
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert format_lsn(0) == "0/0"


@pytest.mark.parametrize(
    "text",
    ["", "16", "/1", "1/", "16/B374D848\n", " 0/0", "0x1/0", "123456789/0", "1/G", "-1/0", "1//2"],
)
def test_parse_lsn_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_lsn(text)


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_format_lsn_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        format_lsn(bad)


@given(lsns)
def test_lsn_round_trip(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn
    assert parse_lsn(format_lsn(lsn).lower()) == lsn


@given(lsns, all_sizes, u32)
def test_lsn_to_segment_contains_lsn(lsn: int, size: int, tli: int) -> None:
    segment = lsn_to_segment(lsn, tli, size)
    start = segment.to_lsn(size)
    assert start <= lsn < start + size
    name, offset = lsn_to_name_offset(lsn, tli, size)
    assert name == segment.name
    assert start + offset == lsn


def test_lsn_to_name_offset_matches_postgresql() -> None:
    # SELECT * FROM pg_walfile_name_offset('16/B374D848') with 16 MiB segments
    assert lsn_to_name_offset(parse_lsn("16/B374D848"), 1, DEFAULT_SEGMENT_SIZE) == (
        "0000000100000016000000B3",
        0x74D848,
    )
    boundary = parse_lsn("0/3000000")
    assert lsn_to_segment(boundary, 1, 16 * MiB).name == "000000010000000000000003"
    prev = lsn_to_segment(boundary, 1, 16 * MiB, prev_on_boundary=True)
    assert prev.name == "000000010000000000000002"
    assert lsn_to_segment(0, 1, 16 * MiB, prev_on_boundary=True).name == "0" * 7 + "1" + "0" * 16


def test_segment_range() -> None:
    begin = Segment.from_name("0000000100000000000000FE")
    end = Segment.from_name("000000010000000100000001")
    names = [s.name for s in segment_range(begin, end, 16 * MiB)]
    assert names == [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    assert list(segment_range(begin, begin, 16 * MiB)) == [begin]
    assert list(segment_range(end, begin, 16 * MiB)) == []
    with pytest.raises(ValueError):
        segment_range(begin, Segment(2, 1, 1), 16 * MiB)


@given(segnos(key_sizes), st.integers(min_value=0, max_value=300))
def test_segment_range_length(size_segno: tuple[int, int], extra: int) -> None:
    size, segno = size_segno
    last = min(segno + extra, (1 << 64) // size - 1)
    items = list(
        segment_range(Segment.from_segno(1, segno, size), Segment.from_segno(1, last, size), size)
    )
    assert len(items) == last - segno + 1
    assert [s.segno(size) for s in items] == list(range(segno, last + 1))


def test_valid_segment_size() -> None:
    assert all(valid_segment_size(1 << n) for n in range(20, 31))
    for bad in (0, -MiB, MiB // 2, 2 * GiB, 3 * MiB, MiB + 1, True):
        assert not valid_segment_size(bad)


def test_segment_replace_checks_like_the_constructor() -> None:
    seg = Segment(1, 2, 3)
    assert seg._replace(seg=4) == Segment(1, 2, 4)
    assert type(seg._replace(tli=2)) is Segment
    with pytest.raises(ValueError, match="out of range"):
        seg._replace(log=1 << 32)
    with pytest.raises(TypeError):
        seg._replace(seg="4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no field"):
        seg._replace(segment=4)
