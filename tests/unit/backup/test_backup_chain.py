"""Chains of incremental backups: Barman's fields, the chain walk, retention by chains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walvault.backup.chain import ancestors, descendants, root_id
from walvault.backup.combine import combine_command, tablespace_moves
from walvault.backup.info import DONE, BackupInfo, dumps, loads
from walvault.backup.retention import OBSOLETE, VALID, obsolete_backups, retention_report
from walvault.config.parsers import parse_retention_policy
from walvault.errors import WalvaultError

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
BARMAN_INCREMENTAL = """backup_id=20261201T000000
status=DONE
mode=postgres
parent_backup_id=20261130T000000
children_backup_ids=20261202T000000,20261203T000000
summarize_wal=on
data_checksums=off
cluster_size=31457280
"""


def _b(backup_id: str, parent: str | None = None, days: float = 0) -> BackupInfo:
    return BackupInfo(
        backup_id, "pg", status=DONE, parent_backup_id=parent, end_time=NOW - timedelta(days)
    )


def test_barmans_chain_fields_are_read_and_written_back() -> None:
    info = loads(BARMAN_INCREMENTAL, "20261201T000000", "pg")
    assert info.is_incremental and info.backup_type == "incremental"
    assert info.parent_backup_id == "20261130T000000"
    assert info.children == ["20261202T000000", "20261203T000000"]
    assert (info.summarize_wal, info.data_checksums, info.cluster_size) == ("on", "off", 31457280)
    text = dumps(info)
    for line in BARMAN_INCREMENTAL.splitlines():
        assert line + "\n" in text
    assert loads(text, "20261201T000000", "pg") == info
    full = loads(dumps(BackupInfo("20261130T000000", "pg")), "20261130T000000", "pg")
    assert full.backup_type == "full" and full.children == []
    assert "parent_backup_id=None\n" in dumps(full)  # Barman's spelling of "none"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("parent_backup_id=../../etc", "parent_backup_id: not a backup id"),
        ("children_backup_ids=20261202T000000,x", "children_backup_ids: not backup ids"),
    ],
)
def test_a_bad_chain_field_is_refused(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        loads(f"status=DONE\n{line}\n", "20261201T000000", "pg")


def test_the_chain_walk() -> None:
    backups = [
        _b("20261101T000000"),
        _b("20261102T000000", "20261101T000000"),
        _b("20261103T000000", "20261102T000000"),
        _b("20261104T000000", "20261101T000000"),
        _b("20261105T000000"),
    ]
    last = backups[2]
    assert ancestors(backups, last) == ["20261102T000000", "20261101T000000"]
    assert root_id(backups, last) == "20261101T000000"
    assert root_id(backups, backups[4]) == "20261105T000000"
    assert [b.backup_id for b in descendants(backups, "20261101T000000")] == [
        "20261104T000000",
        "20261103T000000",
        "20261102T000000",
    ]
    assert descendants(backups, "20261103T000000") == []
    broken = [b for b in backups if b.backup_id != "20261102T000000"]
    assert root_id(broken, last) == "20261103T000000"  # the oldest link there is


def test_redundancy_counts_chains() -> None:
    backups = [
        _b("20261101T000000"),
        _b("20261102T000000", "20261101T000000"),
        _b("20261103T000000"),
        _b("20261104T000000", "20261103T000000"),
        _b("20261105T000000", "20261104T000000"),
    ]
    report = retention_report(backups, parse_retention_policy("REDUNDANCY 1"), 0, NOW)
    assert report == {
        "20261101T000000": OBSOLETE,
        "20261102T000000": OBSOLETE,
        "20261103T000000": VALID,
        "20261104T000000": VALID,
        "20261105T000000": VALID,
    }
    two = retention_report(backups, parse_retention_policy("REDUNDANCY 2"), 0, NOW)
    assert set(two.values()) == {VALID}
    minimum = retention_report(backups, parse_retention_policy("REDUNDANCY 1"), 2, NOW)
    assert minimum["20261101T000000"] == VALID


def test_a_recovery_window_keeps_the_chain_of_a_kept_incremental() -> None:
    backups = [
        _b("20261101T000000", days=40),
        _b("20261102T000000", days=30),
        _b("20261103T000000", days=20),
        _b("20261104T000000", "20261102T000000", days=2),
    ]
    policy = parse_retention_policy("RECOVERY WINDOW OF 7 DAYS")
    report = retention_report(backups, policy, 0, NOW)
    assert report == {
        "20261101T000000": OBSOLETE,
        "20261102T000000": VALID,  # the parent of an incremental inside the window
        "20261103T000000": VALID,  # the newest ended before the window
        "20261104T000000": VALID,
    }
    obsolete = obsolete_backups(backups[:2], parse_retention_policy("REDUNDANCY 1"), 0, NOW)
    assert obsolete == ["20261101T000000"]
    kept = retention_report(
        backups, parse_retention_policy("REDUNDANCY 1"), 0, NOW, {"20261104T000000": "full"}
    )
    assert kept["20261102T000000"] == VALID and kept["20261104T000000"] == "KEEP:FULL"
    assert kept["20261101T000000"] == OBSOLETE


@given(
    parents=st.lists(st.integers(min_value=-1, max_value=20), min_size=1, max_size=12),
    ages=st.lists(st.floats(min_value=0, max_value=60), min_size=12, max_size=12),
    n=st.integers(min_value=1, max_value=4),
    window=st.booleans(),
)
def test_no_kept_backup_has_an_obsolete_ancestor(
    parents: list[int], ages: list[float], n: int, window: bool
) -> None:
    backups: list[BackupInfo] = []
    for i, parent in enumerate(parents):
        parent_id = backups[parent % i].backup_id if parent >= 0 and i else None
        backups.append(_b(f"2026{i + 1:04d}T000000", parent_id, days=sorted(ages)[-1 - i]))
    text = f"RECOVERY WINDOW OF {n} DAYS" if window else f"REDUNDANCY {n}"
    obsolete = set(obsolete_backups(backups, parse_retention_policy(text), 0, NOW))
    for backup in backups:
        if backup.backup_id not in obsolete:
            assert not obsolete & set(ancestors(backups, backup)), (backup, obsolete)


def test_combine_maps_tablespaces_out_of_the_backup(tmp_path: Path) -> None:
    spaces = "[('extra', 16390, '/srv/tbs')]"
    last = BackupInfo("20261102T000000", "pg", status=DONE, tablespaces=spaces)
    data = tmp_path / last.backup_id / "data"
    (data / "pg_tblspc").mkdir(parents=True)
    copy = tmp_path / last.backup_id / "16390"
    (data / "pg_tblspc" / "16390").symlink_to(copy)
    moves = tablespace_moves(str(data), last, "/restore/data", {})
    assert moves == {"16390": (str(copy), "/restore/data_tablespaces/16390")}
    relocated = tablespace_moves(str(data), last, "/restore/data", {"16390": "/fast/t=1"})
    argv = combine_command("pg_combinebackup", ["/b/1/data", str(data)], "/restore/data", relocated)
    assert argv == [
        "pg_combinebackup",
        "--output=/restore/data",
        f"--tablespace-mapping={copy}=/fast/t\\=1",
        "/b/1/data",
        str(data),
    ]
    (data / "pg_tblspc" / "16390").unlink()
    with pytest.raises(WalvaultError, match="has no tablespace link"):
        tablespace_moves(str(data), last, "/restore/data", {})
