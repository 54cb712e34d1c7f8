"""The one strict parser of backup labels: ``backup_label`` and backup history files."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walfiles import MiB, backup_history
from walvault.backup.label import parse_backup_history, parse_backup_label
from walvault.wal.names import lsn_to_segment

SEG16 = 16 * MiB

# What PostgreSQL 15 wrote (pg_basebackup of a throwaway cluster, 16 MiB segments), with the
# STOP line PostgreSQL 15 places second and names with XLByteToPrevSeg.
REAL_NAME = "000000010000000000000002.00000028.backup"
REAL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-25 16:00:39 UTC
LABEL: pg_basebackup base backup
START TIMELINE: 1
STOP TIME: 2026-11-25 16:00:40 UTC
STOP TIMELINE: 1
"""


def test_a_real_history_file() -> None:
    label = parse_backup_history(REAL_NAME, REAL)
    assert (label.start_lsn, label.stop_lsn, label.checkpoint_lsn) == (
        0x2000028,
        0x2000100,
        0x2000060,
    )
    assert (label.start_wal, label.stop_wal) == (REAL_NAME[:24], REAL_NAME[:24])
    assert (label.start_timeline, label.stop_timeline, label.label) == (
        1,
        1,
        "pg_basebackup base backup",
    )
    assert parse_backup_history(REAL_NAME, REAL.encode(), segment_size=SEG16) == label
    with pytest.raises(ValueError, match="is not in file"):
        parse_backup_history(REAL_NAME, REAL, segment_size=MiB)  # 0/2000028 is in 0x20 then


def test_backup_label_is_the_start_half() -> None:
    text = "".join(line + "\n" for line in REAL.splitlines() if not line.startswith("STOP"))
    label = parse_backup_label(text)
    assert label.start_lsn == 0x2000028 and label.stop_lsn is None
    with pytest.raises(ValueError, match="no STOP WAL LOCATION, STOP TIME, STOP TIMELINE line"):
        parse_backup_history(REAL_NAME, text)


@pytest.mark.parametrize("pg16", [False, True])
@pytest.mark.parametrize("seg_size", [MiB, SEG16, 1 << 30])
def test_stop_on_a_segment_boundary(pg16: bool, seg_size: int) -> None:
    """15 names the segment before the boundary, 16 the one after: both are PostgreSQL's."""
    name, text = backup_history(3 * seg_size + 0x28, 5 * seg_size, seg_size=seg_size, pg16=pg16)
    label = parse_backup_history(name, text, segment_size=seg_size)
    assert (
        label.stop_wal == lsn_to_segment(5 * seg_size, 1, seg_size, prev_on_boundary=not pg16).name
    )
    assert parse_backup_history(name, text) == label  # the size found by agreement


def test_newer_lines_labels_with_newlines_and_timeline_switch() -> None:
    name, text = backup_history(0x2000028, 0x3000100, tli=2, stop_tli=3, label="")
    text += "INCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: 1\nNEW KEY: later\n"
    label = parse_backup_history(name, text)
    assert name.startswith("00000003") and label.label == ""
    assert (label.start_timeline, label.stop_timeline) == (2, 3)
    name, text = backup_history(0x2000028, 0x3000100, label="two\nlines: of label")
    assert parse_backup_history(name, text).label == "two\nlines: of label"


NAME, GOOD = backup_history(0x2000028, 0x3000100, seg_size=SEG16)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n", ""), "no START WAL"),
        (("LABEL: pg_basebackup base backup\n", ""), "no LABEL line"),
        (("STOP TIMELINE: 1\n", ""), "no STOP TIMELINE"),
        (("LABEL:", "LABEL: x\nLABEL:"), "LABEL given twice"),
        (("BACKUP METHOD", "garbage\nBACKUP METHOD"), "line 4: 'garbage' is not a 'KEY: value'"),
        (("0/2000060", "0/20000G0"), "CHECKPOINT LOCATION '0/20000G0' is not an LSN"),
        (("0/2000060", "0/2000000"), "CHECKPOINT LOCATION is before START"),
        (("(file 000000010000000000000002)", "(file 000000010000000000000003)"), "is not in"),
        (("(file 000000010000000000000002)", "(file 000000020000000000000002)"), "START TIMELINE"),
        (("(file 000000010000000000000003)", "(file 000000010000000000000002)"), "STOP WAL"),
        (("STOP WAL LOCATION: 0/3000100", "STOP WAL LOCATION: 0/2000030"), "STOP WAL"),
        (("START TIMELINE: 1", "START TIMELINE: 0"), "not a timeline ID"),
        (("START TIMELINE: 1", "START TIMELINE: 99999999999"), "not a timeline ID"),
        (("STOP TIMELINE: 1", "STOP TIMELINE: 2"), "STOP TIMELINE 2"),
        (("streamed", "rsync"), "BACKUP METHOD 'rsync' is not one of"),
        (("primary", "elsewhere"), "BACKUP FROM"),
        (("START TIME: 2026-11-25 16:00:39 UTC", "START TIME: yesterday"), "START TIME"),
        (("LABEL: pg_basebackup", "LABEL: pg\0basebackup"), "NUL byte"),
    ],
)
def test_junk_is_refused(change: tuple[str, str], problem: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        parse_backup_history(NAME, GOOD.replace(old, new, 1))


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("000000010000000000000003.00000028.backup", "its name does not match"),
        ("000000020000000000000002.00000028.backup", "its name does not match"),
        ("000000010000000000000002.00000029.backup", "offset 00000029"),
        ("000000010000000000000002", "not a backup history file name"),
    ],
)
def test_name_must_match_content(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_backup_history(name, GOOD)


def test_known_segment_size_must_agree() -> None:
    name, text = backup_history(0x2800028, 0x2900000, seg_size=SEG16)  # 0/2800028: segment 2
    parse_backup_history(name, text, segment_size=SEG16)
    with pytest.raises(ValueError, match="is not in file"):
        parse_backup_history(name, text, segment_size=MiB)  # with 1 MiB it is segment 0x28


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([MiB << n for n in range(11)]),
    st.integers(min_value=0, max_value=(1 << 40)),
    st.integers(min_value=0, max_value=(1 << 34)),
    st.integers(min_value=1, max_value=0xFFFFFFF0),
    st.integers(min_value=0, max_value=3),
    st.booleans(),
)
def test_every_label_postgresql_writes_is_accepted(
    seg_size: int, start: int, length: int, tli: int, switches: int, pg16: bool
) -> None:
    name, text = backup_history(
        start, start + 0x38 + length, tli=tli, stop_tli=tli + switches, seg_size=seg_size, pg16=pg16
    )
    assert parse_backup_history(name, text, segment_size=seg_size).start_lsn == start
    assert parse_backup_history(name, text).start_lsn == start


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_labels_raise_only_value_error(data: st.DataObject) -> None:
    raw = bytearray(GOOD.encode())
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        where = data.draw(st.integers(min_value=0, max_value=len(raw)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and where < len(raw):
            raw[where] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif action == "cut":
            del raw[where : where + data.draw(st.integers(min_value=1, max_value=40))]
        else:
            raw[where:where] = data.draw(st.binary(max_size=20))
    try:
        parse_backup_history(NAME, bytes(raw))
    except ValueError as exc:
        assert "\n" not in str(exc)
