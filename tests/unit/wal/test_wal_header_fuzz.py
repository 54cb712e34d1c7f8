"""Fuzzing the WAL-header parser and checks: random and mutated headers give ValueError or a
list of problems, never another exception."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from walvault.wal.header import LONG_HEADER_SIZE, check_segment, parse_long_header, read_header
from walvault.wal.pagecheck import header_problems, unpack_long_header, whole_segment_problem

MiB = 1 << 20
NAME = "000000010000000000000006"
VALID = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, 1, 6 * MiB, 0, 7301234567890123456, MiB, 8192)
SIZES = st.one_of(st.none(), st.sampled_from([MiB << n for n in range(11)]), st.integers())
NAMES = st.one_of(
    st.just(NAME),
    st.just(NAME + ".partial"),
    st.text(alphabet="0123456789ABCDEF", min_size=24, max_size=24),
    st.text(alphabet="0123456789ABCDEF", min_size=24, max_size=24).map(lambda n: n + ".partial"),
)
FUZZ = settings(max_examples=500, deadline=None)


def _mutated(data: st.DataObject) -> bytes:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        where = data.draw(st.integers(min_value=0, max_value=LONG_HEADER_SIZE - 1))
        how = data.draw(st.sampled_from(["bit", "byte", "ff", "zero"]))
        if how == "bit":
            raw[where] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif how == "byte":
            raw[where] = data.draw(st.integers(min_value=0, max_value=255))
        else:
            raw[where] = 0xFF if how == "ff" else 0
    cut = data.draw(st.integers(min_value=0, max_value=LONG_HEADER_SIZE + 8))
    return bytes(raw[:cut]) if cut < LONG_HEADER_SIZE else bytes(raw) + bytes(cut - 40)


def _exercise(head: bytes, name: str, sysid: int | None, size: int | None, total: int) -> None:
    problem = whole_segment_problem(head, total)
    assert problem is None or (isinstance(problem, str) and "\n" not in problem)
    try:
        header = parse_long_header(head)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert unpack_long_header(memoryview(bytearray(head))) == tuple(header)
    for problems in (
        check_segment(header, expected_name=name, system_identifier=sysid, segment_size=size),
        header_problems(header, name, system_identifier=sysid, segment_size=size),
    ):
        assert all(isinstance(p, str) and p and "\n" not in p for p in problems)


@FUZZ
@given(st.binary(max_size=80), NAMES, st.none() | st.integers(0, 2**64 - 1), SIZES, st.integers())
def test_random_headers(
    head: bytes, name: str, sysid: int | None, size: int | None, total: int
) -> None:
    _exercise(head, name, sysid, size, total)


@FUZZ
@given(st.data(), NAMES, st.none() | st.integers(0, 2**64 - 1), SIZES)
def test_mutated_headers(
    data: st.DataObject, name: str, sysid: int | None, size: int | None
) -> None:
    head = _mutated(data)
    _exercise(head, name, sysid, size, data.draw(st.integers(min_value=0, max_value=1 << 31)))


@FUZZ
@given(st.data())
def test_read_header_on_short_reads(data: st.DataObject) -> None:
    head = _mutated(data)
    chunks = data.draw(st.lists(st.integers(min_value=1, max_value=8), max_size=50))

    class Trickle:
        def __init__(self) -> None:
            self.rest, self.sizes = head, list(chunks)

        def read(self, size: int = -1, /) -> bytes:
            step = min(size, self.sizes.pop(0) if self.sizes else size)
            out, self.rest = self.rest[:step], self.rest[step:]
            return out

    try:
        header = read_header(Trickle())
    except ValueError:
        return
    assert header == parse_long_header(head)
