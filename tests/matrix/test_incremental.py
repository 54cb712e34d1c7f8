"""Incremental backups on PostgreSQL 17+: a chain taken, listed, recovered, deleted, retained.

A full backup, two incrementals on top (each after rows added and rows changed), more rows;
``recover --get-wal`` of the last incremental (pg_combinebackup of the chain, a tablespace
mapped out of the backups) started by the server's own binaries: every row and every changed
value back, and no byte of any backup touched.  The incrementals are much smaller than the
full.  A parent is never deleted alone; ``--with-incrementals`` and retention remove a chain
newest first, so no incremental is ever left without its parent.
"""

from __future__ import annotations

import os
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
)

from walvault.backup import info as binfo
from wvharness import wait_for

MAJORS = [17, 18]


def _change(pg: Any, every: int, mark: str) -> None:
    """Rewrite every ``every``-th row of ``t`` (changed blocks for the next incremental)."""
    pg.sql("UPDATE t SET pad = %s || id::text WHERE id %% %s = 0", (mark, every))
    pg.sql("UPDATE moved SET i = i + 1")


def _snapshot(path: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in path.rglob("*")
        if p.is_file()
    )


def _chain_of_three(pg: Any, wv: Any, tmp_path: Path) -> tuple[list[str], Path]:
    location = tmp_path / "tbs"
    location.mkdir()
    pg.sql(f"CREATE TABLESPACE extra LOCATION '{location}'")
    pg.sql("CREATE TABLE moved (i int) TABLESPACE extra")
    pg.sql("INSERT INTO moved SELECT generate_series(1, 2000)")
    receiver = Receiver(wv, pg)
    receiver.start(pg.bindir)
    add_rows(pg, 1, 20000)
    full = backup(wv)
    add_rows(pg, 20001, 20500)
    _change(pg, 97, "one")
    first = backup(wv, "--incremental", "latest")
    add_rows(pg, 20501, 21000)
    _change(pg, 89, "two")
    second = backup(wv, "--incremental", first)
    return [full, first, second], location


