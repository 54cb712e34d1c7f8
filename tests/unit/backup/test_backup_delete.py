"""delete, retention and WAL purge on a synthetic archive: what goes, what always stays."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from walsupply import make_server
from walvault.archive.catalogue import CatalogueEntry, append_entries, iter_entries
from walvault.archive.layout import archived_path
from walvault.archive.purge import is_obsolete, remove_wal_before
from walvault.backup import info as binfo
from walvault.backup.delete import DeleteRefused, delete_backup, oldest_needed_wal
from walvault.backup.info import DONE, FAILED, WAITING_FOR_WALS, BackupInfo
from walvault.backup.retention import enforce_retention
from walvault.config import ServerConfig
from walvault.config.parsers import parse_retention_policy

MiB = 1 << 20


def seg(tli: int, n: int) -> str:
    return f"{tli:08X}{0:08X}{n:08X}"


def archive(server: ServerConfig, names: list[str]) -> None:
    entries = []
    for name in names:
        path = archived_path(server, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_bytes(b"x")
        entries.append(CatalogueEntry(name, 1, 1.0))
    append_entries(server, entries)


def backup(server: ServerConfig, n: int, status: str = DONE, age_days: int = 0) -> str:
    backup_id = f"2026112{n}T000000"
    data = binfo.data_dir(server, backup_id)
    os.makedirs(data)
    Path(data, "PG_VERSION").write_text("15\n")
    end = datetime(2026, 11, 25, tzinfo=UTC) - timedelta(days=age_days)
    binfo.save(
        server,
        BackupInfo(
            backup_id,
            server.name,
            status=status,
            begin_wal=seg(1, 2 * n + 2),
            end_wal=seg(1, 2 * n + 3),
            xlog_segment_size=MiB,
            end_time=end,
        ),
    )
    return backup_id


def on_disk(server: ServerConfig) -> list[str]:
    found = []
    for _root, _dirs, files in os.walk(server.wals_directory):
        found += [f for f in files if not f.endswith("-xlog.db")]
    return sorted(found)


def catalogued(server: ServerConfig) -> list[str]:
    return sorted(e.name for e in iter_entries(server.xlogdb_path))


@pytest.fixture
def server(tmp_path: Path) -> ServerConfig:
    srv = make_server(tmp_path)
    names = [seg(1, n) for n in range(1, 12)] + [f"{seg(1, 5)}.00000028.backup", "00000002.history"]
    names += [f"{seg(1, 11)}.partial"]
    archive(srv, names)
    return srv


def test_is_obsolete() -> None:
    keep = seg(2, 4)
    assert is_obsolete(seg(1, 9), keep) and is_obsolete(seg(2, 3) + ".partial", keep)
    assert not is_obsolete(seg(2, 4), keep) and not is_obsolete(
        seg(2, 4) + ".00000028.backup", keep
    )
    assert not is_obsolete("00000001.history", keep) and not is_obsolete(seg(3, 1), keep)


def test_delete_oldest_removes_only_wal_before_the_next_backup(server: ServerConfig) -> None:
    first, second = backup(server, 0), backup(server, 1)  # begin 2 and 4
    lines: list[str] = []
    delete_backup(server, first, lines.append)
    assert not os.path.exists(os.path.dirname(binfo.data_dir(server, first)))
    assert not os.path.exists(binfo.info_path(server, first))
    gone = [seg(1, n) for n in range(1, 4)]
    assert not set(gone) & set(on_disk(server))
    assert on_disk(server) == catalogued(server)
    assert seg(1, 4) in on_disk(server) and "00000002.history" in on_disk(server)
    assert "Delete associated WAL segments:" in lines and f"\t{seg(1, 3)}" in lines
    assert lines[0] == f"Deleting backup {first} for server pg"
    assert lines[-1].startswith(f"Deleted backup {first} (start time: ")
    # the last backup: nothing is left to protect, so no WAL goes at all
    before = on_disk(server)
    delete_backup(server, second, lines.append)
    assert on_disk(server) == before


def test_minimum_redundancy_refuses(server: ServerConfig, tmp_path: Path) -> None:
    strict = make_server(tmp_path, minimum_redundancy=2)
    backup(strict, 0), backup(strict, 1)
    failed = backup(strict, 2, FAILED)
    with pytest.raises(DeleteRefused, match=r"minimum redundancy = 2, current redundancy = 2"):
        delete_backup(strict, "20261120T000000", print)
    delete_backup(strict, failed, print)  # a FAILED backup does not count


def test_waiting_backup_protects_its_wal() -> None:
    backups = [
        BackupInfo("20261121T000000", "pg", status=WAITING_FOR_WALS, begin_wal=seg(1, 3)),
        BackupInfo("20261122T000000", "pg", status=DONE, begin_wal=seg(1, 7)),
        BackupInfo("20261120T000000", "pg", status=FAILED, begin_wal=seg(1, 1)),
    ]
    assert oldest_needed_wal(backups) == seg(1, 3)
    assert oldest_needed_wal(backups[2:]) is None


def test_retention_redundancy_two(server: ServerConfig, tmp_path: Path) -> None:
    srv = make_server(tmp_path, retention_policy=parse_retention_policy("REDUNDANCY 2"))
    ids = [backup(srv, n, age_days=4 - n) for n in range(4)]  # begin 2, 4, 6, 8
    result = enforce_retention(srv, print)
    assert result.deleted == ids[1::-1]  # newest first: an incremental before its parent
    assert [b.backup_id for b in binfo.iter_backups(srv)] == ids[2:]
    assert min(n for n in on_disk(srv) if n[0] == "0" and "history" not in n) == seg(1, 6)
    assert "00000002.history" in on_disk(srv) and on_disk(srv) == catalogued(srv)
    again = enforce_retention(srv, print)
    assert again.deleted == [] and again.wal_removed == []


def test_stray_files_below_the_boundary_go_too(server: ServerConfig) -> None:
    stray = archived_path(server, seg(1, 1)).replace(seg(1, 1), f"{seg(1, 0)}.partial")
    Path(stray).write_bytes(b"y")  # not catalogued (e.g. Barman's rebuild dropped it)
    temp = os.path.join(os.path.dirname(stray), ".tmpfile.1.abcdef01.tmp")
    Path(temp).write_bytes(b"z")
    result = remove_wal_before(server, seg(1, 3))
    assert f"{seg(1, 0)}.partial" in result.removed and seg(1, 2) in result.removed
    assert os.path.exists(temp)  # someone's temporary file is not ours to remove
    assert seg(1, 3) in on_disk(server)
