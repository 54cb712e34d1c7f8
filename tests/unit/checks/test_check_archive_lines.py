"""``WAL continuity`` (holes after the oldest backup) and ``WAL catalogue`` (xlog.db against
the archive), from names only, on synthetic archives."""

from __future__ import annotations

import os
from pathlib import Path

from walsupply import make_server
from walvault.archive.catalogue import CatalogueEntry, append_entries, rebuild
from walvault.archive.journal import write_journal
from walvault.archive.layout import archived_path
from walvault.backup import info as binfo
from walvault.backup.info import DONE, FAILED, BackupInfo
from walvault.checks.catalogue import check_catalogue
from walvault.checks.continuity import check_continuity
from walvault.config import ServerConfig
from walvault.receiver.gaps import record_gap

MiB = 1 << 20


def seg(tli: int, segno: int, seg_size: int = MiB) -> str:
    per_log = 0x100000000 // seg_size
    return f"{tli:08X}{segno // per_log:08X}{segno % per_log:08X}"


def put(server: ServerConfig, *names: str) -> None:
    for name in names:
        path = archived_path(server, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_bytes(b"x")


def backup(server: ServerConfig, begin: str, *, status: str = DONE, seg_size: int = MiB) -> None:
    backup_id = f"2026112{len(list(binfo.iter_backups(server)))}T000000"
    binfo.save(
        server,
        BackupInfo(
            backup_id,
            server.name,
            status=status,
            begin_wal=begin,
            end_wal=begin,
            begin_xlog=f"{int(begin[8:16], 16):X}/{int(begin[16:], 16) * seg_size:X}",
            timeline=int(begin[:8], 16),
            xlog_segment_size=seg_size,
        ),
    )


def continuity(server: ServerConfig) -> tuple[bool, str]:
    result = check_continuity(server, list(binfo.iter_backups(server)))
    return result.ok, result.hint


def test_a_hole_after_the_oldest_backup_is_named(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    put(server, *(seg(1, n) for n in range(1, 20) if n not in (7, 8, 12)))
    assert continuity(server) == (True, "no DONE backup yet: nothing to recover from")
    backup(server, seg(1, 9), status=FAILED)  # a failed backup recovers nothing
    assert continuity(server)[0]
    backup(server, seg(1, 3))
    ok, hint = continuity(server)
    assert not ok
    assert hint.startswith(f"3 of 17 segments from {seg(1, 3)} (backup 20261121T000000) missing")
    assert f"the first {seg(1, 7)}" in hint and "take a new backup" in hint


def test_holes_before_the_oldest_backup_do_not_matter(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    put(server, *(seg(1, n) for n in range(1, 20) if n != 2))
    backup(server, seg(1, 3))
    assert continuity(server) == (
        True,
        f"17 segments from {seg(1, 3)} (backup 20261120T000000): none missing",
    )


def test_crossing_a_log_boundary_with_16_mib_segments(tmp_path: Path) -> None:
    size = 16 * MiB
    server = make_server(tmp_path)
    names = [seg(1, n, size) for n in range(250, 262)]
    assert names[5] == "0000000100000000000000FF" and names[6] == "000000010000000100000000"
    put(server, *names)
    backup(server, names[0], seg_size=size)
    assert continuity(server)[0]
    os.unlink(archived_path(server, names[6]))
    ok, hint = continuity(server)
    assert not ok and "the first 000000010000000100000000" in hint


def test_a_recorded_gap_is_left_to_the_wal_gaps_line(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    put(server, *(seg(1, n) for n in range(1, 10) if n not in (4, 5)))
    backup(server, seg(1, 1))
    record_gap(server, seg(1, 4), seg(1, 5), "receive-wal --reset")
    ok, hint = continuity(server)
    assert ok and hint.endswith("none missing; 2 more in recorded gaps (see WAL gaps)")


def test_recovery_follows_the_latest_timeline_through_its_history(tmp_path: Path) -> None:
    """Timeline 2 began in segment 6 (its history says so): segments 1..5 come from timeline
    1, 6.. from timeline 2 (segment 6 from either), whatever timeline 1 kept after 6."""
    server = make_server(tmp_path)
    put(server, *(seg(1, n) for n in range(1, 6)), seg(1, 6) + ".partial")
    put(server, *(seg(2, n) for n in range(6, 12)))
    Path(server.wals_directory, "00000002.history").write_text(
        f"1\t0/{6 * MiB + 0x100:X}\tno reason\n"
    )
    backup(server, seg(1, 2))
    assert continuity(server) == (
        True,
        f"10 segments from {seg(1, 2)} (backup 20261120T000000): none missing",
    )
    os.unlink(archived_path(server, seg(2, 9)))
    put(server, seg(1, 9))  # timeline 1 after the switch: not what recovery reads
    ok, hint = continuity(server)
    assert not ok and f"the first {seg(2, 9)}" in hint
    # A history that does not descend from the backup's timeline after its begin is ignored.
    Path(server.wals_directory, "00000003.history").write_text(
        f"1\t0/{MiB:X}\tbefore\n2\t0/{20 * MiB:X}\tx\n"
    )
    assert f"the first {seg(2, 9)}" in continuity(server)[1]


def catalogue(server: ServerConfig) -> tuple[bool, str]:
    result = check_catalogue(server, settle=0)
    return result.ok, result.hint


def test_a_truncated_catalogue_says_run_rebuild_xlogdb(tmp_path: Path) -> None:
    """Before: status counted 11 files with 40 on disk and check said nothing."""
    server = make_server(tmp_path)
    assert catalogue(server) == (True, "no WAL archived yet")
    names = [seg(1, n) for n in range(1, 41)]
    put(server, *names)
    ok, hint = catalogue(server)
    assert not ok and "is missing while the archive holds 40 files" in hint
    rebuild(server)
    assert catalogue(server) == (True, "40 files, as in the archive")
    text = Path(server.xlogdb_path).read_text().splitlines(keepends=True)
    Path(server.xlogdb_path).write_text("".join(text[:11]))
    ok, hint = catalogue(server)
    assert not ok
    assert hint == (
        f"{server.xlogdb_path} lists 11 files, the archive holds 40; 29 not in the catalogue "
        f"(newest {names[-1]}); run 'walvault rebuild-xlogdb pg'"
    )


def test_catalogued_files_missing_from_the_archive(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    names = [seg(1, n) for n in range(1, 6)]
    put(server, *names)
    rebuild(server)
    os.unlink(archived_path(server, names[1]))
    ok, hint = catalogue(server)
    assert not ok and f"1 catalogued but not in the archive (first {names[1]})" in hint


def test_a_batch_being_committed_is_no_disagreement(tmp_path: Path) -> None:
    """archive-wal journals a batch's lines before renaming its files into wals/."""
    server = make_server(tmp_path)
    put(server, seg(1, 1))
    rebuild(server)
    entry = CatalogueEntry(seg(1, 2), 1, 1.0)
    write_journal(server, [entry])
    put(server, seg(1, 2))
    assert catalogue(server)[0]
    append_entries(server, [entry])
    assert catalogue(server)[0]
