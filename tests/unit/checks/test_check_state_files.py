"""Every state file is validated on read: a bad one is named in one line, in check (FAILED) and
status, and the commands keep working around it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from walsupply import make_server
from walvault.archive.catalogue import CatalogueEntry, append_entries, iter_entries
from walvault.archive.journal import HEADER, read_journal, recover
from walvault.archive.layout import archive_journal_path, archived_path
from walvault.backup import info as binfo
from walvault.backup.delete import delete_backup, purge_unneeded_wal
from walvault.backup.info import DONE, BackupInfo
from walvault.checks.runner import run_checks
from walvault.checks.statefiles import check_state_files
from walvault.cli.status import collect
from walvault.config import ServerConfig
from walvault.errors import StateFileError
from walvault.receiver.gaps import gaps_path, load_gaps, record_gap
from walvault.receiver.state import load_state, state_path

MiB = 1 << 20


def seg(n: int) -> str:
    return f"00000001{0:08X}{n:08X}"


def lines(server: ServerConfig) -> dict[str, tuple[bool, str]]:
    return {r.name: (r.ok, r.hint) for r in run_checks(server)}


def status_rows(server: ServerConfig) -> dict[str, str]:
    return {description: value for _key, description, value in collect(server)}


def write(path: str, text: str | bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(text.encode() if isinstance(text, str) else text)


def save_backup(server: ServerConfig, backup_id: str, begin: int) -> None:
    os.makedirs(binfo.data_dir(server, backup_id))
    binfo.save(
        server,
        BackupInfo(
            backup_id,
            server.name,
            status=DONE,
            begin_wal=seg(begin),
            end_wal=seg(begin + 1),
            xlog_segment_size=MiB,
        ),
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[{"first_missing": 1}]', "gap 1 has no last_missing, reason, recorded_at"),
        ('{"first_missing": "x"}', "not a JSON list of gaps"),
        ("[1]", "gap 1 is not a JSON object"),
        ("[{", "Expecting"),
        (
            '[{"first_missing": "000000010000000000000003", "last_missing": "junk", '
            '"recorded_at": 1, "reason": "r"}]',
            "last_missing is not a WAL segment name",
        ),
        (
            '[{"first_missing": "000000010000000000000005", "last_missing": '
            '"000000010000000000000003", "recorded_at": 1, "reason": "r"}]',
            "is not a range of one timeline",
        ),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_malformed_gap_record_is_named_by_check_and_status(
    tmp_path: Path, text: str | bytes, problem: str
) -> None:
    """Before: status and check ended with 'unexpected TypeError' and printed nothing."""
    server = make_server(tmp_path)
    write(gaps_path(server), text)
    with pytest.raises(StateFileError) as caught:
        load_gaps(server)
    assert caught.value.path == gaps_path(server) and problem in caught.value.problem
    found = lines(server)
    assert found["WAL gaps"][0] is False and gaps_path(server) in found["WAL gaps"][1]
    assert found["state files"][0] is False and problem in found["state files"][1]
    assert found["directories"][0] is False  # the other lines still ran (nothing made by cron)
    assert "cannot read" in status_rows(server)["Recorded WAL gaps"]
    assert "Waiting in streaming/" in status_rows(server)  # and status went on


def test_record_gap_refuses_to_replace_a_malformed_record(tmp_path: Path) -> None:
    """The record is an audit trail: a bad one is never silently overwritten."""
    server = make_server(tmp_path)
    write(gaps_path(server), "[1]")
    with pytest.raises(StateFileError):
        record_gap(server, seg(3), seg(4), "test")
    assert Path(gaps_path(server)).read_text() == "[1]"


def test_a_malformed_receiver_record_is_strictly_an_error_and_leniently_empty(
    tmp_path: Path,
) -> None:
    server = make_server(tmp_path)
    for text, problem in (
        ('{"restarts": "three"}', "restarts is not an integer"),
        ('{"pid": true}', "pid is not an integer"),
        ('{"last_lines": [1]}', "last_lines is not a list of text lines"),
        ('{"synchronous": null}', "synchronous is not true or false"),
        ("[]", "not a JSON object"),
        ("{", "Expecting"),
    ):
        write(state_path(server), text)
        with pytest.raises(StateFileError, match="malformed") as caught:
            load_state(server, strict=True)
        assert problem in caught.value.problem, text
        assert load_state(server).restarts == 0  # receive-wal and cron carry on
    write(state_path(server), '{"restarts": 2, "future_field": [1], "pid": null}')
    assert load_state(server, strict=True).restarts == 2  # unknown fields are ignored
    write(state_path(server), '{"restarts": "x"}')
    assert "cannot read" in status_rows(server)["receive-wal record"]
    assert status_rows(server)["receive-wal"] == "NOT RUNNING"


def test_a_malformed_identity_fails_systemid_coherence_and_state_files(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    write(server.identity_path, '{"systemid": "abc"}')
    found = lines(server)
    assert found["systemid coherence"] == (
        False,
        f"cannot check: {server.identity_path}: malformed: 'systemid' is not a number",
    )
    assert server.identity_path in found["state files"][1]


def test_a_malformed_journal_is_healed_by_a_rebuild(tmp_path: Path) -> None:
    """archive-wal's journal is written atomically: a bad one was damaged by something else.
    archive-wal's recovery rebuilds the catalogue from the archive instead of failing."""
    server = make_server(tmp_path)
    names = [seg(n) for n in range(1, 4)]
    for name in names:
        write(archived_path(server, name), b"x")
    append_entries(server, [CatalogueEntry(names[0], 1, 1.0)])
    write(archive_journal_path(server), HEADER + "not a line\n")
    with pytest.raises(StateFileError, match="line 2 is not a catalogue line"):
        read_journal(server)
    assert "walvault-archive-wal.journal" in lines(server)["state files"][1]
    assert recover(server) == []
    assert not os.path.exists(archive_journal_path(server))
    assert sorted(e.name for e in iter_entries(server.xlogdb_path)) == names
    write(archive_journal_path(server), "junk without header\n")
    with pytest.raises(StateFileError, match="first line is not"):
        read_journal(server)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("random junk\n", "line 1 is not 'key=value'"),
        ("status=BOGUS\n", "line 1: status: unknown status"),
        ("status=DONE\nbegin_wal=../etc\n", "line 2: begin_wal: not a WAL segment name"),
        ("status=DONE\nsize=lots\n", "line 2: size: not valid"),
        ("status=DONE\nend_time=yesterday\n", "line 2: end_time: not valid"),
        ("begin_wal=000000010000000000000002\n", "it has no status line"),
        (
            "backup_id=20261120T000000\nstatus=DONE\n",
            "it is the metadata of backup 20261120T000000, not of 20261125T000000 as its "
            "file name says",
        ),
    ],
)
def test_a_junk_backup_info_is_named_never_silently_dropped(
    tmp_path: Path, text: str, problem: str
) -> None:
    server = make_server(tmp_path)
    save_backup(server, "20261120T000000", 2)
    path = binfo.info_path(server, "20261125T000000")
    write(path, text)
    good, bad = binfo.scan_backups(server)
    assert [b.backup_id for b in good] == ["20261120T000000"]  # listed once, not twice
    assert [(p.path, p.problem) for p in bad] == [(path, f"malformed: {problem}")]
    result = check_state_files(server)
    assert not result.ok and path in result.hint and problem in result.hint
    assert status_rows(server)["Unusable backup metadata"] == f"{path}: malformed: {problem}"
    with pytest.raises(StateFileError, match="malformed"):
        binfo.resolve_backup_id(server, "20261125T000000")


