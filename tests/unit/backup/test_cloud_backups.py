"""Backups in object storage on the in-memory store: keys, where backup.info lives, removal.

The wire (moto, real PostgreSQL) is tests/integration/test_s3_backup*.py; this is the logic.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from walsupply import make_server
from walvault.backup import cloudstore
from walvault.backup import info as binfo
from walvault.backup.cloudstore import CloudBackups, backup_compression
from walvault.backup.delete import delete_backup
from walvault.backup.info import DONE, FAILED, STARTED, WAITING_FOR_WALS, BackupInfo
from walvault.backup.walcheck import check_waiting_backups
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.storage.memory import MemoryStorage

ID = "20261206T120000"


class Recording(MemoryStorage):
    """The memory store, remembering each delete request's keys and abort_incomplete call."""

    def __init__(self) -> None:
        super().__init__("bucket")
        self.deletes: list[list[str]] = []
        self.aborted: list[str] = []

    def delete(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        self.deletes.append(batch)
        super().delete(batch)

    def abort_incomplete(self, prefix: str) -> int:
        self.aborted.append(prefix)
        return 0


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Recording:
    shared = Recording()
    monkeypatch.setattr(cloudstore, "open_backup_storage", lambda server: shared)
    return shared


@pytest.fixture
def server(tmp_path: Path) -> ServerConfig:
    return make_server(tmp_path, basebackups_directory="s3://bucket/path", compression="zstd")


def test_keys_are_barman_clouds(tmp_path: Path) -> None:
    backups = CloudBackups(make_server(tmp_path), MemoryStorage())
    assert backups.info_key(ID) == f"pg/base/{ID}/backup.info"
    assert backups.tar_key(ID, "data", "gzip") == f"pg/base/{ID}/data.tar.gz"
    assert backups.tar_key(ID, "16385", None) == f"pg/base/{ID}/16385.tar"
    assert backups.tar_key(ID, "data", "zstd", part=1) == f"pg/base/{ID}/data_0001.tar.zst"
    for bad in ("latest", "2026", "../20261206T120000"):
        with pytest.raises(ValueError, match="not a backup id"):
            backups.prefix(bad)
    with pytest.raises(ValueError, match="no tar name"):
        backups.tar_key(ID, "../data", None)


def test_backup_compression_prefers_backup_compression(server: ServerConfig) -> None:
    assert backup_compression(server) == "zstd"
    assert backup_compression(server._replace(backup_compression="gzip")) == "gzip"
    assert backup_compression(server._replace(backup_compression="none")) is None


def test_files_in_order_with_codecs_and_refusals(server: ServerConfig, store: Recording) -> None:
    backups = CloudBackups(server)
    for name in ("16390.tar.zst", "data_0001.tar.gz", "backup.info", "data.tar.gz", "16385.tar"):
        store.put(f"pg/base/{ID}/{name}", b"x")
    files = [(f.name, f.part, f.compression) for f in backups.files(ID)]
    assert files == [
        ("data", 0, "gzip"),
        ("data", 1, "gzip"),
        ("16385", 0, None),
        ("16390", 0, "zstd"),
    ]
    store.put(f"pg/base/{ID}/data.tar.snappy", b"x")
    with pytest.raises(WalvaultError, match="not a backup file walvault can read"):
        backups.files(ID)
    other = "20261206T130000"
    store.put(f"pg/base/{other}/backup.info", b"x")
    with pytest.raises(WalvaultError, match=r"has no data\.tar"):
        backups.files(other)


def info(status: str, backup_id: str = ID) -> BackupInfo:
    return BackupInfo(
        backup_id,
        "pg",
        status=status,
        begin_wal="000000010000000000000002",
        end_wal="000000010000000000000002",
        xlog_segment_size=16 << 20,
    )


def test_backup_info_is_local_until_the_data_is_complete(
    server: ServerConfig, store: Recording
) -> None:
    binfo.save(server, info(STARTED))
    local = Path(binfo.info_path(server, ID))
    assert local.exists() and not list(store.list(""))
    assert [b.status for b in binfo.iter_backups(server)] == [STARTED]

    store.put(f"pg/base/{ID}/data.tar.zst", b"tar")
    binfo.save(server, info(WAITING_FOR_WALS))
    assert not local.exists()  # the bucket's record is the backup's from now on
    reader = store.open(f"pg/base/{ID}/backup.info")
    assert reader is not None and b"status=WAITING_FOR_WALS\n" in reader.read()
    assert binfo.load(server, ID).status == WAITING_FOR_WALS
    binfo.save(server, info(FAILED))  # check-backup found a hole: the bucket says so
    assert not local.exists() and binfo.load(server, ID).status == FAILED

    other = "20261206T130000"
    binfo.save(server, info(STARTED, other))
    binfo.save(server, info(FAILED, other))  # a copy that failed: never in the bucket
    assert Path(binfo.info_path(server, other)).exists()
    assert not list(store.list(f"pg/base/{other}/"))
    assert [b.backup_id for b in binfo.iter_backups(server)] == [ID, other]


def test_a_malformed_backup_info_in_the_bucket_is_a_named_problem(
    server: ServerConfig, store: Recording
) -> None:
    store.put(f"pg/base/{ID}/backup.info", b"status=DONE\nno equals sign here\n")
    good, bad = binfo.scan_backups(server)
    assert good == [] and len(bad) == 1
    assert (
        bad[0].path == f"memory://bucket/pg/base/{ID}/backup.info" or "backup.info" in bad[0].path
    )
    assert "malformed" in bad[0].message


def test_remove_aborts_uploads_then_deletes_tars_before_backup_info(
    server: ServerConfig, store: Recording
) -> None:
    for name in ("backup.info", "data.tar.zst", "16385.tar.zst"):
        store.put(f"pg/base/{ID}/{name}", b"x")
    store.put(f"pg/walvault-meta/backups/{ID}/backup_manifest", b"{}")
    assert CloudBackups(server).remove(ID) == 3
    assert store.aborted == [f"pg/base/{ID}/"]
    assert store.deletes == [  # the manifest with the tars, backup.info last
        [
            f"pg/base/{ID}/16385.tar.zst",
            f"pg/base/{ID}/data.tar.zst",
            f"pg/walvault-meta/backups/{ID}/backup_manifest",
            f"pg/base/{ID}/backup.info",
        ]
    ]
    assert not list(store.list(""))


def test_delete_removes_the_bucket_objects(server: ServerConfig, store: Recording) -> None:
    store.put(f"pg/base/{ID}/data.tar.zst", b"x")
    binfo.save(server, info(DONE))
    delete_backup(server, ID, lambda _line: None, purge_wal=False)
    assert not list(store.list("")) and list(binfo.iter_backups(server)) == []


def test_cron_fails_an_abandoned_upload_and_cleans_it(
    server: ServerConfig, store: Recording
) -> None:
    binfo.save(server, info(STARTED))
    store.put(f"pg/base/{ID}/data.tar.zst", b"half")  # what a killed backup left complete
    spool = Path(server.backup_directory, "spool", ID)
    spool.mkdir(parents=True)
    (spool / "16385.tar").write_bytes(b"left by a killed backup with tablespaces")
    lines: list[Any] = []
    check_waiting_backups(server, lines.append)
    assert binfo.load(server, ID).status == FAILED
    assert store.aborted == [f"pg/base/{ID}/"] and not list(store.list(""))
    assert not spool.exists()
    assert lines == [
        f"Backup {ID} of server pg is FAILED: the backup process ended before the backup "
        "was complete"
    ]


def test_retention_deletes_obsolete_backups_from_the_bucket(
    server: ServerConfig, store: Recording
) -> None:
    from walvault.backup.retention import enforce_retention
    from walvault.config.parsers import parse_retention_policy

    policy = server._replace(retention_policy=parse_retention_policy("REDUNDANCY 1"))
    ids = ["20261206T100000", "20261206T110000"]
    for backup_id in ids:
        store.put(f"pg/base/{backup_id}/data.tar.zst", b"x")
        binfo.save(policy, info(DONE, backup_id))
    result = enforce_retention(policy, lambda _line: None)
    assert result.deleted == [ids[0]]
    assert [i.key for i in store.list("")] == [
        f"pg/base/{ids[1]}/backup.info",
        f"pg/base/{ids[1]}/data.tar.zst",
    ]
    assert [b.backup_id for b in binfo.iter_backups(policy)] == [ids[1]]
