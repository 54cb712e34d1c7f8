"""walvault verify on archives of real PostgreSQL 15 WAL, streamed and archived by walvault.

One archive is built per module (1 MiB segments): pgbench on timeline 1, a backup, more
pgbench archived uncompressed then gzip-compressed, a promotion of the standby walvault
streams from, and pgbench on timeline 2.  The healthy test verifies it as it is; every
damage test verifies a copy of it with one thing broken.  One more test walks real 16 MiB
segments, counting their records against pg_waldump's, in a backup with a tablespace.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pgharness import PgCluster
from walvault.compression import identify_file
from walvault.wal.names import Segment
from wvharness import PG_BIN, Walvault, start_receiver, stop_process, streaming_server, wait_for


def pgbench(cluster: PgCluster, *args: str) -> None:
    """Run pgbench as the superuser against ``cluster``."""
    result = subprocess.run(
        [f"{PG_BIN}/pgbench", *args, cluster.superuser_conninfo()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def archive_through(wv: Walvault, cluster: PgCluster) -> str:
    """Close the current segment of ``cluster`` and wait until it is archived."""
    closed = cluster.switch_wal()
    path = Path(wv.server().wals_directory) / closed[:16] / closed

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return path.exists()

    wait_for(archived, what=f"{closed} archived", timeout=90)
    return closed


@dataclass
class Archive:
    """The module's archive and what the tests need to know about it."""

    home: Path
    servers: dict[str, dict[str, Any]]
    backup_id: str
    begin_wal: str
    end_wal: str
    plain: list[str]  # timeline 1 segments after the backup's end, stored uncompressed
    compressed: list[str]  # timeline 1 segments stored gzip-compressed
    timeline2: list[str]
    last_insert_lsn: int  # the insert position on timeline 2 before the last switch
    system_identifier: int


def segments_of(wv: Walvault, tli: int) -> list[str]:
    wals = Path(wv.server().wals_directory)
    return sorted(
        p.name for p in wals.glob(f"{tli:08X}*/*") if len(p.name) == 24 and p.name.isalnum()
    )


