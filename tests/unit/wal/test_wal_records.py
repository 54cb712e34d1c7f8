"""The WAL record walker on segments built record by record (tests/walbuilder.py).

Real PostgreSQL WAL goes through the same walker in tests/integration/test_verify.py; here
are the corner cases: records cut by page and segment ends (headers included), switches,
torn tails, overwritten continuations, and every kind of damage.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walbuilder import BLCKSZ, MIB, OVERWRITE, SYSID, WalBuilder, record_bytes
from walvault.wal.records import CONTINUES, END, SWITCH, Carry, SegmentWalk, walk_segment


def walk_all(
    segments: list[tuple[str, bytes]], *, partial_last: bool = False, **kwargs: object
) -> list[SegmentWalk]:
    """Walk segments in order, each with the previous one's carry."""
    walks: list[SegmentWalk] = []
    carry: Carry | None = None
    for index, (name, data) in enumerate(segments):
        partial = partial_last and index == len(segments) - 1
        walk = walk_segment(
            data,
            name,
            segment_size=MIB,
            carry=carry,
            partial=partial,
            **kwargs,  # type: ignore[arg-type]
        )
        walks.append(walk)
        carry = walk.carry
        if carry is None:
            break
    return walks


def busy_builder(seed: int = 1, count: int = 600) -> WalBuilder:
    """Records of mixed sizes over a few segments: small ones, page-sized, multi-page."""
    rng = random.Random(seed)
    builder = WalBuilder()
    for _ in range(count):
        builder.add(rng.choice([0, 10, 50, 100, 300, 8000, 9000, 20000]))
    return builder


def test_a_healthy_chain_over_segments_pages_and_a_switch() -> None:
    builder = busy_builder()
    switch = builder.switch()
    builder.add(100)
    last = builder.add(5)
    walks = walk_all(builder.segments(), partial_last=True, system_identifier=SYSID)
    assert all(w.ok for w in walks), [w.problems for w in walks]
    assert [w.verdict for w in walks[:-1]].count(SWITCH) == 1
    assert walks[-2].verdict == SWITCH and walks[-2].valid_until == (switch + 24 + 7) & ~7
    assert all(w.verdict == CONTINUES for w in walks[:-2])
    assert walks[-1].verdict == END and walks[-1].end_reason.endswith("(zeros)")
    assert walks[-1].valid_until == (last + 24 + 5 + 7) & ~7
    assert sum(w.records for w in walks) == len(builder.starts)


def test_zeros_inside_a_complete_segment_are_a_problem() -> None:
    builder = busy_builder(count=50)
    walks = walk_all(builder.segments())  # the last segment is not a .partial
    assert walks[-1].verdict == END
    (problem,) = walks[-1].problems
    assert "(zeros)" in problem and walks[-1].end_lsn == walks[-1].valid_until


def test_records_cut_at_every_position_near_a_segment_end() -> None:
    # A record may start in the last 8 bytes of a segment (its header cut after xl_tot_len),
    # end exactly at the segment end, or carry its body into the next segment.
    cut_headers = set()
    for gap in range(0, 80, 8):
        builder = WalBuilder()
        while builder.pos < builder.base + MIB - 3000:
            builder.add(1000)
        target = builder.base + MIB - gap
        builder.add(target - builder.pos - 24)  # ends ``gap`` bytes before the segment's end
        assert builder.pos == target
        builder.add(40)
        builder.add(5)
        walks = walk_all(builder.segments(), partial_last=True)
        assert all(w.ok for w in walks), (gap, [w.problems for w in walks])
        assert sum(w.records for w in walks) == len(builder.starts), gap
        carry = walks[0].carry
        assert carry is not None
        cut_headers.add(len(carry.pending_head))
    assert {0, 8, 16, 24} <= cut_headers  # 0: no record cut (it ended at the boundary)


def test_a_record_longer_than_a_segment() -> None:
    builder = WalBuilder()
    builder.add(10)
    big = builder.add(int(2.5 * MIB))
    builder.add(10)
    walks = walk_all(builder.segments(), partial_last=True)
    assert all(w.ok for w in walks)
    assert [w.verdict for w in walks] == [CONTINUES, CONTINUES, END]
    assert walks[1].records == 0 and walks[1].valid_until is None
    assert walks[1].carry is not None and walks[1].carry.pending_lsn == big
    assert sum(w.records for w in walks) == 3


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 1 << bit
    return bytes(damaged)