@pytest.mark.parametrize("major", MAJORS, ids=[f"pg{m}" for m in MAJORS])
def test_a_chain_of_incrementals_recovers_every_row(
    major: int, pg_factory: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    pg = pg_factory("primary", major=major, extra_conf={"summarize_wal": True})
    wv = walvault_factory({"pg": matrix_server(pg, pg.bindir)})
    ids, _location = _chain_of_three(pg, wv, tmp_path)
    full, first, second = ids
    add_rows(pg, 21001, 22000)  # after the last backup: from the WAL
    at_point = fingerprint(pg)
    pg.sql("SELECT pg_create_restore_point('after_chain')")
    add_rows(pg, 22001, 22500)
    expected = fingerprint(pg)
    moved = pg.scalar("SELECT sum(i) FROM moved")
    archive_everything(wv, pg)
    server = wv.server()

    infos = {i: binfo.load(server, i) for i in ids}
    assert infos[full].parent_backup_id is None and infos[full].children == [first]
    assert infos[first].parent_backup_id == full and infos[first].children == [second]
    assert infos[second].parent_backup_id == first and infos[second].children == []
    assert {i.summarize_wal for i in infos.values()} == {"on"}
    for backup_id in ids:
        assert (Path(server.meta_directory) / f"{backup_id}-backup_manifest").is_file()
    sizes = {i: int(infos[i].size or 0) for i in ids}
    assert sizes[first] * 3 < sizes[full] and sizes[second] * 3 < sizes[full], sizes

    listed = wv.run("list-backups", "pg")
    assert listed.returncode == 0, listed.stderr
    kinds = {line.split()[1]: line.split()[3] for line in listed.stdout.splitlines()}
    assert kinds == {full: "F", first: "I", second: "I"}, listed.stdout
    shown = wv.run("show-backup", "pg", second)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"Root Backup\s+: {full}$", shown.stdout, re.MULTILINE), shown.stdout
    assert re.search(rf"Parent Backup\s+: {first}$", shown.stdout, re.MULTILINE)
    assert re.search(r"Backup Type\s+: incremental$", shown.stdout, re.MULTILINE)
    parent = wv.run("show-backup", "pg", first)
    assert re.search(rf"Children Backup\(s\)\s+: {second}$", parent.stdout, re.MULTILINE)

    verified = wv.run("verify", "pg", second, timeout=300)  # pg_verifybackup on a link
    assert verified.returncode == 0, verified.stdout + verified.stderr

    before = _snapshot(Path(server.basebackups_directory))
    target = tmp_path / "restored"
    (target / "data").mkdir(parents=True)  # an empty destination is accepted, as for a full
    result = wv.run("recover", "pg", second, str(target / "data"), "--get-wal", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pg_combinebackup" in result.stdout, result.stdout
    oid = str(pg.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'"))
    link = target / "data" / "pg_tblspc" / oid
    assert os.readlink(link) == f"{target / 'data'}_tablespaces/{oid}"
    restored = pg.sibling("restored", target)
    restored._write_settings()
    restored.start(timeout=120)
    wait_for(lambda: not restored.is_in_recovery(), what="end of recovery", timeout=180)
    assert fingerprint(restored) == expected
    assert restored.scalar("SELECT sum(i) FROM moved") == moved
    restored.sql("INSERT INTO moved SELECT generate_series(1, 100)")
    restored.sql("CHECKPOINT")
    restored.stop()
    assert _snapshot(Path(server.basebackups_directory)) == before, "a backup was written to"

    # PITR from the chain: to the restore point, without the rows after it
    pitr = tmp_path / "pitr"
    result = wv.run(
        "recover",
        "pg",
        second,
        str(pitr / "data"),
        "--get-wal",
        "--target-name",
        "after_chain",
        "--target-action",
        "promote",
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    at = pg.sibling("pitr", pitr)
    at._write_settings()
    at.start(timeout=120)
    wait_for(lambda: not at.is_in_recovery(), what="PITR: end of recovery", timeout=180)
    assert fingerprint(at) == at_point
    at.stop()


@pytest.mark.parametrize("major", [17], ids=["pg17"])
def test_a_parent_is_never_deleted_alone(
    major: int, pg_factory: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    pg = pg_factory("primary", major=major, extra_conf={"summarize_wal": True})
    wv = walvault_factory({"pg": matrix_server(pg, pg.bindir)})
    ids, _location = _chain_of_three(pg, wv, tmp_path)
    full, first, second = ids
    server = wv.server()

    kept = wv.run("keep", "pg", first, "--target", "full")
    assert kept.returncode == 1 and "it is an incremental backup" in kept.stderr, kept.stderr
    refused = wv.run("delete", "pg", first)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"ERROR: Cannot delete backup {first} of server pg alone: the incremental backups "
        f"{second} are built on it and could not be restored without it. Delete them first, "
        "or delete the whole chain with --with-incrementals"
    ), refused.stderr
    assert sorted(b.backup_id for b in binfo.iter_backups(server)) == ids

    # the leaf goes alone, and its parent forgets it
    assert wv.run("delete", "pg", second).returncode == 0
    assert binfo.load(server, first).children == []
    assert not (Path(server.meta_directory) / f"{second}-backup_manifest").exists()
    again = backup(wv, "--incremental", "latest")
    assert binfo.load(server, again).parent_backup_id == first

    # with incrementals in the catalogue, check watches summarize_wal
    assert check_lines(wv.run("check", "pg"))["summarize_wal"] == "OK"
    pg.sql("ALTER SYSTEM SET summarize_wal = off")
    pg.sql("SELECT pg_reload_conf()")
    wait_for(lambda: pg.scalar("SHOW summarize_wal") == "off", what="summarize_wal off")
    checked = wv.run("check", "pg")
    assert checked.returncode == 1
    assert check_lines(checked)["summarize_wal"] == (
        "FAILED (it is 'off': incremental backups (backup --incremental) need "
        "summarize_wal = on (PostgreSQL 17+))"
    ), checked.stdout
    pg.sql("ALTER SYSTEM SET summarize_wal = on")
    pg.sql("SELECT pg_reload_conf()")
    wait_for(lambda: pg.scalar("SHOW summarize_wal") == "on", what="summarize_wal on")

    # a second full and its incremental; retention REDUNDANCY 1 removes the old chain whole
    newer = backup(wv)
    child = backup(wv, "--incremental", "latest-full")
    assert binfo.load(server, child).parent_backup_id == newer
    wv.write({"pg": {**matrix_server(pg, pg.bindir), "retention_policy": "REDUNDANCY 1"}})
    listed = wv.run("list-backups", "pg")
    obsolete = {line.split()[1] for line in listed.stdout.splitlines() if "OBSOLETE" in line}
    assert obsolete == {full, first, again}, listed.stdout
    cron = wv.run("cron")
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert sorted(b.backup_id for b in binfo.iter_backups(wv.server())) == [newer, child]
    order = re.findall(r"removing backup (\d{8}T\d{6})", cron.stdout)
    assert order == [again, first, full], cron.stdout

    # --with-incrementals: the chain, newest first
    gone = wv.run("delete", "--with-incrementals", "pg", newer)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    deleted = re.findall(r"^Deleting backup (\d{8}T\d{6}) for server pg$", gone.stdout, re.M)
    assert deleted == [child, newer], gone.stdout
    assert list(binfo.iter_backups(wv.server())) == []


def test_incremental_needs_postgresql_17(pg: Any, walvault_factory: Any) -> None:
    from wvharness import streaming_server

    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    result = wv.run("backup", "--incremental", "latest", "pg")
    assert result.returncode == 1
    version = pg.scalar("SHOW server_version_num")
    assert result.stderr.strip() == (
        f"ERROR: --incremental: server 'pg' runs PostgreSQL {int(version) // 10000}; "
        "incremental backups need PostgreSQL 17 or newer (its WAL summaries)"
    ), result.stderr
    assert list(binfo.iter_backups(wv.server())) == []


@pytest.mark.parametrize("major", [17], ids=["pg17"])
def test_incremental_needs_summarize_wal(
    major: int, pg_factory: Any, walvault_factory: Any
) -> None:
    pg = pg_factory("primary", major=major)
    wv = walvault_factory({"pg": matrix_server(pg, pg.bindir)})
    result = wv.run("backup", "--incremental", "latest", "pg")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "ERROR: --incremental: summarize_wal is 'off' on server 'pg'; incremental backups "
        "need 'summarize_wal = on' in its postgresql.conf (then take a full backup: it "
        "becomes the first parent)"
    ), result.stderr
    assert list(binfo.iter_backups(wv.server())) == []
