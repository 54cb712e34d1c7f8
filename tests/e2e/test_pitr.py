"""Point-in-time recovery to a restore point, a time and an xid; and onto timeline 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from walvault.backup import info as binfo
from wvharness import WALVAULT, start_restored, streaming_server, wait_for

#: A directory name PostgreSQL's shell and its % substitution would both misread.
HOSTILE = "it's a $(touch pwned) `touch pwned2` %p %f %r dir"


def _archive_everything(pg: Any, wv: Any) -> None:
    closed = pg.switch_wal()
    pg.sql("SELECT txid_current()")
    path = Path(wv.server().wals_directory) / closed[:16] / closed

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return path.exists()

    wait_for(archived, what=f"{closed} archived")


def _recover(pg: Any, wv: Any, tmp_path: Path, name: str, *args: str) -> Any:
    result = wv.run("recover", "pg", "latest", str(tmp_path / name / "data"), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return start_restored(pg, tmp_path / name, name)


def _values(cluster: Any) -> list[str]:
    wait_for(
        lambda: cluster.scalar("SELECT pg_is_wal_replay_paused()") or not cluster.is_in_recovery(),
        what="recovery reached its target",
        timeout=120,
    )
    return [row[0] for row in cluster.sql("SELECT v FROM marks ORDER BY v")]


def test_pitr_to_name_time_and_xid(pg: Any, walvault_factory: Any, tmp_path: Path) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    assert wv.run("cron").returncode == 0
    wait_for(lambda: pg.replication_state("walvault_receive_wal"), what="streaming")
    pg.sql("CREATE TABLE marks (v text)")
    assert wv.run("backup", "--wait", "pg", timeout=180).returncode == 0
    pg.sql("INSERT INTO marks VALUES ('a')")
    xid_b = pg.scalar("INSERT INTO marks VALUES ('b') RETURNING txid_current()::text")
    pg.sql("SELECT pg_create_restore_point('after_b')")
    time.sleep(1.2)
    after_b = datetime.now().astimezone()
    time.sleep(1.2)
    pg.sql("INSERT INTO marks VALUES ('c')")
    pg.sql("INSERT INTO marks VALUES ('d')")
    _archive_everything(pg, wv)

    by_name = _recover(pg, wv, tmp_path, "by_name", "--target-name", "after_b")
    assert _values(by_name) == ["a", "b"]
    by_time = _recover(pg, wv, tmp_path, "by_time", "--target-time", after_b.isoformat())
    assert _values(by_time) == ["a", "b"]
    by_xid = _recover(pg, wv, tmp_path, "by_xid", "--target-xid", str(xid_b), "--get-wal")
    assert _values(by_xid) == ["a", "b"]
    exclusive = _recover(
        pg, wv, tmp_path, "excl", "--target-xid", str(xid_b), "--exclusive", "--no-get-wal"
    )
    assert _values(exclusive) == ["a"]


def test_impossible_targets_and_destinations(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    assert wv.run("cron").returncode == 0
    wait_for(lambda: pg.replication_state("walvault_receive_wal"), what="streaming")
    assert wv.run("backup", "--wait", "pg", timeout=180).returncode == 0
    dest = str(tmp_path / "x")
    cases = [
        (["--target-time", "2000-01-01 00:00:00+00"], "before the backup end time"),
        (["--target-tli", "7"], "timeline 7 is not in the archive"),
        (["--target-name", "a", "--target-xid", "5"], "multiple targets"),
        (["--target-lsn", "0/1"], "before the backup end LSN"),
        (["--target-action", "promote"], "needs a recovery target"),
    ]
    for args, message in cases:
        result = wv.run("recover", "pg", "latest", dest, *args)
        assert result.returncode == 1, args
        assert message in result.stderr, (args, result.stderr)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("x")
    result = wv.run("recover", "pg", "latest", str(occupied))
    assert result.returncode == 1 and "is not empty" in result.stderr
    unknown = wv.run("recover", "pg", "20000101T000000", dest)
    assert unknown.returncode == 1 and "unknown backup" in unknown.stderr
    # never into walvault's own directories (before: it silently grew a backup)
    server = wv.server()
    inside = [
        Path(server.basebackups_directory) / "copy",
        Path(binfo.data_dir(server, binfo.resolve_backup_id(server, "latest").backup_id)),
        Path(server.wals_directory) / "copy",
        wv.home,
    ]
    for path in inside:
        before = sorted(os.listdir(path)) if path.exists() else None
        result = wv.run("recover", "pg", "latest", str(path))
        assert result.returncode == 1, path
        assert "overlaps walvault's own directory" in result.stderr, result.stderr
        assert (sorted(os.listdir(path)) if path.exists() else None) == before
    # --standby-mode: standby.signal, and restore_command without -P (a standby must not
    # consume the live .partial, which would fork its history)
    standby = _recover(pg, wv, tmp_path, "standby", "--standby-mode", "--get-wal")
    data = tmp_path / "standby" / "data"
    assert (data / "standby.signal").exists() and not (data / "recovery.signal").exists()
    auto = (data / "postgresql.auto.conf").read_text()
    restore = next(line for line in auto.splitlines() if line.startswith("restore_command"))
    assert "walvault-wal-restore" in restore and " -P " not in restore
    assert "archive_mode = off" in auto
    wait_for(lambda: standby.is_in_recovery(), what="standby in recovery")


def test_recovery_onto_timeline_2_after_promotion(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    standby = pg.make_standby(name="standby")
    options = streaming_server(
        pg,
        immediate_checkpoint="true",
        wal_streaming_conninfo=standby.streaming_conninfo(),
        wal_conninfo=standby.conninfo(),
    )
    wv = walvault_factory({"pg": options})
    assert wv.run("cron").returncode == 0
    wait_for(
        lambda: standby.scalar("SELECT count(*) FROM pg_stat_replication") == 1,
        what="walvault streaming from the standby",
    )
    pg.sql("CREATE TABLE marks (v text)")
    pg.sql("INSERT INTO marks VALUES ('tl1')")
    backup = wv.run("backup", "--wait", "pg", timeout=180)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    pg.stop()
    standby.promote()
    standby.sql("INSERT INTO marks VALUES ('tl2')")
    closed = standby.switch_wal()
    assert closed.startswith("00000002")
    history = Path(wv.server().wals_directory) / "00000002.history"
    segment = Path(wv.server().wals_directory) / closed[:16] / closed

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return history.exists() and segment.exists()

    wait_for(archived, what="timeline 2 archived")
    check = wv.run("check", "pg").stdout
    assert "\tWAL continuity: OK (" in check, check  # timeline 1, then 2 from its history
    restored = _recover(pg, wv, tmp_path, "tl2", "--target-tli", "2", "--no-get-wal")
    wait_for(lambda: not restored.is_in_recovery(), what="end of recovery", timeout=120)
    assert [r[0] for r in restored.sql("SELECT v FROM marks ORDER BY v")] == ["tl1", "tl2"]
    assert restored.timeline() >= 2


def _no_injection(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        assert "pwned" not in files and "pwned2" not in files, dirpath


def test_recovery_commands_quote_every_path(pg: Any, walvault_factory: Any, tmp_path: Path) -> None:
    """Before: restore_command quoted only %p, so a configuration path with a space broke the
    recovery and one with $(...) ran in PostgreSQL's shell; a % in a path was substituted."""
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    assert wv.run("cron").returncode == 0
    wait_for(lambda: pg.replication_state("walvault_receive_wal"), what="streaming")
    pg.sql("CREATE TABLE marks (v text)")
    assert wv.run("backup", "--wait", "pg", timeout=180).returncode == 0
    pg.sql("INSERT INTO marks VALUES ('after the backup')")
    _archive_everything(pg, wv)

    weird = tmp_path / HOSTILE
    weird.mkdir()
    conf = weird / "walvault.conf"
    shutil.copy(wv.conf, conf)
    by_get_wal = tmp_path / "by_get_wal"
    result = subprocess.run(
        [
            *WALVAULT,
            "-c",
            str(conf),
            "recover",
            "pg",
            "latest",
            str(by_get_wal / "data"),
            "--get-wal",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(conf) not in (by_get_wal / "data" / "postgresql.auto.conf").read_text()  # quoted
    restored = start_restored(pg, by_get_wal, "by_get_wal")
    wait_for(lambda: not restored.is_in_recovery(), what="end of recovery", timeout=120)
    assert [r[0] for r in restored.sql("SELECT v FROM marks")] == ["after the backup"]

    # pg_ctl itself puts the data directory in a shell command (in double quotes): no $(...)
    copy = tmp_path / "copy it's a %p %f %r dir"
    result = wv.run("recover", "pg", "latest", str(copy / "data"), "--no-get-wal")
    assert result.returncode == 0, result.stdout + result.stderr
    restored = start_restored(pg, copy, "copy")
    wait_for(lambda: not restored.is_in_recovery(), what="end of recovery", timeout=120)
    assert [r[0] for r in restored.sql("SELECT v FROM marks")] == ["after the backup"]
    assert not (copy / "data" / "walvault_wal").exists()  # recovery_end_command ran too
    _no_injection(tmp_path)


def test_a_backup_of_a_standby_recovers_as_a_primary(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    """Before: the copy kept the standby's standby.signal and primary_conninfo, started as
    a standby of the old primary and never ended recovery."""
    standby = pg.make_standby(name="standby")
    pg.sql("CREATE TABLE marks (v text)")
    pg.sql("INSERT INTO marks VALUES ('before the backup')")
    wv = walvault_factory({"pg": streaming_server(standby, immediate_checkpoint="true")})
    assert wv.run("cron").returncode == 0
    wait_for(
        lambda: standby.scalar("SELECT count(*) FROM pg_stat_replication") == 1,
        what="walvault streaming from the standby",
    )
    backup = wv.run("backup", "pg", timeout=180)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    server = wv.server()
    [info] = binfo.iter_backups(server)
    data = Path(binfo.data_dir(server, info.backup_id))
    assert (data / "standby.signal").exists()  # what pg_basebackup copies from a standby
    assert "primary_conninfo" in (data / "postgresql.auto.conf").read_text()

    def done() -> bool:
        pg.sql("INSERT INTO marks VALUES ('after the backup')")
        pg.switch_wal()  # the standby's WAL (and the backup's end) reach walvault
        wv.run("archive-wal", "pg")
        return "DONE" in wv.run("check-backup", "pg", info.backup_id).stdout

    wait_for(done, what="the backup DONE", timeout=120)
    result = wv.run("recover", "pg", "latest", str(tmp_path / "restored" / "data"))
    assert result.returncode == 0, result.stdout + result.stderr
    copy = tmp_path / "restored" / "data"
    assert not (copy / "standby.signal").exists() and (copy / "recovery.signal").exists()
    auto = (copy / "postgresql.auto.conf").read_text()
    assert "#WALVAULT#primary_conninfo" in auto
    assert not [line for line in auto.splitlines() if line.startswith("primary_conninfo")]
    restored = start_restored(pg, tmp_path / "restored", "restored")
    wait_for(lambda: not restored.is_in_recovery(), what="end of recovery", timeout=120)
    values = [r[0] for r in restored.sql("SELECT v FROM marks ORDER BY v")]
    assert values[-1] == "before the backup" and "after the backup" in values
    assert restored.scalar("SELECT count(*) FROM pg_stat_wal_receiver") == 0
