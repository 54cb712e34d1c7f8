"""receive-wal against real PostgreSQL 15: slots, synchronous mode, kills, reset, WAL sources."""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from walvault.postgres.sources import inspect_wal_source
from walvault.receiver.reset import reset_position
from wvharness import (
    make_segments,
    segment_names,
    slot_active,
    start_receiver,
    streaming_server,
    wait_for,
)

APP = "walvault_receive_wal"


def slot_row(pg: Any, slot: str = "walvault") -> tuple[Any, ...] | None:
    rows = pg.sql(
        "SELECT active, restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    )
    return rows[0] if rows else None


def wait_streamed(wv: Any, names: list[str]) -> None:
    streaming = Path(wv.server().streaming_wals_directory)
    wait_for(lambda: set(names) <= set(segment_names(streaming)), what=f"segments {names} streamed")


def test_streams_on_a_slot_byte_identical(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    proc = start_receiver(wv, pg)
    state = wait_for(lambda: pg.replication_state(APP), what="pg_stat_replication row")
    assert state == "streaming"
    closed = make_segments(pg, 3)
    wait_streamed(wv, closed)
    streaming = Path(wv.server().streaming_wals_directory)
    for name in closed:
        assert (streaming / name).read_bytes() == (pg.wal_dir / name).read_bytes(), name
    assert slot_row(pg) is not None and slot_row(pg)[0] is True
    # the slot reserved WAL from its creation (RESERVE_WAL): restart_lsn is set
    assert slot_row(pg)[1] is not None
    identity = json.loads((Path(wv.server().backup_directory) / "identity.json").read_text())
    assert identity == {"systemid": str(pg.system_identifier()), "version": "15"}
    # a second receive-wal refuses to run
    second = wv.run("receive-wal", "pg")
    assert second.returncode == 1
    assert "Another receive-wal process is already running for server pg." in second.stderr
    # terminate-process stops it gracefully; the .partial stays
    pg.sql("INSERT INTO t VALUES (1, 'tail')")
    wait_for(lambda: any(n.endswith(".partial") for n in os.listdir(streaming)), what=".partial")
    stop = wv.run("terminate-process", "pg", "receive-wal")
    assert stop.returncode == 0, stop.stderr
    assert f"Stopped process receive-wal({proc.pid})" in stop.stdout
    assert proc.wait(timeout=20) == 0
    assert any(n.endswith(".partial") for n in os.listdir(streaming))
    status = json.loads((Path(wv.server().backup_directory) / "walvault-receiver.json").read_text())
    assert status["exit_code"] == 0 and "stopped on request" in status["exit_reason"]
    assert any("finished segment" in line for line in status["last_lines"])


def test_synchronous_streaming(pg: Any, walvault_factory: Any) -> None:
    pg.configure({"synchronous_standby_names": f"FIRST 1 ({APP})"})
    wv = walvault_factory({"pg": streaming_server(pg)})
    start_receiver(wv, pg)
    wait_for(
        lambda: (
            pg.scalar(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s", (APP,)
            )
            == "sync"
        ),
        what="sync_state = sync",
    )
    with pg.connect(pg.superuser) as conn:
        conn.execute("SET statement_timeout = '20s'")
        conn.execute("CREATE TABLE synced (i int)")
        conn.execute("INSERT INTO synced VALUES (1)")  # would hang without a sync receiver


def test_kill_9_of_pg_receivewal_then_resume_without_gap(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    proc = start_receiver(wv, pg)
    first = make_segments(pg, 2)
    wait_streamed(wv, first)
    state_file = Path(wv.server().backup_directory) / "walvault-receiver.json"
    child = json.loads(state_file.read_text())["child_pid"]
    os.kill(child, signal.SIGKILL)
    assert proc.wait(timeout=20) == 1
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert "ERROR: pg_receivewal terminated by signal: 9" in err
    during = make_segments(pg, 3)  # written while nothing streams; the slot keeps it
    start_receiver(wv, pg)
    after = make_segments(pg, 1)
    wait_streamed(wv, first + during + after)
    names = segment_names(wv.server().streaming_wals_directory)
    numbers = [int(n[8:], 16) for n in names]
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), names


def test_slot_commands(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, create_slot="manual")})
    missing = wv.run("receive-wal", "pg")
    assert missing.returncode == 1
    assert "replication slot 'walvault' doesn't exist" in missing.stderr
    assert "walvault receive-wal --create-slot pg" in missing.stderr
    created = wv.run("receive-wal", "--create-slot", "pg")
    assert created.returncode == 0, created.stderr
    assert "Replication slot 'walvault' created" in created.stdout
    assert slot_row(pg)[1] is not None  # WAL reserved before any receiver connected
    again = wv.run("receive-wal", "--create-slot", "pg")
    assert again.returncode == 1
    assert "ERROR: Replication slot 'walvault' already exists" in again.stderr
    ok = wv.run("receive-wal", "--create-slot", "--if-not-exists", "pg")
    assert ok.returncode == 0
    assert "--if-not-exists was specified. Skipping creation" in ok.stdout
    proc = start_receiver(wv, pg)
    busy = wv.run("receive-wal", "--drop-slot", "pg")
    assert busy.returncode == 1
    assert "because it is in use" in busy.stderr
    stop = wv.run("receive-wal", "--stop", "pg")
    assert stop.returncode == 0, stop.stderr
    assert proc.wait(timeout=20) == 0
    wait_for(lambda: not slot_row(pg)[0], what="slot inactive")
    dropped = wv.run("receive-wal", "--drop-slot", "pg")
    assert dropped.returncode == 0, dropped.stderr
    assert slot_row(pg) is None
    gone = wv.run("receive-wal", "--drop-slot", "pg")
    assert gone.returncode == 1 and "does not exist" in gone.stderr
    nothing = wv.run("receive-wal", "--stop", "pg")
    assert nothing.returncode == 1
    assert "Termination of receive-wal failed: no such process for server pg" in nothing.stderr


