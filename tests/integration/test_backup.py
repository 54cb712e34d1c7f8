"""backup, list-backups, show-backup, delete and retention against real PostgreSQL 15."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from walvault.archive.catalogue import CatalogueEntry, append_entries, iter_entries
from walvault.archive.layout import archived_path
from walvault.backup import info as binfo
from walvault.backup.info import DONE, FAILED, WAITING_FOR_WALS
from walvault.backup.walcheck import required_wals
from wvharness import WALVAULT, start_restored, streaming_server, wait_for

LIST_LINE = re.compile(
    r"^pg (?P<id>\d{8}T\d{6})(?: '(?P<name>[^']*)')? - [FI] - "
    r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} "
    r"- Size: \d+(?:\.\d)? (?:B|KiB|MiB) - WAL Size: \d+(?:\.\d)? (?:B|KiB|MiB)(?P<rest>.*)$"
)


def _streaming(pg: Any, wv: Any) -> None:
    assert wv.run("cron").returncode == 0
    wait_for(
        lambda: pg.replication_state("walvault_receive_wal") == "streaming",
        what="receive-wal streaming",
    )


def _archived_segments(server: Any) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(server.wals_directory):
        if root != server.wals_directory:
            found += [f for f in files if re.fullmatch(r"[0-9A-F]{24}", f)]
    return sorted(found)


def _backup(wv: Any, *args: str) -> str:
    result = wv.run("backup", *args, "pg", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"in \S+/base/(\d{8}T\d{6})$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return match.group(1)


def test_backup_wait_reaches_done_in_barmans_shape(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    _streaming(pg, wv)
    pg.sql("CREATE TABLE t AS SELECT generate_series(1, 20000) AS i")
    started = time.monotonic()
    result = wv.run("backup", "--wait", "--name", "first one", "pg", timeout=240)
    print(f"backup --wait of the test cluster: {time.monotonic() - started:.2f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    server = wv.server()
    [info] = list(binfo.iter_backups(server))
    for expected in (
        f"Starting backup using postgres method for server pg in "
        f"{server.basebackups_directory}/{info.backup_id}\n",
        f"Backup start at LSN: {info.begin_xlog} ({info.begin_wal}, {info.begin_offset:08X})\n",
        f"Backup end at LSN: {info.end_xlog} ({info.end_wal}, {info.end_offset:08X})\n",
        "Backup completed (start time: ",
        f"Waiting for the WAL file {info.end_wal} from server 'pg' (max: 300 seconds)\n",
        f"Backup {info.backup_id} of server pg: DONE\n",
    ):
        assert expected in out, (expected, out)
    assert "WARNING" not in result.stderr, result.stderr

    assert info.status == DONE and info.backup_name == "first one" and info.error is None
    assert info.systemid == str(pg.system_identifier()) and info.timeline == 1
    assert info.xlog_segment_size == 1 << 20 and info.version and info.version >= 150000
    assert info.pgdata == str(pg.data_dir) and info.size and info.size > 1 << 20
    data = Path(binfo.data_dir(server, info.backup_id))
    assert (data / "PG_VERSION").read_text() == "15\n"
    label = (data / "backup_label").read_text()
    assert (
        f"(file {info.begin_wal})" in label and f"START WAL LOCATION: {info.begin_xlog} " in label
    )
    [wal_range] = json.loads((data / "backup_manifest").read_text())["WAL-Ranges"]
    assert (wal_range["Start-LSN"], wal_range["End-LSN"]) == (info.begin_xlog, info.end_xlog)
    assert not [n for n in os.listdir(data / "pg_wal") if re.fullmatch(r"[0-9A-F]{24}", n)]
    for name in required_wals(info):
        assert os.path.exists(archived_path(server, name)), name
    assert f'restore point "walvault_{info.backup_id}" created' in pg.log_path.read_text()
    identity = json.loads(Path(server.identity_path).read_text())
    assert identity == {"systemid": info.systemid, "version": "15"}

    text = Path(binfo.info_path(server, info.backup_id)).read_text()
    for line in (
        f"backup_id={info.backup_id}",
        "backup_name=first one",
        f"begin_wal={info.begin_wal}",
        f"end_xlog={info.end_xlog}",
        "mode=postgres",
        "server_name=pg",
        "status=DONE",
        "timeline=1",
        "xlog_segment_size=1048576",
        "error=None",
        "tablespaces=None",
    ):
        assert f"\n{line}\n" in f"\n{text}", line
    assert re.search(r"^begin_time=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.\d]*[+-]\d\d:\d\d$", text, re.M)
    assert binfo.loads(text, info.backup_id, "pg") == info and binfo.dumps(info) == text

    listed = wv.run("list-backups", "pg")
    match = LIST_LINE.match(listed.stdout.strip())
    assert match and match["id"] == info.backup_id and match["rest"] == "", listed.stdout
    assert match["name"] == "first one"
    assert wv.run("list-backups", "--minimal", "pg").stdout == f"{info.backup_id}\n"
    [entry] = json.loads(wv.run("-f", "json", "list-backups", "pg").stdout)["pg"]
    assert entry["status"] == "DONE" and entry["size_bytes"] >= info.size

    shown = wv.run("show-backup", "pg", "first one")
    assert shown.returncode == 0, shown.stderr
    for line in (
        f"Backup {info.backup_id}:",
        "  Status                 : DONE",
        f"  System Id              : {info.systemid}",
        "  Base backup information:",
        f"    Begin WAL            : {info.begin_wal}",
        f"    End WAL              : {info.end_wal}",
        f"    End LSN              : {info.end_xlog}",
        f"    WAL number           : {len(required_wals(info))}",
        "    Previous Backup      : - (this is the oldest base backup)",
    ):
        assert line in shown.stdout.splitlines(), (line, shown.stdout)
    as_json = json.loads(wv.run("-f", "json", "show-backup", "pg", "latest").stdout)
    assert as_json["pg"]["base_backup_information"]["begin_wal"] == info.begin_wal
    status = wv.run("status", "pg").stdout
    assert "No. of available backups: 1" in status and f"backup: {info.backup_id}" in status


def test_failing_pg_basebackup_is_failed_without_leftovers(pg: Any, walvault_factory: Any) -> None:
    wrong = "not-the-password-42"
    options = streaming_server(pg, streaming_conninfo=pg.streaming_conninfo(password=wrong))
    wv = walvault_factory({"pg": options})
    result = wv.run("backup", "--wait", "pg", timeout=120)
    assert result.returncode == 1
    assert "password authentication failed" in result.stderr, result.stderr
    server = wv.server()
    [info] = list(binfo.iter_backups(server))
    assert info.status == FAILED and info.error and "password authentication failed" in info.error
    assert f"Backup {info.backup_id} of server pg FAILED: pg_basebackup failed (exit code 1)" in (
        result.stderr
    )
    assert os.listdir(server.basebackups_directory) == []
    everything = result.stdout + result.stderr + (wv.home / "walvault.log").read_text()
    everything += Path(binfo.info_path(server, info.backup_id)).read_text()
    assert wrong not in everything
    assert wv.run("list-backups", "pg").stdout == f"pg {info.backup_id} - F - FAILED\n"
    check = wv.run("check", "pg").stdout
    assert "failed backups: FAILED (there are 1 failed backups)" in check
    deleted = wv.run("delete", "pg", info.backup_id)
    assert deleted.returncode == 0 and not list(binfo.iter_backups(server)), deleted.stderr
    [line] = [
        line
        for line in (wv.home / "walvault.log").read_text().splitlines()
        if f"server pg: deleted backup {info.backup_id} (FAILED, ended " in line
    ]
    assert line.endswith("): asked for by 'walvault delete'"), line


def test_streaming_conninfo_of_another_cluster_is_refused_before_copying(
    pg_factory: Any, walvault_factory: Any
) -> None:
    pg = pg_factory("primary")
    other = pg_factory("other")
    assert other.system_identifier() != pg.system_identifier()
    options = streaming_server(pg, streaming_conninfo=other.streaming_conninfo())
    wv = walvault_factory({"pg": options})
    result = wv.run("backup", "pg", timeout=120)
    assert result.returncode == 1
    assert (
        f"streaming_conninfo of server 'pg' reaches system {other.system_identifier()} but "
        f"conninfo reaches system {pg.system_identifier()}"
    ) in result.stderr, result.stderr
    server = wv.server()
    assert not list(binfo.iter_backups(server))  # refused before a backup was started
    assert not os.path.exists(server.basebackups_directory) or not os.listdir(
        server.basebackups_directory
    )


def test_backup_method_other_than_postgres_is_refused(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, backup_method="rsync")})
    result = wv.run("backup", "pg")
    assert result.returncode == 1
    assert "backup_method = rsync is not supported" in result.stderr
    assert not list(binfo.iter_backups(wv.server()))


def test_tablespaces_are_copied_into_the_backup(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    location = tmp_path / "tbs"
    location.mkdir()
    pg.sql(f"CREATE TABLESPACE extra LOCATION '{location}'")
    pg.sql("CREATE TABLE moved (i int) TABLESPACE extra")
    pg.sql("INSERT INTO moved SELECT generate_series(1, 1000)")
    oid = int(pg.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'"))
    before = sorted(p.name for p in location.rglob("*"))
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    _streaming(pg, wv)
    backup_id = _backup(wv, "--wait")
    server = wv.server()
    info = binfo.load(server, backup_id)
    assert binfo.parse_tablespaces(info.tablespaces) == [
        binfo.Tablespace("extra", oid, str(location))
    ]
    copy = Path(server.basebackups_directory) / backup_id / str(oid)
    assert any(copy.rglob("*")), "the tablespace was not copied into the backup"
    link = Path(binfo.data_dir(server, backup_id)) / "pg_tblspc" / str(oid)
    assert os.readlink(link) == str(copy)
    assert sorted(p.name for p in location.rglob("*")) == before  # the original is untouched
    # a recovered copy gets its own tablespace: it must never write into the backup
    from wvharness import start_restored

    snapshot = sorted((p.name, p.stat().st_size) for p in copy.rglob("*") if p.is_file())
    restored_dir = tmp_path / "restored"
    result = wv.run("recover", "pg", backup_id, str(restored_dir / "data"))
    assert result.returncode == 0, result.stdout + result.stderr
    new_link = restored_dir / "data" / "pg_tblspc" / str(oid)
    assert os.readlink(new_link) == str(restored_dir / "data") + f"_tablespaces/{oid}"
    restored = start_restored(pg, restored_dir, "restored")
    wait_for(lambda: not restored.is_in_recovery(), what="end of recovery", timeout=120)
    assert restored.scalar("SELECT count(*) FROM moved") == 1000
    restored.sql("INSERT INTO moved SELECT generate_series(1, 1000)")
    restored.sql("CHECKPOINT")
    assert sorted((p.name, p.stat().st_size) for p in copy.rglob("*") if p.is_file()) == snapshot
    restored.stop()
    # --tablespace NAME:LOCATION puts it where asked; a bad rule is refused before copying
    elsewhere = tmp_path / "relocated" / "extra"
    second = tmp_path / "restored2"
    bad = wv.run("recover", "pg", backup_id, str(second / "data"), "--tablespace", "nope:/x")
    assert bad.returncode == 1 and "has no tablespace 'nope' (its tablespaces: extra)" in (
        bad.stderr
    )
    assert not second.exists()
    result = wv.run(
        "recover", "pg", backup_id, str(second / "data"), "--tablespace", f"extra:{elsewhere}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.readlink(second / "data" / "pg_tblspc" / str(oid)) == str(elsewhere)
    assert not Path(f"{second / 'data'}_tablespaces").exists()
    relocated = start_restored(pg, second, "restored2")
    wait_for(lambda: not relocated.is_in_recovery(), what="end of recovery", timeout=120)
    assert relocated.scalar("SELECT count(*) FROM moved") == 1000
    assert relocated.scalar(f"SELECT pg_tablespace_location({oid})") == str(elsewhere)


def _history(server: Any) -> str:
    """A history file in the archive (for timeline 1: PostgreSQL never asks for it)."""
    name = "00000001.history"
    Path(server.wals_directory, name).write_text("1\t0/1000000\tfake, for the retention test\n")
    append_entries(server, [CatalogueEntry(name, 45, time.time())])
    return name


def test_retention_redundancy_two_and_recovery_from_the_oldest_kept(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    options = streaming_server(
        pg, immediate_checkpoint="true", retention_policy="REDUNDANCY 2", minimum_redundancy="2"
    )
    wv = walvault_factory({"pg": options})
    _streaming(pg, wv)
    server = wv.server()
    pg.sql("CREATE TABLE t (batch int, i int)")
    ids = []
    for batch in range(4):
        pg.sql(f"INSERT INTO t SELECT {batch}, generate_series(1, 5000)")
        pg.switch_wal()
        if batch < 3:
            ids.append(_backup(wv, "--wait"))
            continue
        ids.append(_backup(wv))  # no --wait: cron settles it
    assert binfo.load(server, ids[3]).status in (WAITING_FOR_WALS, DONE)
    history = _history(server)
    before = _archived_segments(server)

    def settled() -> bool:
        wv.run("cron")
        return binfo.load(server, ids[3]).status == DONE

    wait_for(settled, what="cron marking the last backup DONE", timeout=120)
    cron = wv.run("cron")  # retention again, now that four backups are DONE
    assert cron.returncode == 0, cron.stderr
    assert [b.backup_id for b in binfo.iter_backups(server)] == ids[2:]
    oldest = binfo.load(server, ids[2])
    assert oldest.begin_wal and before[0] < oldest.begin_wal  # older WAL existed...
    after = _archived_segments(server)
    assert after and after[0] == oldest.begin_wal  # ...and is gone, but no more than that
    kept = [n for n in before if n >= oldest.begin_wal]
    assert after[: len(kept)] == kept  # newer WAL may have arrived meanwhile
    first, last = int(after[0], 16), int(after[-1], 16)
    assert [int(n, 16) for n in after] == list(range(first, last + 1))  # no hole
    assert os.path.exists(Path(server.wals_directory) / history)
    on_disk = set(after) | {history}
    catalogued = {e.name for e in iter_entries(server.xlogdb_path)}
    assert {n for n in catalogued if not n.endswith(".partial")} == on_disk
    lines = [line.strip() for line in wv.run("check", "pg").stdout.splitlines()[1:]]
    for name in ("WAL continuity", "WAL catalogue", "state files"):  # on a real, purged archive
        [line] = [line for line in lines if line.startswith(f"{name}: ")]
        assert line.startswith(f"{name}: OK"), line
    for gone in ids[:2]:
        assert not os.path.exists(os.path.dirname(binfo.data_dir(server, gone)))
    # every destructive step says what and why in the log, one line each
    log = (wv.home / "walvault.log").read_text()
    for gone in ids[:2]:
        assert (
            f"server pg: deleted backup {gone} (DONE, ended "
        ) in log and "obsolete under the retention policy 'REDUNDANCY 2' (cron)" in log
    purges = [line for line in log.splitlines() if " WAL files (" in line]
    why = "under the retention policy 'REDUNDANCY 2' (cron): no backup kept needs them"
    assert purges and all(why in line for line in purges), purges
    assert f"the oldest one ({ids[2]}) begins at {oldest.begin_wal}" in purges[-1]
    matches = [LIST_LINE.match(line) for line in wv.run("list-backups", "pg").stdout.splitlines()]
    assert [m["id"] for m in matches if m] == [ids[3], ids[2]]

    refused = wv.run("delete", "pg", "oldest")
    assert refused.returncode == 1
    assert (
        f"Skipping delete of backup {ids[2]} for server pg due to minimum redundancy "
        "requirements (minimum redundancy = 2, current redundancy = 2)"
    ) in refused.stderr

    # a recovery from the oldest kept backup replays every archived WAL up to the end
    pg.sql("INSERT INTO t SELECT 4, generate_series(1, 5000)")
    closed = pg.switch_wal()
    wait_for(
        lambda: wv.run("archive-wal", "pg") and os.path.exists(archived_path(server, closed)),
        what="the last segment archived",
    )
    target = tmp_path / "restored"
    target.mkdir()
    shutil.copytree(binfo.data_dir(server, ids[2]), target / "data")
    (target / "data" / "recovery.signal").write_text("")
    command = " ".join([*WALVAULT, "-c", str(wv.conf), "-q", "get-wal", "pg", "%f", ">", "%p"])
    with open(target / "data" / "postgresql.auto.conf", "a") as conf:
        conf.write(f"restore_command = '{command}'\n")
    restored = start_restored(pg, target, "restored")
    wait_for(lambda: not restored.is_in_recovery(), what="end of recovery", timeout=120)
    rows = restored.sql("SELECT batch, count(*) FROM t GROUP BY batch ORDER BY batch")
    assert rows == [(b, 5000) for b in range(5)]
    assert sys.executable in command


def test_a_backup_waiting_for_its_wal_says_so_and_latest_names_it(
    pg: Any, walvault_factory: Any
) -> None:
    """Before: a backup without --wait never said it was waiting for WAL, and show-backup
    latest answered 'no completed backup' without naming the backup that was there."""
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    _streaming(pg, wv)
    done = _backup(wv, "--wait")
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0  # the next WAL never comes
    result = wv.run("backup", "pg", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    [waiting] = [b for b in binfo.iter_backups(wv.server()) if b.backup_id != done]
    assert waiting.status == WAITING_FOR_WALS
    assert (
        f"Backup {waiting.backup_id} of server pg: WAITING_FOR_WALS -- waiting for its WAL up "
        f"to {waiting.end_wal} to be archived; 'walvault cron' marks it DONE"
    ) in result.stdout, result.stdout
    shown = wv.run("show-backup", "pg", "latest")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"Backup {done}:")
    assert (
        f"backup {waiting.backup_id}, newer than {done}, is WAITING_FOR_WALS: 'latest' names "
        "the newest DONE backup"
    ) in shown.stderr


def _on_a_terminal(wv: Any, *args: str) -> tuple[int, str]:
    """``walvault -c CONF ARGS`` with stderr on a pseudo-terminal; (exit code, what it drew)."""
    import pty
    import subprocess

    from wvharness import WALVAULT

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*WALVAULT, "-c", str(wv.conf), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    return proc.wait(timeout=300), drawn.decode("utf-8", "replace")


def test_backup_and_recover_show_progress_on_a_terminal(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    _streaming(pg, wv)
    pg.sql("CREATE TABLE t AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 100000) g")
    code, drawn = _on_a_terminal(wv, "backup", "--wait", "pg")
    assert code == 0, drawn
    assert re.search(r"\rBackup: [\d.]+ \w+ of ~[\d.]+ \w+ \(\d+%\), ", drawn), drawn
    assert "kB (" not in drawn  # pg_basebackup's own progress lines are not shown as lines
    code, drawn = _on_a_terminal(wv, "recover", "pg", "latest", str(tmp_path / "r" / "data"))
    assert code == 0, drawn
    assert re.search(r"\rRecover: [\d.]+ \w+ of ~[\d.]+ \w+ \(\d+%\)", drawn), drawn
    quiet = wv.run("-q", "backup", "--wait", "pg", timeout=240)  # not a terminal: no drawing
    assert quiet.returncode == 0 and "\r" not in quiet.stderr, quiet.stderr
