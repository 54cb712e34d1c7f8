"""Tests for walvault.wal.history: timeline history file names and parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walvault.wal.history import HistoryEntry, history_name, parse_history
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
