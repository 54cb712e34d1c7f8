"""Tests for walvault.wal.history: timeline history file names and parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walfiles import history_text
from walvault.wal.history import HistoryEntry, history_name, parse_history, parse_history_file
from walvault.wal.names import format_lsn, is_history, timeline_of

# What PostgreSQL 15 wrote on promotion of a throwaway cluster (00000002.history).
REAL_TLI2 = "1\t0/6007E0\tno recovery target specified\n"


def test_history_name() -> None:
    assert history_name(1) == "00000001.history"
    assert history_name(0x1F) == "0000001F.history"
    assert history_name(0xFFFFFFFF) == "FFFFFFFF.history"
    for bad in (0, -1, 1 << 32):
        with pytest.raises(ValueError):
            history_name(bad)


@given(st.integers(min_value=1, max_value=0xFFFFFFFF))
def test_history_name_round_trip(tli: int) -> None:
    name = history_name(tli)
    assert is_history(name)
    assert timeline_of(name) == tli


def test_parse_real_file() -> None:
    assert parse_history(REAL_TLI2, timeline=2) == [
        HistoryEntry(1, 0x6007E0, "no recovery target specified")
    ]
    assert parse_history(REAL_TLI2.encode()) == parse_history(REAL_TLI2)


def test_parse_multiple_entries_comments_and_blanks() -> None:
    text = (
        "# a comment\n"
        "\n"
        "1\t0/3000158\tno recovery target specified\n"
        "   \n"
        "  # indented comment\n"
        "2\t0/5000000\tbefore 2024-01-02 03:04:05.678+00\r\n"
        '4\t1/A0\tat restore point "x\ty"\n'
        "5 2/0\n"
    )
    entries = parse_history(text, timeline=6)
    assert entries == [
        HistoryEntry(1, 0x3000158, "no recovery target specified"),
        HistoryEntry(2, 0x5000000, "before 2024-01-02 03:04:05.678+00"),
        HistoryEntry(4, 0x1000000A0, 'at restore point "x\ty"'),
        HistoryEntry(5, 0x200000000, ""),
    ]
    assert str(entries[0]) == "1\t0/3000158\tno recovery target specified"


def test_parse_empty() -> None:
    assert parse_history("") == []
    assert parse_history("# only a comment\n\n") == []


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("garbage\n", 1),
        ("1\n", 1),
        ("# ok\n1\t0/10\treason\nx\t0/20\tbad\n", 3),
        ("1\t0/10\n\n1\t0/20\tsame tli again\n", 3),
        ("2\t0/10\n1\t0/20\tdecreasing tli\n", 2),
        ("1\t0/20\n2\t0/10\tswitch point goes back\n", 2),
        ("1\t16/B374D848Z\tbad lsn\n", 1),
        ("1\t123456789/0\tlsn too wide\n", 1),
        ("0\t0/10\tzero tli\n", 1),
        ("4294967296\t0/10\ttli too big\n", 1),
        ("-1\t0/10\tnegative\n", 1),
        ("0x1\t0/10\thex tli\n", 1),
    ],
)
def test_parse_rejects_with_line_number(text: str, line: int) -> None:
    with pytest.raises(ValueError, match=rf"^line {line}: "):
        parse_history(text)


def test_parse_checks_own_timeline() -> None:
    with pytest.raises(ValueError, match=r"^line 1: parent timeline 2 is not below"):
        parse_history("2\t0/10\treason\n", timeline=2)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=1000),
            st.integers(min_value=0, max_value=1 << 40),
            st.text(alphabet=st.characters(categories=["L", "N", "P"]), max_size=20),
        ),
        max_size=10,
    )
)
def test_parse_round_trip(rows: list[tuple[int, int, str]]) -> None:
    tlis = sorted({tli for tli, _, _ in rows})
    lsns = sorted(lsn for _, lsn, _ in rows)[: len(tlis)]
    reasons = [reason for _, _, reason in rows][: len(tlis)]
    entries = [HistoryEntry(t, lsn, r) for t, lsn, r in zip(tlis, lsns, reasons, strict=True)]
    text = "".join(f"{e.parent_tli}\t{format_lsn(e.switch_lsn)}\t{e.reason}\n" for e in entries)
    assert parse_history(text) == entries


def test_history_files_as_postgresql_writes_them() -> None:
    assert parse_history_file("00000002.history", REAL_TLI2.encode()) == [
        HistoryEntry(1, 0x6007E0, "no recovery target specified")
    ]
    # writeTimeLineHistory copies the parent's file, then a newline, then its own line
    third = history_text((1, 0x6007E0, "no recovery target specified"), (2, 0x9000000, "x"))
    assert "\n\n" in third
    assert [e.parent_tli for e in parse_history_file("00000003.history", third)] == [1, 2]
    assert len(parse_history_file("0000000A.history", "7\t0/0\t" + "r" * 1017 + "\n")) == 1


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("00000001.history", "", "timeline 1 has no history file"),
        ("00000002.history", "", "no timeline switch line"),
        ("00000002.history", "# only a comment\n\n", "no timeline switch line"),
        ("00000002.history", "2\t0/10\treason\n", "parent timeline 2 is not below"),
        ("00000003.history", "1\t0/10\tre\0ason\n", "NUL byte"),
        ("00000002.history", "1\t0/10\t" + "r" * 1018 + "\n", "longer than the 1023 bytes"),
        ("00000002.history", "garbage\n", "malformed timeline history line 'garbage'"),
        ("00000002.backup", "1\t0/10\n", "not a timeline history file name"),
        ("2.history", "1\t0/10\n", "not a timeline history file name"),
    ],
)
def test_history_files_postgresql_would_refuse_or_misread(
    name: str, text: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_history_file(name, text.encode())


def test_problems_are_one_line() -> None:
    with pytest.raises(ValueError) as caught:
        parse_history_file("00000002.history", "x\x1b[2J\rinjected " + "y" * 200 + "\n")
    assert "\x1b" not in str(caught.value) and "\r" not in str(caught.value)
    assert len(str(caught.value)) < 200


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=0xFFFFFFFF))
def test_random_bytes_raise_only_value_error(data: bytes, tli: int) -> None:
    try:
        entries = parse_history_file(history_name(tli), data)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert entries and all(e.parent_tli < tli for e in entries)
