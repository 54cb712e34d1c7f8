"""The durable fork record: validated on read, deduplicated, superseded by later backups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakewal import make_server
from walvault.receiver.forks import (
    Fork,
    ForkFileError,
    ForkSummary,
    fork_summary,
    forks_path,
    load_forks,
    open_forks,
    record_fork,
)

FORK = Fork(1, 2, 0xA00000, 0xD5A000, 0x35A000, "00000002000000000000000A", 1700000000.0)


def test_record_is_durable_readable_and_deduplicated(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    assert load_forks(server) == []
    assert record_fork(server, FORK) == FORK
    stored = json.loads(Path(forks_path(server)).read_text())
    assert stored == [
        {
            "old_timeline": 1,
            "new_timeline": 2,
            "fork_lsn": "0/A00000",
            "streamed_to": "0/D5A000",
            "abandoned_bytes": 0x35A000,
            "restart_segment": "00000002000000000000000A",
            "recorded_at": 1700000000.0,
        }
    ]
    # the same event seen again (a re-run after a crash) is not a second fork
    again = Fork(1, 2, 0xA00000, 0xC00000, 0x200000, "00000002000000000000000A", 1700000100.0)
    assert record_fork(server, again) == FORK
    further = Fork(1, 2, 0xA00000, 0xE00000, 0x400000, "00000002000000000000000A", 1700000200.0)
    kept = record_fork(server, further)
    assert kept.streamed_to == 0xE00000 and kept.recorded_at == FORK.recorded_at
    other = Fork(2, 3, 0xF00000, 0xF00100, 0x100, "00000003000000000000000F", 1700000300.0)
    record_fork(server, other)
    assert load_forks(server) == [kept, other]
    assert "timeline 1 -> 2 at 0/A00000" in kept.describe()
    assert "4.0 MiB" in kept.describe()


def test_superseded_only_by_a_backup_beginning_after_the_fork_on_the_new_timeline() -> None:
    assert open_forks([FORK], []) == [FORK]
    assert open_forks([FORK], [(1, 0xB00000)]) == [FORK]  # old timeline: not after the fork
    assert open_forks([FORK], [(2, 0x900000)]) == [FORK]  # before the fork
    assert open_forks([FORK], [(2, 0xA00000)]) == []
    assert open_forks([FORK], [(3, 0x1000000)]) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not valid JSON"),
        ('{"a": 1}', "must hold a JSON list"),
        ("[1]", "record 1 is not a JSON object"),
        ('[{"old_timeline": 1}]', "must have exactly the keys"),
    ],
)
def test_a_bad_file_is_named_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    server = make_server(tmp_path)
    Path(forks_path(server)).write_text(content)
    with pytest.raises(ForkFileError) as caught:
        load_forks(server)
    assert message in caught.value.message
    assert forks_path(server) in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("fork_lsn", "5010E40", "fork_lsn must be an LSN"),
        ("streamed_to", 5, "streamed_to must be an LSN"),
        ("old_timeline", 0, "old_timeline and new_timeline must be two timeline IDs"),
        ("new_timeline", True, "old_timeline and new_timeline must be two timeline IDs"),
        ("new_timeline", 1, "old_timeline and new_timeline must be two timeline IDs"),
        ("abandoned_bytes", -1, "abandoned_bytes must be"),
        ("restart_segment", "../../etc", "restart_segment must be a WAL segment name"),
        ("recorded_at", float("nan"), "recorded_at must be a time"),
        ("recorded_at", "yesterday", "recorded_at must be a time"),
    ],
)
def test_a_bad_record_is_named_with_its_field(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    server = make_server(tmp_path)
    good = FORK.to_json()
    Path(forks_path(server)).write_text(json.dumps([good, {**good, key: value}]))
    with pytest.raises(ForkFileError) as caught:
        load_forks(server)
    assert f"record 2 {message}" in caught.value.message


def test_fork_summary_for_metrics(tmp_path: Path) -> None:
    from walvault.backup.info import BackupInfo, save

    server = make_server(tmp_path)
    assert fork_summary(server) == ForkSummary(0, 0, 0, None)
    record_fork(server, FORK)
    assert fork_summary(server) == ForkSummary(1, 1, FORK.abandoned_bytes, FORK.recorded_at)
    before = BackupInfo("20261101T000000", "pg", "DONE", timeline=1, begin_xlog="0/900028")
    failed = BackupInfo("20261102T000000", "pg", "FAILED", timeline=2, begin_xlog="0/B00028")
    save(server, before)
    save(server, failed)
    assert fork_summary(server).open_forks == 1
    save(server, BackupInfo("20261103T000000", "pg", "DONE", timeline=2, begin_xlog="0/B00028"))
    assert fork_summary(server) == ForkSummary(1, 0, FORK.abandoned_bytes, FORK.recorded_at)
