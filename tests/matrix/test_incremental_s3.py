"""Incremental backups in object storage (moto's S3 server), PostgreSQL 17.

The WAL stays on local disk; the chain goes to the bucket as full backups do (barman-cloud's
keys, ``backup.info`` last), each manifest under ``<server>/walvault-meta/backups/``.  recover
downloads the chain into a staging directory beside the destination, combines it, removes
the staging, and PostgreSQL replays to every row.  Deleting the chain removes all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matrixkit import Receiver, add_rows, archive_everything, backup, fingerprint, matrix_server

from walvault.backup import info as binfo
from walvault.backup.cloudstore import CloudBackups
from wvharness import wait_for

PATH = "walvault-test"


def test_an_incremental_chain_in_the_bucket_recovers_every_row(
    pg_factory: Any,
    walvault_factory: Any,
    moto_server: Any,
    s3_bucket: str,
    aws_env: None,
    tmp_path: Path,
) -> None:
    pg = pg_factory("primary", major=17, extra_conf={"summarize_wal": True})
    options = matrix_server(
        pg,
        pg.bindir,
        basebackups_directory=f"s3://{s3_bucket}/{PATH}",
        aws_endpoint_url=moto_server.endpoint,
        compression="zstd",
    )
    wv = walvault_factory({"pg": options})
    Receiver(wv, pg).start(pg.bindir)
    add_rows(pg, 1, 10000)
    full = backup(wv)
    add_rows(pg, 10001, 11000)
    first = backup(wv, "--incremental", "latest")
    pg.sql("UPDATE t SET pad = 'changed' WHERE id % 50 = 0")
    second = backup(wv, "--incremental", "latest")
    add_rows(pg, 11001, 12000)
    archive_everything(wv, pg)
    expected = fingerprint(pg)

    server = wv.server()
    cloud = CloudBackups(server)
    for backup_id in (full, first, second):
        assert cloud.read_manifest(backup_id) is not None, backup_id
    assert binfo.load(server, second).parent_backup_id == first
    assert binfo.load(server, full).children == [first]
    sizes = {b: binfo.load(server, b).size or 0 for b in (full, first, second)}
    assert sizes[first] * 3 < sizes[full] and sizes[second] * 3 < sizes[full], sizes

    target = tmp_path / "restored"
    result = wv.run("recover", "pg", second, str(target / "data"), "--get-wal", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pg_combinebackup" in result.stdout, result.stdout
    assert not (tmp_path / "restored" / "data.chain").exists(), "the staging copy stayed"
    restored = pg.sibling("restored", target)
    restored._write_settings()
    restored.start(timeout=120)
    wait_for(lambda: not restored.is_in_recovery(), what="end of recovery", timeout=180)
    assert fingerprint(restored) == expected
    restored.stop()

    gone = wv.run("delete", "--with-incrementals", "pg", full)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    left = [o.key for o in cloud.storage.list("pg/base/")]
    left += [o.key for o in cloud.storage.list("pg/walvault-meta/backups/")]
    assert left == [], left
    assert list(binfo.iter_backups(wv.server())) == []