def test_a_flipped_bit_in_a_record_is_a_crc_mismatch_at_that_record() -> None:
    builder = busy_builder(count=200)
    segments = builder.segments()
    target = builder.starts[120]
    index = (target - builder.base) // MIB
    name, data = segments[index]
    segments[index] = (name, flip(data, target % MIB + 30, 3))
    walks = walk_all(segments)
    bad = walks[-1]
    assert len(walks) == index + 1 and bad.verdict == END
    (problem,) = bad.problems
    assert "CRC mismatch" in problem and f"{target >> 32:X}/{target & 0xFFFFFFFF:X}" in problem
    assert bad.end_lsn == target
    assert bad.valid_until == (builder.ends[119] + 7) & ~7


def test_a_broken_xl_prev_link() -> None:
    builder = WalBuilder()
    first = builder.add(10)
    builder.add(10)
    builder.prev = first  # the third record points two records back
    third = builder.add(10)
    (walk,) = walk_all(builder.segments())
    (problem,) = walk.problems
    assert "xl_prev" in problem and walk.end_lsn == third
    # In a .partial, a last record that does not link is where the WAL ends (PostgreSQL
    # reads it so: old bytes of a recycled file); a record linking past it is damage.
    (walk,) = walk_all(builder.segments(), partial_last=True)
    assert walk.ok and walk.end_lsn == third
    builder.add(10)
    (walk,) = walk_all(builder.segments(), partial_last=True)
    assert "xl_prev" in walk.problems[0]


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("magic", "magic 0x"),
        ("address", "unexpected page address"),
        ("contrecord", "no contrecord flag"),
        ("rem_len", "bytes of it remain"),
    ],
)
def test_damaged_page_headers_on_the_path(what: str, message: str) -> None:
    builder = WalBuilder()
    builder.add(100)
    builder.add(BLCKSZ * 2)  # flows over two page boundaries
    builder.add(10)
    (name, data), *_ = builder.segments()
    page = BLCKSZ  # the second page, continuing the big record
    if what == "magic":
        data = data[:page] + b"\x00\xd0" + data[page + 2 :]
    elif what == "address":
        data = flip(data, page + 9)
    elif what == "contrecord":
        data = flip(data, page + 2, 0)
    else:
        data = flip(data, page + 16, 4)
    (walk,) = walk_all([(name, data)], partial_last=True)
    (problem,) = walk.problems
    assert message in problem, problem


def test_a_page_that_continues_a_record_nobody_started() -> None:
    builder = WalBuilder()
    while builder.pos < builder.base + BLCKSZ - 200:
        builder.add(8)
    builder.add(BLCKSZ - builder.pos % BLCKSZ - 24)  # ends exactly at the page's end
    builder.page_flags[builder.base + BLCKSZ] = 0x0001  # contrecord flag without a record
    builder.add(10)
    (walk,) = walk_all(builder.segments(), partial_last=True)
    (problem,) = walk.problems
    assert "continues a record" in problem