def _oldest_on_server(pg: Any) -> str:
    """The oracle: the oldest segment still in the server's pg_wal."""
    return str(pg.scalar("SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'"))


def test_lost_slot_reset_records_the_gap_and_cron_streams_again(
    pg: Any, walvault_factory: Any
) -> None:
    pg.configure({"max_wal_size": "32MB", "min_wal_size": "32MB"})
    wv = walvault_factory({"pg": streaming_server(pg)})
    proc = start_receiver(wv, pg)
    wait_streamed(wv, make_segments(pg, 2))
    pg.sql("INSERT INTO t VALUES (1, 'in the partial')")
    streaming = Path(wv.server().streaming_wals_directory)
    partial = wait_for(
        lambda: next((n for n in os.listdir(streaming) if n.endswith(".partial")), None),
        what="a .partial",
    )
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    proc.wait(timeout=20)
    wait_for(lambda: not slot_row(pg)[0], what="slot inactive")
    # the slot is lost and the server recycles the WAL walvault needs
    assert wv.run("receive-wal", "--drop-slot", "pg").returncode == 0
    for _ in range(3):
        make_segments(pg, 3)
        pg.sql("CHECKPOINT")
    oldest = _oldest_on_server(pg)
    assert oldest[8:] > partial[8:24], (oldest, partial)
    # receive-wal re-creates the slot (create_slot = auto) and pg_receivewal is refused
    failed = wv.run("receive-wal", "pg", timeout=60)
    assert failed.returncode == 1
    assert "has already been removed" in failed.stderr, failed.stderr
    check = wv.run("check", "pg")
    line = next(ln for ln in check.stdout.splitlines() if "receive-wal running:" in ln)
    assert "FAILED" in line and "has already been removed" in line, line
    assert "walvault receive-wal --reset pg" in line, line
    assert "disconnected" not in line.split("cause:")[-1], line
    status = wv.run("status", "pg").stdout
    assert "Cause of the last failure: pg_receivewal: error:" in status, status
    assert "has already been removed" in status

    # pg_receivewal's status reports can drag the new slot's restart_lsn back to the removed
    # position it asked for (a race with the walsender's failure): --reset must not trust it
    server = wv.server()
    source = inspect_wal_source(server)
    assert source.slot is not None
    dragged = replace(source, slot=replace(source.slot, restart_lsn=int(partial[8:24], 16) << 20))
    said: list[str] = []
    logged: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = logged.append  # type: ignore[method-assign]
    logging.getLogger("walvault").addHandler(collector)
    try:
        assert reset_position(server, dragged, said.append, said.append) == 0
    finally:
        logging.getLogger("walvault").removeHandler(collector)
    assert any("Recording a WAL gap" in line for line in said), said
    # a destructive decision is one log line saying what and why
    [gap_line] = [r.getMessage() for r in logged if "recorded a WAL gap" in r.getMessage()]
    assert f"server pg: receive-wal --reset recorded a WAL gap {partial[:24]}.." in gap_line
    assert "will never be archived" in gap_line and "reset" in gap_line
    gaps = json.loads((Path(server.backup_directory) / "walvault-gaps.json").read_text())
    assert len(gaps) == 1, gaps
    assert gaps[0]["first_missing"] == partial[:24]
    assert gaps[0]["last_missing"] == f"{int(oldest, 16) - 1:024X}", (gaps, oldest)
    assert "reset" in gaps[0]["reason"]
    assert (streaming / partial).stat().st_size > 0  # the WAL it holds is kept, for archive-wal
    assert (streaming / f"{oldest}.partial").exists()
    again = wv.run("receive-wal", "--reset", "pg")  # a re-run records nothing twice
    assert again.returncode == 0, again.stdout + again.stderr
    assert "recorded already" in again.stdout and "Nothing to do" in again.stdout, again.stdout
    assert len(json.loads((Path(server.backup_directory) / "walvault-gaps.json").read_text())) == 1

    # cron streams again, from the oldest segment the server had
    assert wv.run("cron").returncode == 0
    wait_for(lambda: slot_active(pg), what="streaming again")
    wait_streamed(wv, make_segments(pg, 1))
    assert (
        oldest in segment_names(streaming)
        or (Path(wv.server().wals_directory) / oldest[:16] / oldest).exists()
    )
    check = wv.run("check", "pg")
    assert "receive-wal running: OK" in check.stdout, check.stdout
    assert "WAL gaps: FAILED" in check.stdout
    aligned = wv.run("receive-wal", "--reset", "pg")
    assert aligned.returncode == 1 and "Process is still running" in aligned.stderr
    wv.run("receive-wal", "--stop", "pg")


