"""check, status and cron against real PostgreSQL 15: supervision never hides a stopped stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from wvharness import segment_names, slot_active, streaming_server, wait_for


def receiver_pid(wv: Any) -> int | None:
    from walvault import locks

    server = wv.server()
    return locks.lock_holder(server.lock_directory, "pg", locks.RECEIVE_WAL)


def check_lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    lines = {}
    for line in result.stdout.splitlines()[1:]:
        if line.startswith("\t") and not line.startswith("\t\t"):
            name, _, rest = line.strip().partition(": ")
            lines[name] = rest
    return lines


def healthy(pg: Any, wv: Any) -> None:
    """cron starts the receiver; a segment is streamed and archived."""
    assert wv.run("cron").returncode == 0
    wait_for(lambda: slot_active(pg), what="receiver streaming")
    pg.sql("CREATE TABLE IF NOT EXISTS t (i int)")
    pg.sql("INSERT INTO t SELECT generate_series(1, 1000)")
    closed = pg.switch_wal()
    pg.sql("INSERT INTO t VALUES (1)")
    streaming = wv.server().streaming_wals_directory
    wait_for(lambda: closed in segment_names(streaming) or _archived(wv, closed), what="streamed")
    wait_for(
        lambda: wv.run("archive-wal", "pg").returncode == 0 and _archived(wv, closed),
        what="archived",
    )


def _archived(wv: Any, name: str) -> bool:
    return (Path(wv.server().wals_directory) / name[:16] / name).exists()


def test_healthy_streaming_only_server(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    healthy(pg, wv)
    result = wv.run("check", "pg")
    assert result.returncode == 0, result.stdout
    lines = check_lines(result)
    assert all(v.startswith("OK") for v in lines.values()), lines
    for name in (
        "PostgreSQL",
        "PostgreSQL streaming",
        "wal_level",
        "replication slot",
        "directories",
        "systemid coherence",
        "pg_receivexlog",
        "pg_receivexlog compatible",
        "receive-wal running",
        "archiver errors",
        "WAL gaps",
        "streaming lag",
    ):
        assert name in lines, name
    assert "WAL archive" not in lines  # shown only on failure, as in Barman
    assert "behind written" in lines["streaming lag"]
    assert "behind flushed" in lines["streaming lag"]
    nagios = wv.run("check", "--nagios", "pg")
    assert nagios.returncode == 0 and nagios.stdout.startswith("WALVAULT OK")
    as_json = json.loads(wv.run("-f", "json", "check", "pg").stdout)
    assert as_json["pg"]["receive_wal_running"]["status"] == "OK"
    status = wv.run("status", "pg")
    assert status.returncode == 0, status.stderr
    assert "receive-wal: running, PID" in status.stdout
    assert "Streaming lag (behind current LSN): written " in status.stdout
    assert "WAL archive: 1 files, " in status.stdout and " bytes" not in status.stdout
    assert "Last archived WAL: 0000000100000000000000" in status.stdout


def _failed(wv: Any, name: str, hint: str = "") -> None:
    result = wv.run("check", "pg")
    lines = check_lines(result)
    assert result.returncode == 1, result.stdout
    assert lines.get(name, "").startswith("FAILED"), (name, lines)
    assert hint in lines[name], (hint, lines[name])
    nagios = wv.run("check", "--nagios", "pg")
    assert nagios.returncode == 2
    assert nagios.stdout.startswith("WALVAULT CRITICAL") and name in nagios.stdout


def test_receiver_killed_is_failed_immediately(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    healthy(pg, wv)
    pid = receiver_pid(wv)
    assert pid
    os.kill(pid, signal.SIGKILL)
    _failed(wv, "receive-wal running")  # no cron ran in between
    # cron restarts it on its next run
    assert wv.run("cron").returncode == 0
    wait_for(lambda: receiver_pid(wv) and slot_active(pg), what="restarted receiver")
    state = json.loads((Path(wv.server().backup_directory) / "walvault-receiver.json").read_text())
    assert state["restarts"] == 1
    assert "receive-wal restarts: 1" in wv.run("status", "pg").stdout


def test_missing_slot_and_inactive_slot(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, create_slot="manual")})
    wv.run("cron")  # prepares nothing without a slot: the receiver fails
    _failed(wv, "replication slot", "doesn't exist")
    assert wv.run("receive-wal", "--create-slot", "pg").returncode == 0
    _failed(wv, "replication slot", "not active")
    result = wv.run("check", "pg")
    assert "receive-wal running: FAILED" in result.stdout
    assert "replication slot 'walvault' doesn't exist" in result.stdout  # the recorded reason


def test_errors_directory_systemid_and_gaps(
    pg: Any, pg_factory: Any, walvault_factory: Any
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    healthy(pg, wv)
    errors = Path(wv.server().errors_directory)
    errors.mkdir(parents=True, exist_ok=True)
    (errors / "000000010000000000000009.20261125T160201Z.duplicate").write_bytes(b"x")
    _failed(wv, "archiver errors", "duplicates: 1")
    (errors / "000000010000000000000009.20261125T160201Z.duplicate").unlink()
    from walvault.receiver.gaps import record_gap

    record_gap(wv.server(), "000000010000000000000003", "000000010000000000000004", "test")
    _failed(wv, "WAL gaps", "000000010000000000000003..000000010000000000000004")
    os.unlink(Path(wv.server().backup_directory) / "walvault-gaps.json")
    other = pg_factory("other")
    wv.write({"pg": streaming_server(pg, conninfo=other.conninfo())})
    _failed(wv, "systemid coherence")


def test_monitoring_user_without_pg_monitor(pg: Any, walvault_factory: Any) -> None:
    options = streaming_server(pg, wal_conninfo=pg.conninfo("nomonitor"))
    wv = walvault_factory({"pg": options})
    _failed(wv, "no access to monitoring functions", "monitoring functions are required")


def test_wrong_password_backs_off_and_is_visible(pg: Any, walvault_factory: Any) -> None:
    bad = pg.streaming_conninfo(password="wrong")
    wv = walvault_factory({"pg": streaming_server(pg, streaming_conninfo=bad)})
    state_file = Path(wv.server().backup_directory) / "walvault-receiver.json"

    def failed_runs() -> int:
        if not state_file.exists() or receiver_pid(wv):
            return 0
        return 1 if json.loads(state_file.read_text()).get("exit_code") == 1 else 0

    outputs = []
    for _ in range(4):
        outputs.append(wv.run("cron").stdout)
        wait_for(lambda: failed_runs(), what="receiver failure recorded")
    assert "Starting streaming archiver for server pg" in outputs[0]
    assert "Starting streaming archiver for server pg" in outputs[1]  # first retry at once
    assert "failed 2 times in a row" in outputs[2] and "next attempt after" in outputs[2]
    assert "password authentication failed" in outputs[2]
    status = wv.run("status", "pg").stdout
    assert "NOT RUNNING" in status and "password authentication failed" in status
    assert "wrong" not in status.replace("wrong password", "")
    check = wv.run("check", "pg")
    assert "receive-wal running: FAILED" in check.stdout
    assert "password authentication failed" in check.stdout


def test_two_crons_at_once_start_one_receiver(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda: results.append(wv.run("cron"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: slot_active(pg), what="one receiver streaming")
    started = sum(r.stdout.count("Starting streaming archiver") for r in results)
    assert started == 1, [r.stdout for r in results]
    count = pg.scalar(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'walvault_receive_wal'"
    )
    assert count == 1
    state = json.loads((Path(wv.server().backup_directory) / "walvault-receiver.json").read_text())
    assert state["exit_code"] is None  # nobody failed on the lock


def test_inactive_server_stops_its_receiver(pg: Any, walvault_factory: Any) -> None:
    options = streaming_server(pg)
    wv = walvault_factory({"pg": options})
    assert wv.run("cron").returncode == 0
    wait_for(lambda: slot_active(pg), what="receiver streaming")
    wv.write({"pg": {**options, "active": "false"}})
    out = wv.run("cron").stdout
    assert "Server 'pg' is inactive: stopping receive-wal subprocess" in out
    wait_for(lambda: not slot_active(pg), what="receiver stopped")
    assert (
        slot_active(pg) is False
        and pg.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walvault'") == 1
    )


def test_a_server_disabled_by_its_conninfo_is_still_archived(
    pg: Any, walvault_factory: Any
) -> None:
    """A typo in a conninfo (libpq cannot parse it) disables the server, but archive-wal
    never connects: cron keeps moving what was streamed into the archive, and says why it
    does nothing else.  (Before, cron skipped the server and streamed WAL piled up.)"""
    options = streaming_server(pg)
    wv = walvault_factory({"pg": options})
    assert wv.run("cron").returncode == 0
    wait_for(lambda: slot_active(pg), what="receiver streaming")
    wv.write({"pg": {**options, "streaming_conninfo": "host=127.0.0.1 port='5432"}})
    pg.sql("CREATE TABLE IF NOT EXISTS t (i int)")
    pg.sql("INSERT INTO t SELECT generate_series(1, 1000)")
    closed = pg.switch_wal()
    pg.sql("INSERT INTO t VALUES (1)")  # the next segment's .partial: `closed` is not held
    streaming = wv.server().streaming_wals_directory
    wait_for(lambda: closed in segment_names(streaming), what="streamed")
    result = wv.run("cron")
    assert "disabled" in result.stdout + result.stderr
    assert "archiving only" in result.stdout + result.stderr
    assert "5432" not in result.stdout + result.stderr  # the conninfo is never shown
    wait_for(lambda: _archived(wv, closed), what="archived by cron's archive-wal")
    pid = receiver_pid(wv)
    if pid:
        os.kill(pid, signal.SIGTERM)


def test_streaming_lag_shows_the_flushed_position_of_an_async_receiver(
    pg: Any, walvault_factory: Any
) -> None:
    """Before: 'OK (0 bytes behind ... flushed 0/1000000, async)' while the flushed position
    was most of a segment behind (an asynchronous pg_receivewal flushes at segment ends).
    Now both distances are given, and what async means for a crash."""
    wv = walvault_factory({"pg": streaming_server(pg)})
    healthy(pg, wv)
    pg.switch_wal()
    pg.sql("CREATE TABLE IF NOT EXISTS mid (pad text)")
    pg.sql("INSERT INTO mid SELECT repeat(md5(g::text), 4) FROM generate_series(1, 2000) g")

    def caught_up() -> str | None:
        hint = check_lines(wv.run("check", "pg"))["streaming lag"]
        return hint if hint.startswith("OK (0 B behind written") else None

    hint = wait_for(caught_up, what="the receiver reporting the written position")
    flushed = hint.split(" behind written, ")[1].split(" behind flushed")[0]
    assert flushed != "0 B", hint  # mid-segment: written, not yet flushed
    assert "async: commits do not wait for walvault" in hint, hint
    assert "lost if walvault's host crashes" in hint, hint
    nagios = wv.run("check", "--nagios", "pg").stdout
    assert "pg_flush_lag=" in nagios, nagios


def test_a_stalled_receiver_fails_streaming_lag_above_max_streaming_lag(
    pg: Any, walvault_factory: Any
) -> None:
    """Before: a receiver that stopped receiving stayed OK for check and Nagios until the
    server's wal_sender_timeout.  Stalled here by SIGSTOP: still connected, not reading."""
    wv = walvault_factory({"pg": streaming_server(pg, max_streaming_lag="2MB")})
    healthy(pg, wv)
    wait_for(  # written is what the receiver last reported (every streaming_status_interval)
        lambda: check_lines(wv.run("check", "pg"))["streaming lag"].startswith(
            "OK (0 B behind written"
        ),
        what="the receiver reporting its position",
    )
    assert "max_streaming_lag 2.0 MiB" in check_lines(wv.run("check", "pg"))["streaming lag"]
    state = json.loads((Path(wv.server().backup_directory) / "walvault-receiver.json").read_text())
    child = state["child_pid"]
    os.kill(child, signal.SIGSTOP)
    try:
        pg.sql("CREATE TABLE IF NOT EXISTS big (pad text)")
        pg.sql("INSERT INTO big SELECT repeat(md5(g::text), 20) FROM generate_series(1, 8000) g")
        assert pg.replication_state("walvault_receive_wal") == "streaming"  # still connected
        _failed(wv, "streaming lag", "exceeded: the receiver is stalled or cannot keep up")
        hint = check_lines(wv.run("check", "pg"))["streaming lag"]
        for part in ("behind written", "server at", "sent", "written", "flushed", "async"):
            assert part in hint, (part, hint)
    finally:
        os.kill(child, signal.SIGCONT)
    wait_for(
        lambda: check_lines(wv.run("check", "pg"))["streaming lag"].startswith("OK"),
        what="the receiver catching up",
    )