@pytest.fixture(scope="module")
def archive(pg_bindir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    base = tmp_path_factory.mktemp("verify")
    primary = PgCluster.create(base, name="primary", wal_segsize_mb=1, bindir=pg_bindir)
    receiver = None
    wv = None
    try:
        standby = primary.make_standby(name="standby")
        options = streaming_server(
            primary,
            immediate_checkpoint="true",
            wal_streaming_conninfo=standby.streaming_conninfo(),
            wal_conninfo=standby.conninfo(),
        )
        wv = Walvault(base / "wv", {"pg": options})
        receiver = start_receiver(wv, standby)
        pgbench(primary, "-i", "-s", "1")
        backup = wv.run("backup", "--wait", "pg", timeout=240)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        (meta,) = Path(wv.server().meta_directory).glob("*-backup.info")
        info = dict(line.split("=", 1) for line in meta.read_text().splitlines())
        pgbench(primary, "-c", "2", "-T", "2")
        archive_through(wv, primary)
        plain = [n for n in segments_of(wv, 1) if n > info["end_wal"]]
        options["compression"] = "gzip"
        wv.write({"pg": options})
        pgbench(primary, "-c", "2", "-T", "2")
        archive_through(wv, primary)
        compressed = [n for n in segments_of(wv, 1) if n > max(plain)]
        primary.stop()
        standby.promote()
        pgbench(standby, "-c", "2", "-T", "2")
        last_insert = standby.scalar("SELECT pg_current_wal_insert_lsn()::text")
        archive_through(wv, standby)
        standby.sql("CREATE TABLE after_the_last_switch (i int)")
        archive_through(wv, standby)  # at least two segments of timeline 2's own
        history = Path(wv.server().wals_directory) / "00000002.history"
        wait_for(history.exists, what="00000002.history archived")
        stop_process(receiver)
        wv.run("archive-wal", "pg")
        high, low = str(last_insert).split("/")
        yield Archive(
            home=wv.home,
            servers={"pg": options},
            backup_id=meta.name[:15],
            begin_wal=info["begin_wal"],
            end_wal=info["end_wal"],
            plain=plain,
            compressed=compressed,
            timeline2=segments_of(wv, 2),
            last_insert_lsn=(int(high, 16) << 32) | int(low, 16),
            system_identifier=standby.system_identifier(),
        )
    finally:
        if receiver is not None:
            stop_process(receiver)
        if wv is not None:
            wv.cleanup()
        primary.destroy()


def clone(archive: Archive, tmp_path: Path) -> Walvault:
    """A copy of the module's walvault home, with its own configuration."""
    home = tmp_path / "wv"
    shutil.copytree(archive.home, home, symlinks=True)
    return Walvault(home, archive.servers)


def verify(wv: Walvault, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run ``verify -f json``: (exit code, the server's lines)."""
    result = wv.run("-f", "json", "verify", "pg", *args, timeout=300)
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)["pg"]


def archived(wv: Walvault, name: str) -> Path:
    return Path(wv.server().wals_directory) / name[:16] / name


def lsn_value(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def wal_line(lines: dict[str, dict[str, Any]], archive: Archive, tli: int) -> dict[str, Any]:
    return lines[f"backup_{archive.backup_id.lower()}_wal_timeline_{tli}"]


def test_a_healthy_archive_across_a_timeline_switch_verifies(archive: Archive) -> None:
    assert archive.plain and archive.compressed and archive.timeline2
    assert all(identify_file(archived_path_of(archive, n)) is None for n in archive.plain)
    assert all(identify_file(archived_path_of(archive, n)) == "gzip" for n in archive.compressed)
    assert len(archive.timeline2) >= 2
    wv = Walvault(archive.home, archive.servers)
    code, lines = verify(wv)
    assert code == 0, lines
    files = lines[f"backup_{archive.backup_id.lower()}_files"]
    assert files["status"] == "OK" and "pg_verifybackup" in files["hint"]
    tl1, tl2 = wal_line(lines, archive, 1), wal_line(lines, archive, 2)
    assert tl1["status"] == tl2["status"] == "OK"
    assert tl1["first_segment"] == tl2["first_segment"] == archive.begin_wal
    assert tl2["last_segment"] == archive.timeline2[-1] and tl2["rpo_segment"].startswith(
        "00000002"
    )
    # the chain reaches past the last commit on timeline 2 before its last switch
    assert lsn_value(tl2["rpo_lsn"]) >= archive.last_insert_lsn
    # timeline 1 ends with its .partial at the fork (pg_receivewal kept it)
    assert tl1["last_segment"].endswith(".partial")
    assert lines["verification"]["status"] == "OK"
    console = wv.run("verify", "pg")
    assert console.returncode == 0
    assert f"\tbackup {archive.backup_id} WAL timeline 2: OK (" in console.stdout
    assert wv.run("verify-backup", "pg", "latest").returncode == 0  # Barman's name


def archived_path_of(archive: Archive, name: str) -> Path:
    return archive.home / "pg" / "wals" / name[:16] / name


def test_a_missing_segment(archive: Archive, tmp_path: Path) -> None:
    wv = clone(archive, tmp_path)
    victim = archive.plain[1]
    archived(wv, victim).unlink()
    code, lines = verify(wv)
    assert code == 1
    for tli in (1, 2):
        line = wal_line(lines, archive, tli)
        assert line["status"] == "FAILED" and line["problem"] == (
            f"{victim} is missing from the archive"
        )
        assert line["rpo_segment"] == archive.plain[0]  # the RPO stops before the hole


def flip_inside_a_record(path: Path, name: str) -> None:
    """Flip a bit of a record's CRC, at a record pg_waldump finds in the segment."""
    out = subprocess.run(
        [f"{PG_BIN}/pg_waldump", "-p", str(path.parent), "-n", "40", name],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    lsns = [line.split("lsn: ")[1].split(",")[0] for line in out.splitlines() if "lsn: " in line]
    lsn = lsn_value(lsns[-1])
    offset = lsn % (1 << 20) + 20  # xl_crc
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_an_uncompressed_segment(archive: Archive, tmp_path: Path) -> None:
    wv = clone(archive, tmp_path)
    victim = archive.plain[1]
    flip_inside_a_record(archived(wv, victim), victim)
    code, lines = verify(wv)
    assert code == 1
    line = wal_line(lines, archive, 2)
    assert line["status"] == "FAILED"
    assert line["problem"].startswith(f"{victim}: record at ") and "CRC mismatch" in line["problem"]
    assert line["rpo_segment"] == victim  # the records before the damaged one still count


def test_a_flipped_bit_in_a_compressed_segment(archive: Archive, tmp_path: Path) -> None:
    wv = clone(archive, tmp_path)
    victim = archive.compressed[0]
    path = archived(wv, victim)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, lines = verify(wv)
    assert code == 1
    line = wal_line(lines, archive, 2)
    assert line["status"] == "FAILED" and line["problem"].startswith(victim)
    # a corrupt deflate stream or, if it still inflates, records that fail their CRC
    assert "cannot be decompressed" in line["problem"] or "record at" in line["problem"]


def test_a_truncated_segment(archive: Archive, tmp_path: Path) -> None:
    wv = clone(archive, tmp_path)
    victim = archive.plain[-1]
    path = archived(wv, victim)
    with open(path, "r+b") as handle:
        handle.truncate(300_000)
    code, lines = verify(wv)
    assert code == 1
    line = wal_line(lines, archive, 1)
    assert line["problem"] == f"{victim}: 300000 bytes, not one 1048576-byte segment"
    assert wal_line(lines, archive, 2)["problem"] == line["problem"]


def test_a_segment_of_another_cluster(archive: Archive, tmp_path: Path, pg_factory: Any) -> None:
    wv = clone(archive, tmp_path)
    victim = archive.plain[0]
    other = pg_factory("other")
    other.sql("CREATE TABLE filler (i int)")
    wanted = Segment.from_name(victim).segno(1 << 20)
    while Segment.from_name(other.switch_wal()).segno(1 << 20) < wanted:
        pass
    foreign = other.wal_dir / victim
    wait_for(foreign.exists, what=f"{victim} in the other cluster's pg_wal")
    assert other.system_identifier() != archive.system_identifier
    shutil.copyfile(foreign, archived(wv, victim))
    code, lines = verify(wv)
    assert code == 1
    line = wal_line(lines, archive, 1)
    assert line["problem"].startswith(f"{victim}: system identifier {other.system_identifier()}")
    assert str(archive.system_identifier) in line["problem"]


def change_largest_file(directory: Path) -> Path:
    """Flip a byte of the largest file under ``directory``, keeping its size."""
    relation = max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(relation.read_bytes())
    data[100] ^= 0xFF  # same size: only the checksum can tell
    relation.write_bytes(bytes(data))
    return relation


def test_a_backup_file_changed_after_the_backup(archive: Archive, tmp_path: Path) -> None:
    wv = clone(archive, tmp_path)
    change_largest_file(Path(wv.server().basebackups_directory) / archive.backup_id / "data")
    code, lines = verify(wv)
    assert code == 1
    files = lines[f"backup_{archive.backup_id.lower()}_files"]
    assert files["status"] == "FAILED" and "checksum mismatch" in files["hint"], files
    assert wal_line(lines, archive, 2)["status"] == "OK"  # the WAL is still fine
    assert verify(wv, "--wal-only")[0] == 0


def test_incremental_verification_and_its_check_line(archive: Archive, tmp_path: Path) -> None:
    wv = clone(archive, tmp_path)
    first = wv.run("verify", "--incremental", "pg")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith(f"WAL verification: OK (verified {archive.begin_wal} to ")
    state = json.loads((Path(wv.server().backup_directory) / "walvault-verify.json").read_text())
    assert state["last_segment"] == archive.timeline2[-1] and state["problem"] is None
    check = wv.run("check", "pg")
    assert f"\tWAL verification: OK (verified {archive.begin_wal} to " in check.stdout
    # as if the last segment had arrived after that pass, damaged: the next pass catches it
    # (one already verified is not read again by passes; a full verify reads everything)
    state["last_segment"] = archive.timeline2[-2]
    state["carry"] = None
    state_file = Path(wv.server().backup_directory) / "walvault-verify.json"
    state_file.write_text(json.dumps(state))
    victim = archive.timeline2[-1]
    path = archived(wv, victim)
    assert identify_file(path) == "gzip"
    path.write_bytes(path.read_bytes()[:100])  # a truncated gzip stream
    second = wv.run("verify", "--incremental", "pg")
    assert second.returncode == 1
    assert f"WAL verification: FAILED (first bad segment {victim}: " in second.stdout
    check = wv.run("check", "pg")
    assert check.returncode == 1 and f"first bad segment {victim}" in check.stdout


def test_cron_starts_the_incremental_pass(archive: Archive, tmp_path: Path) -> None:
    wv = clone(archive, tmp_path)
    options = dict(archive.servers["pg"], streaming_archiver="off", archiver="on", active="true")
    wv.write({"pg": options})  # nothing to stream: cron archives and verifies only
    assert wv.run("cron").returncode == 0
    state_file = Path(wv.server().backup_directory) / "walvault-verify.json"
    wait_for(state_file.exists, what="cron's verification pass", timeout=60)
    wait_for(
        lambda: "WAL verification: OK (verified" in wv.run("check", "pg").stdout,
        what="the pass to finish",
        timeout=60,
    )


def test_real_16mib_segments_walk_as_pg_waldump_reads_them(
    pg_factory: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    pg = pg_factory("big", wal_segsize_mb=16)
    (tmp_path / "ts").mkdir()
    pg.sql(f"CREATE TABLESPACE ts LOCATION '{tmp_path / 'ts'}'")
    oid = pg.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    start_receiver(wv, pg)
    pgbench(pg, "-i", "-s", "2", "--tablespace=ts")
    assert wv.run("backup", "--wait", "pg", timeout=240).returncode == 0
    pgbench(pg, "-c", "2", "-T", "4")
    archive_through(wv, pg)
    code, lines = verify(wv)
    assert code == 0, lines
    (key,) = [k for k in lines if k.endswith("_wal_timeline_1")]
    line = lines[key]
    assert line["segments"] >= 2
    meta = next(Path(wv.server().meta_directory).glob("*-backup.info")).read_text()
    begin = next(
        v for k, _, v in (x.partition("=") for x in meta.splitlines()) if k == "begin_xlog"
    )
    wals = Path(wv.server().wals_directory) / "0000000100000000"
    dump = subprocess.run(
        [f"{PG_BIN}/pg_waldump", "-p", str(wals), "--stats", "-s", begin, "-e", line["rpo_lsn"]],
        capture_output=True,
        text=True,
        check=False,
    )
    total = next(x for x in dump.stdout.splitlines() if x.startswith("Total"))
    assert int(total.split()[1]) == line["records"], (dump.stdout[-500:], dump.stderr)
    # the backup's tablespace (copied to base/<id>/<oid>) is checked through its link
    (backup_dir,) = Path(wv.server().basebackups_directory).iterdir()
    change_largest_file(backup_dir / str(oid))
    code, lines = verify(wv)
    hint = lines[f"backup_{backup_dir.name.lower()}_files"]["hint"]
    assert code == 1 and "checksum mismatch" in hint and f"pg_tblspc/{oid}/" in hint, hint