def test_wal_streaming_conninfo_primary_while_conninfo_is_standby(
    pg: Any, pg_factory: Any, walvault_factory: Any
) -> None:
    standby = pg.make_standby(name="standby")
    options = streaming_server(
        standby,
        wal_streaming_conninfo=pg.streaming_conninfo(),
        wal_conninfo=pg.conninfo(),
    )
    wv = walvault_factory({"pg": options})
    start_receiver(wv, pg)  # the slot is on the primary
    wait_streamed(wv, make_segments(pg, 2))
    other = pg_factory("other")
    wv.write(
        {
            "pg": {
                **options,
                "wal_streaming_conninfo": other.streaming_conninfo(),
                "wal_conninfo": other.conninfo(),
            }
        }
    )
    wv.run("receive-wal", "--stop", "pg")
    refused = wv.run("receive-wal", "pg")
    assert refused.returncode == 1
    assert "must point at the same cluster" in refused.stderr
    assert other.streaming_password not in refused.stderr + refused.stdout


def test_monitoring_user_without_privileges_is_refused(pg: Any, walvault_factory: Any) -> None:
    options = streaming_server(pg, wal_conninfo=pg.conninfo("nomonitor"))
    wv = walvault_factory({"pg": options})
    refused = wv.run("receive-wal", "pg")
    assert refused.returncode == 1
    assert "lacks monitoring privileges" in refused.stderr
    assert "pg_monitor" in refused.stderr