def test_a_segment_that_does_not_follow_or_belongs_elsewhere() -> None:
    segments = busy_builder(count=600).segments()
    first = walk_segment(segments[0][1], segments[0][0], segment_size=MIB)
    skipped = walk_segment(segments[2][1], segments[2][0], segment_size=MIB, carry=first.carry)
    assert "does not follow the previous segment" in skipped.problems[0]
    foreign = walk_segment(
        segments[1][1], segments[1][0], segment_size=MIB, carry=first.carry,
        system_identifier=SYSID + 1,
    )  # fmt: skip
    assert "system identifier" in foreign.problems[0]
    truncated = walk_segment(
        segments[1][1][: MIB // 2], segments[1][0], segment_size=MIB, carry=first.carry
    )
    assert "524288 bytes, not one 1048576-byte segment" in truncated.problems[0]
    misnamed = walk_segment(segments[1][1], segments[2][0], segment_size=MIB)
    assert "page address" in misnamed.problems[0]


def test_the_continuation_must_match_what_the_previous_segment_cut() -> None:
    builder = WalBuilder()
    while builder.pos < builder.base + MIB - 500:
        builder.add(1000)
    builder.add(3000)  # cut by the segment end
    builder.add(10)
    one, two = builder.segments()
    carry = walk_segment(one[1], one[0], segment_size=MIB).carry
    assert carry is not None and carry.pending_left
    without_flag = flip(two[1], 2, 0)  # xlp_info loses XLP_FIRST_IS_CONTRECORD
    walk = walk_segment(without_flag, two[0], segment_size=MIB, carry=carry, partial=True)
    assert "is not continued" in walk.problems[0]
    wrong_len = flip(two[1], 16, 2)
    walk = walk_segment(wrong_len, two[0], segment_size=MIB, carry=carry, partial=True)
    assert "bytes to come" in walk.problems[0]
    # the continuation's bytes are covered by the CRC started in the first segment
    damaged = flip(two[1], 40 + 100)
    walk = walk_segment(damaged, two[0], segment_size=MIB, carry=carry)
    assert "CRC mismatch" in walk.problems[0]


def test_an_overwritten_continuation_is_followed() -> None:
    # The record cut by the end of segment 3 was lost in a crash: PostgreSQL starts segment
    # 4 with XLP_FIRST_IS_OVERWRITE_CONTRECORD and a record pointing at the last complete one.
    builder = WalBuilder()
    while builder.pos < builder.base + MIB - 2500:
        builder.add(1000)
    last_complete = builder.starts[-1]
    builder.add(3000)
    (one, _two) = builder.segments()
    new = WalBuilder(start_segno=4, page_flags={4 * MIB: OVERWRITE})
    new.prev = last_complete
    new.add(16, rmid=0, info=0xD0)
    new.add(10)
    walks = walk_all([one, *new.segments()], partial_last=True)
    assert all(w.ok for w in walks), [w.problems for w in walks]
    assert walks[1].records == 2


def test_a_torn_last_record_ends_a_partial_quietly() -> None:
    builder = WalBuilder()
    for _ in range(20):
        builder.add(100)
    torn = builder.add(500)
    (name, data), *_ = builder.segments()
    cut = torn % MIB + 200
    data = data[:cut] + bytes(MIB - cut)
    (walk,) = walk_all([(name, data)], partial_last=True)
    assert walk.ok and walk.verdict == END and walk.end_lsn == torn
    assert walk.valid_until == (builder.ends[-2] + 7) & ~7
    (walk,) = walk_all([(name, data)])  # the same bytes as a complete segment: a problem
    assert "CRC mismatch" in walk.problems[0]


def test_start_lsn_and_resynchronisation() -> None:
    builder = busy_builder(count=600)
    segments = builder.segments()
    assert len(segments) > 2
    name, data = segments[1]
    seg_end = (builder.start_segno + 2) * MIB
    inside = [
        start
        for start, end in zip(builder.starts, builder.ends, strict=True)
        if start // MIB == builder.start_segno + 1 and end <= seg_end
    ]
    start = inside[5]
    walk = walk_segment(data, name, segment_size=MIB, start_lsn=start)
    assert walk.ok and walk.records == len(inside) - 5
    resync = walk_segment(data, name, segment_size=MIB)
    assert resync.ok and resync.records == len(inside)
    with pytest.raises(ValueError, match="not a record position"):
        walk_segment(data, name, segment_size=MIB, start_lsn=builder.base + MIB + 3)


def test_record_bytes_matches_postgresql_crc_convention() -> None:
    # CRC-32C of the payload, then of the header up to xl_crc (PostgreSQL's order)
    from crc32c import crc32c

    data = record_bytes(0x1234, b"abc")
    assert int.from_bytes(data[20:24], "little") == crc32c(data[:20], crc32c(b"abc"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 12000), min_size=5, max_size=150),
    victim=st.integers(0, 10**6),
    bit=st.integers(0, 7),
)
def test_any_flipped_bit_inside_a_record_is_caught(sizes: list[int], victim: int, bit: int) -> None:
    builder = WalBuilder()
    for size in sizes:
        builder.add(size)
    builder.add(10)  # a last record after the victims, so none of them is the torn tail
    segments = builder.segments()
    walks = walk_all(segments, partial_last=True)
    assert all(w.ok for w in walks)
    assert sum(w.records for w in walks) == len(builder.starts)
    index = victim % (len(builder.starts) - 1)
    start, end = builder.starts[index], builder.ends[index]
    lsn = start + victim % (end - start)
    if lsn % BLCKSZ < 40:  # a page header inside a long record: its own test covers it
        lsn = start
    seg = (lsn - builder.base) // MIB
    name, data = segments[seg]
    segments[seg] = (name, flip(data, lsn % MIB, bit))
    damaged = walk_all(segments, partial_last=True)
    assert any(w.problems for w in damaged), (index, lsn)


def test_a_start_at_a_page_s_address_means_the_record_after_its_header() -> None:
    builder = WalBuilder()
    while builder.pos < builder.base + 3 * BLCKSZ - 200:
        builder.add(8)
    builder.add(BLCKSZ - builder.pos % BLCKSZ - 24)  # ends exactly at the page's end
    first = builder.add(10)  # right after the next page's header
    builder.add(10)
    assert first % BLCKSZ == 24
    (name, data), *_ = builder.segments()
    from_page = walk_segment(data, name, segment_size=MIB, start_lsn=first - 24, partial=True)
    from_record = walk_segment(data, name, segment_size=MIB, start_lsn=first, partial=True)
    assert from_page == from_record and from_page.ok and from_page.records == 2
