"""replication-status rendering (Barman's shapes), sizes, and switch-wal's argument checks."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walvault.cli.main import main
from walvault.cli.replication_status import full_lines, minimal_lines, sync_stage
from walvault.humanize import pretty_size
from walvault.postgres.replication_stats import ReplicationStats, StreamingClient
from walvault.wal.names import parse_lsn

STARTED = datetime.datetime(2026, 11, 25, 16, 0, 39, 347679, tzinfo=datetime.UTC)

STREAMER = StreamingClient(
    pid=8505,
    usename="postgres",
    application_name="barman_receive_wal",
    client_addr=None,
    client_hostname=None,
    client_port=-1,
    backend_start=STARTED,
    backend_xmin=None,
    state="streaming",
    sent_lsn=parse_lsn("0/C39428"),
    write_lsn=parse_lsn("0/C39428"),
    flush_lsn=parse_lsn("0/C00000"),
    replay_lsn=None,
    write_lag=None,
    flush_lag=None,
    replay_lag=None,
    sync_priority=0,
    sync_state="async",
    reply_time=None,
    slot_name="barman",
)
CURRENT = parse_lsn("0/C39428")


def test_full_output_matches_barmans_shape() -> None:
    stats = ReplicationStats(in_recovery=False, current_lsn=CURRENT, clients=(STREAMER,))
    assert full_lines("pg", "all", stats) == [
        "Status of streaming clients for server 'pg':",
        "  Current LSN on master: 0/C39428",
        "  Number of streaming clients: 1",
        "",
        "  1. Async WAL streamer",
        "     Application name: barman_receive_wal",
        "     Sync stage      : 3/3 Remote write",
        "     Communication   : Unix domain socket",
        "     User name       : postgres",
        "     Current state   : streaming (async)",
        "     Replication slot: barman",
        "     WAL sender PID  : 8505",
        "     Started at      : 2026-11-25 16:00:39.347679+00:00",
        "     Sent LSN   : 0/C39428 (diff: 0 B)",
        "     Write LSN  : 0/C39428 (diff: 0 B)",
        "     Flush LSN  : 0/C00000 (diff: -229.0 KiB)",
    ]


def test_minimal_output_and_sync_title() -> None:
    sync = replace(STREAMER, sync_state="sync", sync_priority=1)
    standby = replace(
        STREAMER,
        application_name="standby",
        usename="repl",
        client_addr="10.0.0.2",
        client_port=40000,
        replay_lsn=parse_lsn("0/C00000"),
        slot_name=None,
    )
    stats = ReplicationStats(in_recovery=False, current_lsn=CURRENT, clients=(sync, standby))
    assert minimal_lines("pg", "all", stats) == [
        "Streaming clients for master 'pg' (LSN @ 0/C39428):",
        "  1. W) postgres@socket S:0/C39428 W:0/C39428 P:1 AN:barman_receive_wal",
        "  2. A) repl@10.0.0.2 S:0/C39428 F:0/C00000 R:0/C00000 P:0 AN:standby",
    ]
    full = full_lines("pg", "all", stats)
    assert "  1. #1 Sync WAL streamer" in full
    assert "  2. Async standby" in full
    assert "     IP Address      : 10.0.0.2 / Port: 40000 / Host: -" in full
    assert "     Replay LSN : 0/C00000 (diff: -229.0 KiB)" in full


def test_no_clients() -> None:
    stats = ReplicationStats(in_recovery=True, current_lsn=CURRENT, clients=())
    assert full_lines("pg", "hot-standby", stats) == [
        "Status of hot standby servers for server 'pg':",
        "  Current LSN on standby: 0/C39428",
        "  No hot standby servers attached",
    ]


@pytest.mark.parametrize(
    ("sent", "write", "flush", "replay", "stage"),
    [
        (0, 0, 0, 0, "5/5 Hot standby (max)"),
        (0, 0, 0, -1, "4/5 2-safe"),
        (0, 0, -1, -1, "3/5 Remote write"),
        (0, -1, -1, -1, "2/5 WAL Sent (min)"),
        (-1, -1, -1, -1, "1/5 1-safe"),
        (0, 0, 0, None, "3/3 Remote write"),
        (0, -1, -1, None, "2/3 WAL Sent (min)"),
        (-1, -1, -1, None, "1/3 1-safe"),
    ],
)
def test_sync_stages(sent: int, write: int, flush: int, replay: int | None, stage: str) -> None:
    client = replace(
        STREAMER,
        sent_lsn=CURRENT + sent,
        write_lsn=CURRENT + write,
        flush_lsn=CURRENT + flush,
        replay_lsn=None if replay is None else CURRENT + replay,
    )
    assert sync_stage(client, CURRENT) == stage


def test_pretty_size() -> None:
    assert pretty_size(0) == "0 B"
    assert pretty_size(1023) == "1023 B"
    assert pretty_size(-234496) == "-229.0 KiB"
    assert pretty_size(16 << 20) == "16.0 MiB"
    assert pretty_size(3 << 40) == "3.0 TiB"


@given(st.integers(min_value=-(1 << 62), max_value=1 << 62))
def test_pretty_size_keeps_the_sign(size: int) -> None:
    text = pretty_size(size)
    assert text.startswith("-") == (size < 0)
    assert text.split()[1] in {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}


def test_switch_wal_archive_timeout_must_not_be_negative(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["switch-wal", "--archive-timeout", "-1", "pg"])
    assert exit_info.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err