def test_promotion_of_a_standby_source_continues_on_timeline_2(
    pg: Any, walvault_factory: Any
) -> None:
    standby = pg.make_standby(name="standby")
    wv = walvault_factory({"pg": streaming_server(standby)})
    start_receiver(wv, standby)
    wait_streamed(wv, make_segments(pg, 2))
    pg.stop()
    standby.promote()
    pg.sql  # noqa: B018 - the old primary is gone; write on the promoted standby
    standby.sql("CREATE TABLE after_promotion (i int)")
    closed = standby.switch_wal()
    assert closed.startswith("00000002")
    streaming = Path(wv.server().streaming_wals_directory)
    wait_for(lambda: (streaming / "00000002.history").exists(), what="history file")
    wait_streamed(wv, [closed])
    assert (streaming / closed).read_bytes() == (standby.wal_dir / closed).read_bytes()
    # the old timeline's last segment stays as a .partial, for archive-wal to keep
    old_partials = [
        n for n in os.listdir(streaming) if n.startswith("00000001") and n.endswith(".partial")
    ]
    assert old_partials, sorted(os.listdir(streaming))


@pytest.mark.parametrize("option", ["streaming_archiver"])
def test_refuses_when_streaming_archiver_off(pg: Any, walvault_factory: Any, option: str) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, **{option: "off", "archiver": "on"})})
    result = wv.run("receive-wal", "pg")
    assert result.returncode == 1
    assert "streaming_archiver option set to 'off'" in result.stderr


def test_resume_points_come_from_headers_not_names(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, compression="zstd")})
    server = wv.server()
    proc = start_receiver(wv, pg)
    closed = make_segments(pg, 3)
    wait_streamed(wv, closed)
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    proc.wait(timeout=20)
    wals = Path(server.wals_directory)
    assert wv.run("archive-wal", "pg").returncode == 0
    newest = max(segment_names(wals / closed[0][:16]))
    assert newest >= closed[-2], (newest, closed)
    # a fresh receiver: nothing in streaming/, and the newest archived file misnamed
    streaming = Path(server.streaming_wals_directory)
    for name in os.listdir(streaming):
        (streaming / name).unlink()
    misnamed = f"{int(newest, 16) + 4:024X}"
    os.rename(wals / newest[:16] / newest, wals / newest[:16] / misnamed)
    refused = wv.run("receive-wal", "pg")
    assert refused.returncode == 1
    assert f"the newest archived WAL file {wals / newest[:16] / misnamed} is not the segment" in (
        refused.stderr
    ), refused.stderr
    assert "receive-wal --reset pg" in refused.stderr
    assert not any(streaming.iterdir())  # no status file made from the name alone
    check = wv.run("check", "pg").stdout
    assert "is not the segment its name says" in check, check

    # what the old name-based guard left: a status file after the misnamed one
    ahead = streaming / f"{int(misnamed, 16) + 1:024X}.partial"
    ahead.write_bytes(b"")
    failed = wv.run("receive-wal", "pg", timeout=60)
    assert failed.returncode == 1
    assert "is ahead of the WAL flush position" in failed.stderr, failed.stderr
    line = next(
        ln for ln in wv.run("check", "pg").stdout.splitlines() if "receive-wal running" in ln
    )
    assert "ahead of the WAL flush position" in line and "--reset pg" in line, line

    reset = wv.run("receive-wal", "--reset", "pg")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert f"{wals / newest[:16] / misnamed} is not the segment its name says" in reset.stderr
    assert f"Removing status file {ahead}" in reset.stdout, reset.stdout
    assert f"Creating status file {streaming / newest}.partial" in reset.stdout, reset.stdout
    assert not (Path(server.backup_directory) / "walvault-gaps.json").exists()  # nothing lost

    start_receiver(wv, pg)
    wait_streamed(wv, [newest])
    assert (streaming / newest).read_bytes() == (pg.wal_dir / newest).read_bytes()
    wv.run("receive-wal", "--stop", "pg")
