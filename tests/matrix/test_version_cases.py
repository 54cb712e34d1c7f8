"""Where PostgreSQL majors behave differently: an older client, 18's checksums, 17's summaries.

* A pg_receivewal or pg_basebackup older than the server (14's against 18) is refused by
  ``check`` (``pg_receivexlog compatible`` FAILED, with both versions and the servers the
  client does stream), by ``receive-wal`` and by ``backup``, each with one ``ERROR:`` line
  that says which client to use, and nothing is started or left behind.
* PostgreSQL 18's initdb turns data checksums on by default: pg_basebackup then verifies every
  page it copies, so a page rotted on disk fails the backup (FAILED, the reason recorded)
  instead of being copied into it, as it still is on 17, where checksums are off by default.
* PostgreSQL 17's WAL summarizer (``summarize_wal = on``, what incremental backups need):
  streaming, a backup and ``recover --get-wal`` work with it on, the primary holds summaries
  from the backup's start on, and the recovered cluster's own summarizer carries on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from matrixkit import (
    Receiver,
    add_rows,
    archive_everything,
    backup,
    check_lines,
    fingerprint,
    matrix_server,
    recover_and_start,
)

from pgharness import LATEST_MAJOR, MATRIX_MAJORS, wait_until
from walvault.backup import info as binfo
from walvault.wal.names import parse_lsn

OLDEST_MAJOR = min(MATRIX_MAJORS)


def test_an_older_client_is_refused_by_check_receive_wal_and_backup(
    pg_factory: Any, pg_bindir_of: Any, walvault_factory: Any
) -> None:
    old = pg_bindir_of(OLDEST_MAJOR)
    pg = pg_factory("primary", major=LATEST_MAJOR)
    wv = walvault_factory({"pg": matrix_server(pg, old)})
    version = pg.scalar("SHOW server_version")

    result = wv.run("check", "pg")
    assert result.returncode == 1, result.stdout
    lines = check_lines(result)
    assert lines["pg_receivexlog"] == "OK"
    assert lines["pg_receivexlog compatible"] == (
        f"FAILED (PostgreSQL version: {LATEST_MAJOR}, pg_receivexlog version: "
        f"{_full_version(old)} (it streams servers from 9.3 to {OLDEST_MAJOR}))"
    ), (lines, version)

    received = wv.run("receive-wal", "pg")
    assert received.returncode == 1, received.stdout + received.stderr
    assert received.stderr.strip().splitlines()[-1] == (
        "ERROR: pg_receivewal version not compatible with PostgreSQL server version: "
        f"{old}/pg_receivewal is {OLDEST_MAJOR}, the server is {LATEST_MAJOR} (pg_receivewal "
        f"{OLDEST_MAJOR} works with servers from 9.3 to {OLDEST_MAJOR}: use the pg_receivewal "
        f"of PostgreSQL {LATEST_MAJOR} or newer, e.g. through path_prefix)"
    ), received.stderr
    streaming = Path(wv.server().streaming_wals_directory)
    assert not streaming.exists() or not any(streaming.iterdir())
    assert pg.scalar("SELECT count(*) FROM pg_stat_replication") == 0

    backed = wv.run("backup", "pg")
    assert backed.returncode == 1, backed.stdout + backed.stderr
    assert (
        f"ERROR: pg_basebackup version not compatible with PostgreSQL server version: "
        f"{old}/pg_basebackup is {OLDEST_MAJOR}, the server is {LATEST_MAJOR}"
    ) in backed.stderr, backed.stderr
    assert list(binfo.iter_backups(wv.server())) == []


def _full_version(bindir: Path) -> str:
    import subprocess

    out = subprocess.run(
        [str(bindir / "pg_receivewal"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"\(PostgreSQL\) (\S+)", out)
    assert match, out
    return match.group(1)


def _rot_a_page(pg: Any) -> str:
    """Overwrite bytes in the middle of block 0 of table ``t`` on disk; its file path."""
    pg.sql("CHECKPOINT")
    relpath = str(pg.scalar("SELECT pg_relation_filepath('t')"))
    pg.stop()
    path = pg.data_dir / relpath
    with path.open("r+b") as f:
        f.seek(4000)
        f.write(b"\xde\xad\xbe\xef" * 16)
    pg.start()
    return relpath


@pytest.mark.parametrize("major", [17, 18], ids=["pg17", "pg18"])
def test_default_checksums_of_18_fail_a_backup_of_a_rotten_page(
    major: int, pg_factory: Any, pg_bindir_of: Any, walvault_factory: Any
) -> None:
    pg = pg_factory("primary", major=major)
    checksums = pg.scalar("SHOW data_checksums")
    assert checksums == ("on" if major >= 18 else "off")
    wv = walvault_factory({"pg": matrix_server(pg, pg.bindir)})
    receiver = Receiver(wv, pg)
    receiver.start(pg.bindir)
    add_rows(pg, 1, 500)
    relpath = _rot_a_page(pg)
    receiver.start(pg.bindir)  # the restart ended pg_receivewal: cron starts it again

    result = wv.run("backup", "--wait", "pg", timeout=240)
    [info] = list(binfo.iter_backups(wv.server()))
    if major >= 18:
        assert result.returncode == 1, result.stdout + result.stderr
        assert info.status == binfo.FAILED
        assert info.error and "checksum" in info.error, info.error
        assert not Path(binfo.data_dir(wv.server(), info.backup_id)).exists()
        assert "checksum" in result.stderr and "ERROR:" in result.stderr, result.stderr
    else:  # no checksums: the rotten page is copied as it is, and the backup is DONE
        assert result.returncode == 0, result.stdout + result.stderr
        assert info.status == binfo.DONE
        copied = Path(binfo.data_dir(wv.server(), info.backup_id)) / relpath
        assert b"\xde\xad\xbe\xef" * 16 in copied.read_bytes()
    receiver.stop()


@pytest.mark.parametrize("major", [17, 18], ids=["pg17", "pg18"])
def test_wal_summarizer_on_streams_backs_up_and_recovers(
    major: int, pg_factory: Any, pg_bindir_of: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    pg = pg_factory("primary", major=major, extra_conf={"summarize_wal": True})
    wv = walvault_factory({"pg": matrix_server(pg, pg.bindir)})
    receiver = Receiver(wv, pg)
    receiver.start(pg.bindir)
    add_rows(pg, 1, 3000)
    backup_id = backup(wv)
    add_rows(pg, 3001, 6000)
    archive_everything(wv, pg)
    expected = fingerprint(pg)
    [info] = list(binfo.iter_backups(wv.server()))
    begin = parse_lsn(str(info.begin_xlog))

    def summarized_to(cluster: Any, lsn: int) -> bool:
        state = cluster.scalar("SELECT summarized_lsn::text FROM pg_get_wal_summarizer_state()")
        return parse_lsn(str(state)) >= lsn

    # summaries end at checkpoints' redo points: one after the backup's start covers it
    pg.sql("CHECKPOINT")
    wait_until(lambda: summarized_to(pg, begin + 1), what="the primary's summaries")
    covering = pg.scalar(
        "SELECT count(*) FROM pg_available_wal_summaries() "
        "WHERE start_lsn <= %s::pg_lsn AND end_lsn > %s::pg_lsn",
        (info.begin_xlog, info.begin_xlog),
    )
    assert covering == 1  # an incremental backup on top of this one could be taken

    restored = recover_and_start(pg, wv, backup_id, tmp_path / "restored", "restored")
    assert fingerprint(restored) == expected
    assert restored.scalar("SHOW summarize_wal") == "on"
    # it summarized the recovered WAL of timeline 1 and goes on on timeline 2
    timelines = restored.sql("SELECT DISTINCT tli FROM pg_available_wal_summaries() ORDER BY 1")
    assert timelines[0] == (1,), timelines
    restored.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(6001, 6100) g")
    now = parse_lsn(str(restored.scalar("SELECT pg_current_wal_flush_lsn()")))
    restored.sql("CHECKPOINT")
    wait_until(
        lambda: summarized_to(restored, now),
        what="the recovered cluster's summaries",
        cluster=restored,
    )
    receiver.stop()
