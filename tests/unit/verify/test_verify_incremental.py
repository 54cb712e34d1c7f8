"""Incremental verification over an archive directory of WAL built record by record.

The real thing (cron, check, PostgreSQL's WAL) is in tests/integration/test_verify.py; here
the pass's own logic: resuming with the carry, bounded passes, problems that clear, missing
segments, a state file that does not validate, a superseding backup, a new timeline.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fakewal import archive_path, make_server
from walbuilder import MIB, WalBuilder, segment_name
from walvault.backup import info as binfo
from walvault.backup.info import DONE, BackupInfo
from walvault.config import ServerConfig
from walvault.verify import incremental
from walvault.verify.incremental import (
    StateError,
    check_result,
    load_state,
    parse_state,
    run_pass,
    state_path,
)
from walvault.wal.names import format_lsn


def filled_builder(segments: int, tli: int = 1) -> WalBuilder:
    """Records over ``segments`` complete segments, one of them cut at each boundary."""
    builder = WalBuilder(tli=tli)
    for index in range(segments):
        end = builder.base + (index + 1) * MIB
        while builder.pos < end - 2500:
            builder.add(1000)
        builder.add(3000)  # crosses into the next segment
    builder.add(10)
    return builder


def archive(server: ServerConfig, segments: list[tuple[str, bytes]]) -> None:
    for name, data in segments:
        archive_path(server, name).write_bytes(data)


@pytest.fixture
def server(tmp_path: Path) -> ServerConfig:
    return make_server(tmp_path)


def test_passes_resume_with_the_chain_carried_over(server: ServerConfig) -> None:
    built = filled_builder(5).segments()
    archive(server, built[:3])
    first = run_pass(server)
    assert first is not None and first.problem is None
    assert first.first_segment == built[0][0] and first.last_segment == built[2][0]
    assert first.carry is not None and first.carry.pending_left > 0  # a record is cut there
    assert load_state(server) == first
    archive(server, built[3:5])
    second = run_pass(server)
    assert second is not None and second.problem is None
    assert second.last_segment == built[4][0] and second.segments == 5
    hint = check_result(server).hint
    assert hint.startswith(f"verified {built[0][0]} to {built[4][0]} (5 segments), RPO ")


def test_a_pass_is_bounded_but_always_progresses(server: ServerConfig) -> None:
    built = filled_builder(4).segments()
    archive(server, built[:4])
    seen = []
    for _ in range(4):
        state = run_pass(server, seconds=0)
        assert state is not None
        seen.append(state.last_segment)
    assert seen == [name for name, _ in built[:4]]


def test_a_damaged_segment_stays_reported_until_it_is_repaired(server: ServerConfig) -> None:
    built = filled_builder(4).segments()
    archive(server, built[:4])
    name, data = built[2]
    damaged = bytearray(data)
    damaged[300_000] ^= 0x40
    archive_path(server, name).write_bytes(bytes(damaged))
    state = run_pass(server)
    assert state is not None and state.problem_segment == name and state.last_segment == built[1][0]
    assert state.problem is not None and "CRC mismatch" in state.problem
    check = check_result(server)
    assert not check.ok and check.hint.startswith(f"first bad segment {name}: {name}: record at")
    again = run_pass(server)  # walked again: still bad
    assert again is not None and again.problem == state.problem
    archive_path(server, name).write_bytes(data)
    repaired = run_pass(server)
    assert repaired is not None and repaired.problem is None
    assert repaired.last_segment == built[3][0] and check_result(server).ok


def test_a_hole_is_a_problem_the_archive_s_end_is_not(server: ServerConfig) -> None:
    built = filled_builder(5).segments()
    archive(server, built[:2])
    state = run_pass(server)
    assert state is not None and state.problem is None and state.last_segment == built[1][0]
    archive(server, built[3:4])  # 3 follows, 2 does not
    Path(server.streaming_wals_directory, built[2][0]).write_bytes(built[2][1])
    state = run_pass(server)
    assert state is not None and state.problem is None  # still on its way: not yet a hole
    Path(server.streaming_wals_directory, built[2][0]).unlink()
    state = run_pass(server)
    assert state is not None and state.problem == f"{built[2][0]} is missing from the archive"
    assert not check_result(server).ok


def test_a_state_file_that_does_not_validate(server: ServerConfig) -> None:
    built = filled_builder(2).segments()
    archive(server, built[:2])
    Path(state_path(server)).write_text('{"version": 1, "segment_size": 3}')
    check = check_result(server)
    assert not check.ok and "unusable" in check.hint and "starts over" in check.hint
    state = run_pass(server)  # starts over
    assert state is not None and state.last_segment == built[1][0] and check_result(server).ok
    good = json.loads(Path(state_path(server)).read_text())
    for key, value in [
        ("last_segment", "../../etc/passwd"),
        ("timeline", 0),
        ("rpo_lsn", "12"),
        ("carry", {"next_lsn": "0/1", "page_tli": 1, "pending_head": "zz"}),
        ("carry", {**good["carry"], "next_lsn": "0/0"}),  # does not follow last_segment
        ("version", 2),
    ]:
        with pytest.raises(StateError):
            parse_state(json.dumps({**good, key: value}))
    assert parse_state(json.dumps(good)) == state


def test_a_backup_after_a_problem_moves_the_start(server: ServerConfig) -> None:
    builder = filled_builder(5)
    built = builder.segments()
    archive(server, built[:5])
    archive_path(server, built[1][0]).write_bytes(built[1][1][:1000])  # truncated
    state = run_pass(server)
    assert state is not None and state.problem_segment == built[1][0]
    begin = done_backup(server, builder, 3)
    messages: list[str] = []
    state = run_pass(server, echo=messages.append)
    assert state is not None and state.problem is None
    assert state.first_segment == built[3][0] and state.start_lsn == begin
    assert state.last_segment == built[4][0]
    assert messages == ["WAL verification of pg restarts at backup 20261206T120003"]


def fork(segments_before: int, fork_index: int) -> tuple[WalBuilder, WalBuilder, int]:
    """Timeline 1 written on, and timeline 2 forked from it inside segment ``fork_index``."""
    builder = WalBuilder()
    for index in range(segments_before):
        end = builder.base + (index + 1) * MIB
        while builder.pos < end - 2500:
            builder.add(1000)
        builder.add(3000)
    while builder.pos < builder.base + fork_index * MIB + 200_000:
        builder.add(700)
    switch_point = builder.pos
    timeline2 = copy.deepcopy(builder)
    timeline2.tli = 2  # pages opened from now on carry timeline 2
    for b in (builder, timeline2):
        while b.pos < b.base + (fork_index + 3) * MIB:
            b.add(900)
    return builder, timeline2, switch_point


def named(builder: WalBuilder, tli: int, indexes: range) -> list[tuple[str, bytes]]:
    segments = builder.segments()
    return [(segment_name(tli, builder.start_segno + i), segments[i][1]) for i in indexes]


def history(server: ServerConfig, switch_point: int) -> None:
    text = f"1\t{format_lsn(switch_point)}\tno recovery target specified\n"
    Path(server.wals_directory, "00000002.history").write_text(text)


def test_a_new_timeline_is_followed_from_the_fork(server: ServerConfig) -> None:
    one, two, switch_point = fork(3, 3)
    archive(server, named(one, 1, range(3)))
    state = run_pass(server)
    assert state is not None and state.last_segment == segment_name(1, 5)
    history(server, switch_point)
    archive(server, named(two, 2, range(3, 5)))
    state = run_pass(server)
    assert state is not None and state.problem is None, state.problem
    assert state.timeline == 2 and state.last_segment == segment_name(2, 7)
    assert state.carry is not None and state.segments == 5


def test_a_fork_behind_the_verified_end_is_walked_again(server: ServerConfig) -> None:
    one, two, switch_point = fork(3, 3)
    archive(server, named(one, 1, range(5)))  # the old timeline went on past the fork
    state = run_pass(server)
    assert state is not None and state.last_segment == segment_name(1, 7)
    history(server, switch_point)
    archive(server, named(two, 2, range(3, 5)))
    state = run_pass(server)
    assert state is not None and state.problem is None, state.problem
    assert state.timeline == 2 and state.last_segment == segment_name(2, 7)
    assert state.first_segment == segment_name(1, 3) and state.segments == 5


def test_nothing_to_verify(server: ServerConfig) -> None:
    assert run_pass(server) is None
    assert check_result(server).ok and "not run yet" in check_result(server).hint


def done_backup(server: ServerConfig, builder: WalBuilder, index: int) -> int:
    """A DONE backup beginning at a record of segment ``index``; returns its begin LSN."""
    begin = next(lsn for lsn in builder.starts if lsn // MIB == builder.start_segno + index)
    name = segment_name(1, builder.start_segno + index)
    binfo.save(
        server,
        BackupInfo(
            backup_id=f"20261206T12000{index}",
            server_name="pg",
            status=DONE,
            begin_wal=name,
            begin_xlog=format_lsn(begin),
            end_wal=name,
            end_xlog=format_lsn(begin + 100),
            timeline=1,
            xlog_segment_size=MIB,
        ),
    )
    return begin


def test_wal_that_retention_removed_is_not_a_hole(server: ServerConfig) -> None:
    builder = filled_builder(6)
    built = builder.segments()
    archive(server, built[:2])
    assert run_pass(server) is not None
    begin = done_backup(server, builder, 4)
    archive(server, built[4:6])  # 2 and 3 went with an older backup
    state = run_pass(server)
    assert state is not None and state.problem is None
    assert state.first_segment == built[4][0] and state.start_lsn == begin
    assert state.last_segment == built[5][0]
    # but a hole that a kept backup still needs is one
    done_backup(server, builder, 1)
    Path(state_path(server)).unlink()
    state = run_pass(server)
    assert state is not None and state.problem == f"{built[2][0]} is missing from the archive"


def test_a_timeline_announced_without_wal_does_not_stall_the_pass(server: ServerConfig) -> None:
    one, two, switch_point = fork(3, 3)
    archive(server, named(one, 1, range(4)))
    history(server, switch_point)
    archive(server, named(two, 2, range(3, 5)))
    # a restored copy promoted once and archived only its history file: timeline 3
    text = f"1\t{format_lsn(switch_point)}\tx\n2\t{format_lsn(switch_point + 4 * MIB)}\ty\n"
    Path(server.wals_directory, "00000003.history").write_text(text)
    state = run_pass(server)
    assert state is not None and state.problem is None
    assert state.timeline == 2 and state.last_segment == segment_name(2, 7)


def test_cron_starts_a_pass_only_when_there_is_something_to_do(server: ServerConfig) -> None:
    built = filled_builder(3).segments()
    archive(server, built[:2])
    assert incremental.needs_pass(server)  # never run
    run_pass(server)
    assert not incremental.needs_pass(server)
    archive(server, built[2:3])
    assert incremental.needs_pass(server)
    run_pass(server)
    assert not incremental.needs_pass(server)
    Path(state_path(server)).write_text("{")
    assert incremental.needs_pass(server)
