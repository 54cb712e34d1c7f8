"""The whole job on every PostgreSQL major from 14 to 18, with its own and with the newest clients.

One scenario per major (``pg_major``): a replication slot made by ``receive-wal
--create-slot``; streaming with the server's own pg_receivewal; ``check`` all OK (with
``pg_receivexlog compatible``); a backup with its own pg_basebackup; then the same archive
carried on by PostgreSQL 18's pg_receivewal (resuming the first one's ``.partial``) and a
backup with 18's pg_basebackup, as the issue's DBA runs one walvault for servers of every
major. Both backups are recovered with ``--get-wal`` and started with the server's own
binaries: every row written before, between and after them is back (count and md5 of all
rows), so the WAL both receivers wrote replays. Version-gated SQL runs on the way:
``switch-wal --force`` (``pg_checkpoint`` exists from 15: on 14 the monitoring user is
refused with the documented message, not an SQL error), ``status``, ``replication-status``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from matrixkit import (
    Receiver,
    add_rows,
    archive_everything,
    assert_check_ok,
    backup,
    fingerprint,
    matrix_server,
    recover_and_start,
)

from pgharness import LATEST_MAJOR


def _create_slot(pg: Any, wv: Any) -> None:
    result = wv.run("receive-wal", "--create-slot", "pg")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = pg.sql(
        "SELECT slot_type, restart_lsn IS NOT NULL, active FROM pg_replication_slots "
        "WHERE slot_name = 'walvault'"
    )
    assert rows == [("physical", True, False)], rows  # WAL reserved at once, not in use yet


def _switch_wal_force(pg: Any, wv: Any) -> None:
    forced = wv.run("switch-wal", "--force", "pg")
    if pg.major >= 15:
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert " has been closed on server 'pg'" in forced.stdout, forced
    else:  # no pg_checkpoint role before 15: only a superuser may CHECKPOINT
        assert forced.returncode == 1, forced.stdout + forced.stderr
        assert forced.stderr.strip() == (
            "ERROR: walvault switch-wal --force requires superuser rights or the "
            "'pg_checkpoint' role (user 'walvault')"
        ), forced.stderr


def _status_and_replication(pg: Any, wv: Any) -> None:
    status = wv.run("status", "pg")
    assert status.returncode == 0, status.stdout + status.stderr
    version_num = pg.scalar("SHOW server_version_num")
    assert f"PostgreSQL version: {version_num}\n" in status.stdout, status.stdout
    replication = wv.run("replication-status", "pg")
    assert replication.returncode == 0, replication.stdout + replication.stderr
    assert "walvault_receive_wal" in replication.stdout, replication.stdout


def test_stream_backup_recover_with_own_and_latest_clients(
    pg_major: int, pg_factory: Any, pg_bindir_of: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    pg = pg_factory("primary", major=pg_major)
    own, latest = pg.bindir, pg_bindir_of(LATEST_MAJOR)
    assert pg.major == pg_major and pg.scalar("SHOW server_version_num")[:2] == str(pg_major)
    wv = walvault_factory({"pg": matrix_server(pg, own, create_slot="manual")})
    _create_slot(pg, wv)
    receiver = Receiver(wv, pg)
    receiver.start(own)
    add_rows(pg, 1, 2000)
    first = backup(wv)  # the server's own pg_basebackup
    assert_check_ok(wv)
    add_rows(pg, 2001, 4000)
    _switch_wal_force(pg, wv)
    archive_everything(wv, pg)

    # the same archive carried on by the newest client programs
    receiver.stop()
    wv.write({"pg": matrix_server(pg, latest, create_slot="manual")})
    receiver.start(latest)
    assert_check_ok(wv)
    add_rows(pg, 4001, 6000)
    second = backup(wv)  # 18's pg_basebackup
    add_rows(pg, 6001, 8000)
    pg.sql("UPDATE t SET pad = 'changed' WHERE id % 97 = 0")
    pg.sql("DELETE FROM t WHERE id % 101 = 0")
    _status_and_replication(pg, wv)
    archive_everything(wv, pg)
    expected = fingerprint(pg)
    assert expected[0] == 8000 - 8000 // 101

    for backup_id, name in ((first, "from_own"), (second, "from_latest")):
        restored = recover_and_start(pg, wv, backup_id, tmp_path / name, name)
        assert restored.bindir == own
        assert (restored.data_dir / "PG_VERSION").read_text() == f"{pg_major}\n"
        assert fingerprint(restored) == expected, name
        restored.stop()
    receiver.stop()
    print(f"matrix: PostgreSQL {pg_major} scenario took {time.monotonic() - started:.1f} s")
