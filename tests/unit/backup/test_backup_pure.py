"""Pure backup logic: backup_label/manifest, check-backup verdicts, retention decisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walvault.backup.info import (
    DONE,
    FAILED,
    WAITING_FOR_WALS,
    BackupInfo,
    Tablespace,
    dumps,
    format_tablespaces,
    loads,
    parse_tablespaces,
)
from walvault.backup.label import (
    backup_position,
    parse_backup_label,
    parse_manifest_ranges,
)
from walvault.backup.retention import OBSOLETE, VALID, obsolete_backups, retention_report
from walvault.backup.walcheck import evaluate, required_wals
from walvault.config.parsers import parse_retention_policy

MiB = 1 << 20
SEG16 = 16 << 20  # the label examples use 16 MiB segments
LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-25 16:00:39 UTC
LABEL: pg_basebackup base backup
START TIMELINE: 1
"""


def manifest(*ranges: tuple[int, str, str]) -> str:
    items = [{"Timeline": t, "Start-LSN": s, "End-LSN": e} for t, s, e in ranges]
    return json.dumps({"PostgreSQL-Backup-Manifest-Version": 1, "WAL-Ranges": items})


def test_label_and_manifest_give_begin_and_end() -> None:
    label = parse_backup_label(LABEL)
    assert label.start_lsn == 0x2000028 and label.start_timeline == 1
    assert label.start_time == datetime(2026, 11, 25, 16, 0, 39, tzinfo=UTC)
    pos = backup_position(
        label, parse_manifest_ranges(manifest((1, "0/2000028", "0/3000100"))), SEG16
    )
    assert (pos.begin_wal, pos.end_wal) == ("000000010000000000000002", "000000010000000000000003")
    assert (pos.begin_offset, pos.end_offset) == (0x28, 0x100)


def test_end_lsn_on_a_segment_boundary_belongs_to_the_previous_segment() -> None:
    label = parse_backup_label(LABEL)
    pos = backup_position(
        label, parse_manifest_ranges(manifest((1, "0/2000028", "0/3000000"))), SEG16
    )
    assert pos.end_wal == "000000010000000000000002" and pos.end_offset == 0


def test_backup_spanning_timelines_and_no_manifest() -> None:
    label = parse_backup_label(LABEL)
    text = manifest((2, "0/2800000", "0/3000100"), (1, "0/2000028", "0/2800000"))
    pos = backup_position(label, parse_manifest_ranges(text), SEG16)
    assert pos.begin_wal.startswith("00000001") and pos.end_wal.startswith("00000002")
    no_manifest = backup_position(label, None, SEG16, end_hint=0x2000100)
    assert no_manifest.end_wal == "000000010000000000000002"
    with pytest.raises(ValueError):
        backup_position(label, None, SEG16)
    with pytest.raises(ValueError):
        parse_backup_label("LABEL: nothing")


def _info(backup_id: str, status: str = DONE, **kw: object) -> BackupInfo:
    base: dict[str, object] = {
        "begin_wal": "000000010000000000000002",
        "end_wal": "000000010000000000000004",
        "xlog_segment_size": MiB,
    }
    base.update(kw)
    return BackupInfo(backup_id, "pg", status=status, **base)  # type: ignore[arg-type]


def test_check_backup_verdicts() -> None:
    info = _info("20261125T160039", WAITING_FOR_WALS)
    every = lambda name: True  # noqa: E731
    assert evaluate(info, None, every).status == WAITING_FOR_WALS
    assert evaluate(info, "000000010000000000000001", every).status == WAITING_FOR_WALS
    assert evaluate(info, "000000010000000000000003", every).status == WAITING_FOR_WALS
    assert evaluate(info, "000000010000000000000004", every).status == DONE
    assert evaluate(info, "000000010000000000000009", every).status == DONE
    hole = evaluate(info, "000000010000000000000009", lambda n: not n.endswith("3"))
    assert hole.status == FAILED
    assert hole.error == (
        "At least one WAL file is missing. The first missing WAL file is 000000010000000000000003"
    )
    spanning = evaluate(
        _info("x", WAITING_FOR_WALS, end_wal="000000020000000000000004"), None, every
    )
    assert spanning.status == FAILED and "starts in timeline 1 and ends in timeline 2" in str(
        spanning.error
    )
    assert required_wals(info) == [f"00000001000000000000000{i}" for i in (2, 3, 4)]


