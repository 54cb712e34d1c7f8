"""receive-wal against real PostgreSQL 15: slots, synchronous mode, kills, reset, WAL sources."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from wvharness import make_segments, segment_names, start_receiver, streaming_server, wait_for

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


def test_reset_after_the_server_removed_needed_wal(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, create_slot="manual")})
    assert wv.run("receive-wal", "--create-slot", "pg").returncode == 0
    proc = start_receiver(wv, pg)
    wait_streamed(wv, make_segments(pg, 1))
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    proc.wait(timeout=20)
    wait_for(lambda: not slot_row(pg)[0], what="slot inactive")
    # lose WAL: drop the slot, write and checkpoint so the segments are removed, new slot
    assert wv.run("receive-wal", "--drop-slot", "pg").returncode == 0
    make_segments(pg, 4)
    pg.sql("CHECKPOINT")
    make_segments(pg, 1)
    pg.sql("CHECKPOINT")
    assert wv.run("receive-wal", "--create-slot", "pg").returncode == 0
    failed = wv.run("receive-wal", "pg", timeout=60)
    assert failed.returncode == 1
    assert "has already been removed" in failed.stdout + failed.stderr
    reset = wv.run("receive-wal", "--reset", "pg")
    assert reset.returncode == 0, reset.stderr
    assert "Recording a WAL gap" in reset.stdout
    gaps = json.loads((Path(wv.server().backup_directory) / "walvault-gaps.json").read_text())
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap["first_missing"] <= gap["last_missing"]
    assert "reset" in gap["reason"]
    # streaming now works again, from the slot's position
    start_receiver(wv, pg)
    wait_streamed(wv, make_segments(pg, 1))
    aligned = wv.run("receive-wal", "--reset", "pg")
    assert aligned.returncode == 1 and "Process is still running" in aligned.stderr


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