def test_an_id_mismatch_no_longer_breaks_delete_and_no_wal_goes_meanwhile(
    tmp_path: Path,
) -> None:
    """Before: a backup.info naming another id listed that backup twice, then delete and
    every cron pass ended with 'unexpected FileNotFoundError'.  And WAL purge must wait:
    the bad file may describe the oldest backup."""
    server = make_server(tmp_path)
    save_backup(server, "20261120T000000", 4)
    save_backup(server, "20261121T000000", 6)
    names = [seg(n) for n in range(1, 8)]
    for name in names:
        write(archived_path(server, name), b"x")
    append_entries(server, [CatalogueEntry(n, 1, 1.0) for n in names])
    impostor = binfo.info_path(server, "20261119T000000")
    write(impostor, Path(binfo.info_path(server, "20261121T000000")).read_text())
    echoed: list[str] = []
    result = delete_backup(server, "20261120T000000", echoed.append)
    assert result.wal.removed == [] and result.wal.postponed
    assert impostor in result.wal.postponed
    assert all(os.path.exists(archived_path(server, n)) for n in names)
    assert "WAL removal postponed" in "\n".join(echoed)
    os.unlink(impostor)  # the operator removes the bad file: the purge happens
    purged = purge_unneeded_wal(server, echoed.append)
    assert purged.removed == names[:5]


def test_state_files_ok_when_everything_is_fine_or_absent(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    assert check_state_files(server).ok
    record_gap(server, seg(3), seg(4), "test")
    write(state_path(server), json.dumps({"restarts": 1}))
    save_backup(server, "20261120T000000", 2)
    assert check_state_files(server).ok


def test_archive_wal_refuses_with_a_malformed_identity_and_keeps_the_files(
    tmp_path: Path,
) -> None:
    """Without a usable identity archive-wal cannot tell this cluster's WAL from another's:
    it stops with one line and every file stays where it is."""
    from walsupply import write_segments
    from walvault.archive.archiver import archive_wal

    server = make_server(tmp_path)
    names = write_segments(server.streaming_wals_directory, 1, 2)
    write(server.identity_path, "{")
    with pytest.raises(StateFileError, match=r"identity\.json: malformed: not valid JSON"):
        archive_wal(server, lambda _line: None)
    assert sorted(os.listdir(server.streaming_wals_directory)) == names
    assert not os.path.exists(server.wals_directory) or not os.listdir(server.wals_directory)