def test_backup_info_round_trips_with_barman_values() -> None:
    info = _info(
        "20261125T160039",
        begin_time=datetime(2026, 11, 25, 16, 0, 39, 347679, tzinfo=UTC),
        version=150018,
        tablespaces=format_tablespaces([Tablespace("tbs", 16385, "/srv/tbs")]),
        error="x=y",
    )
    text = dumps(info)
    assert "begin_time=2026-11-25 16:00:39.347679+00:00\n" in text
    assert "tablespaces=[('tbs', 16385, '/srv/tbs')]\n" in text  # what Barman writes and reads
    assert "backup_name=None\n" in text and "status=DONE\n" in text
    assert loads(text, info.backup_id, "pg") == info
    assert parse_tablespaces(info.tablespaces) == [Tablespace("tbs", 16385, "/srv/tbs")]
    older = "[Tablespace(name='tbs', oid=16385, location='/srv/tbs')]"  # walvault before
    assert parse_tablespaces(older) == [Tablespace("tbs", 16385, "/srv/tbs")]
    assert parse_tablespaces("None") == [] and parse_tablespaces("[('x', 'bad', 3)]") == []


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _aged(days: float, backup_id: str, status: str = DONE) -> BackupInfo:
    return BackupInfo(backup_id, "pg", status=status, end_time=NOW - timedelta(days=days))


def test_redundancy_keeps_the_newest_done_backups() -> None:
    backups = [_aged(4 - i, f"2026112{i}T000000") for i in range(4)]
    backups.append(_aged(0, "20261129T000000", FAILED))
    policy = parse_retention_policy("REDUNDANCY 2")
    assert obsolete_backups(backups, policy, 0, NOW) == ["20261120T000000", "20261121T000000"]
    assert obsolete_backups(backups, policy, 3, NOW) == ["20261120T000000"]
    assert obsolete_backups(backups, None, 0, NOW) == []


def test_recovery_window_keeps_the_backup_before_the_window() -> None:
    backups = [_aged(d, f"2026112{i}T000000") for i, d in enumerate((20, 10, 8, 3, 1))]
    report = retention_report(backups, parse_retention_policy("RECOVERY WINDOW OF 1 WEEK"), 0, NOW)
    assert report == {
        "20261120T000000": OBSOLETE,
        "20261121T000000": OBSOLETE,
        "20261122T000000": VALID,  # ended 8 days ago: a recovery to 7 days ago starts here
        "20261123T000000": VALID,
        "20261124T000000": VALID,
    }


@given(
    ages=st.lists(st.floats(min_value=0, max_value=100), min_size=0, max_size=12),
    n=st.integers(min_value=1, max_value=6),
    minimum=st.integers(min_value=0, max_value=6),
    window=st.booleans(),
)
def test_retention_properties(ages: list[float], n: int, minimum: int, window: bool) -> None:
    backups = [
        _aged(age, f"2026{i:04d}T000000") for i, age in enumerate(sorted(ages, reverse=True))
    ]
    text = f"RECOVERY WINDOW OF {n} DAYS" if window else f"REDUNDANCY {n}"
    obsolete = obsolete_backups(backups, parse_retention_policy(text), minimum, NOW)
    kept = [b for b in backups if b.backup_id not in obsolete]
    # never below minimum_redundancy, never the newest, obsolete ones are the oldest
    assert len(kept) >= min(len(backups), max(minimum, 1))
    assert not backups or backups[-1].backup_id not in obsolete
    assert obsolete == sorted(obsolete) and all(o < k.backup_id for o in obsolete for k in kept)
    if window:  # something ended at or before the window start is kept, if any existed
        start = NOW - timedelta(days=n)
        before = [b for b in backups if b.end_time and b.end_time < start]
        assert not before or any(b.end_time and b.end_time < start for b in kept)
    else:
        assert len(kept) == min(len(backups), max(n, minimum))
