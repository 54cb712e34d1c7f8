"""``walvault serve`` against real PostgreSQL 15: restarts, archiving, metrics, signals, locks."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from serveharness import Serve, elapsed_until, receivers_for, streaming_pid
from walvault import locks
from wvharness import slot_active, streaming_server, wait_for


def archived(wv: Any, name: str) -> bool:
    return (Path(wv.server().wals_directory) / name[:16] / name).exists()


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels), parsed by Prometheus' own parser."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_killed_receiver_restarts_and_segments_are_archived_at_once(
    pg: Any, walvault_factory: Any
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    serve = Serve(wv, "--sample-interval", "1", "--check-interval", "5")
    first = streaming_pid(serve)
    assert receivers_for(wv.server().streaming_wals_directory) == [first]
    wait_for(lambda: slot_active(pg), what="streaming")

    # a pg_receivewal killed with SIGKILL streams again within 5 s (no cron anywhere)
    os.kill(first, signal.SIGKILL)
    delay = elapsed_until(
        lambda: (
            (pids := receivers_for(wv.server().streaming_wals_directory))
            and pids[0] != first
            and slot_active(pg)
        ),
        timeout=5,
    )
    assert delay < 5
    second = streaming_pid(serve)
    assert second != first
    receiver = serve.server()["receiver"]
    assert receiver["restarts"] == 1 and receiver["managed_by_serve"]
    errors = [e["message"] for e in serve.server()["errors"]]
    assert any("terminated by signal: 9" in m for m in errors), errors

    # a segment closed by pg_switch_wal() is in the archive within 5 s.  archive-wal holds
    # the newest complete segment back until pg_receivewal has begun the next one (Barman's
    # rule, archive/batch.py), so the server writes on after the switch, as a live one does
    pg.sql("CREATE TABLE t (i int)")
    closed = pg.switch_wal()
    pg.sql("INSERT INTO t VALUES (1)")
    delay = elapsed_until(lambda: archived(wv, closed), timeout=5)
    assert delay < 5
    wait_for(lambda: serve.server()["archive"]["last_name"] == closed, what="catalogue seen")

    # the metrics, parsed by Prometheus' parser, say the same
    samples = wait_for(
        lambda: (
            (s := parse_metrics(serve.metrics()))
            and metric(s, "walvault_check_ok", server="pg", check="receive-wal running") == 1
            and metric(s, "walvault_streaming_lag_bytes", server="pg") is not None
            and s
        ),
        timeout=30,
        what="checks run and lag sampled",
    )
    assert metric(samples, "walvault_receiver_up", server="pg") == 1
    assert metric(samples, "walvault_receiver_restarts_total", server="pg") == 1
    assert metric(samples, "walvault_archive_backlog_files", server="pg", source="streaming") == 0
    assert metric(samples, "walvault_archive_backlog_files", server="pg", source="incoming") == 0
    assert metric(samples, "walvault_wal_gaps", server="pg") == 0
    last = metric(samples, "walvault_archived_wal_last_timestamp_seconds", server="pg")
    assert last is not None and time.time() - 60 < last <= time.time()
    assert (metric(samples, "walvault_streaming_lag_bytes", server="pg") or 0) < 2 * 1024 * 1024
    assert metric(samples, "walvault_build_info", version=serve.status()["service"]["version"])
    assert metric(samples, "walvault_backup_last_completed_timestamp_seconds", server="pg") is None

    # a second failure within five minutes: cron's back-off applies (the next start in a
    # minute), said on the page, in the metrics and by the state
    os.kill(second, signal.SIGKILL)
    receiver = wait_for(
        lambda: (r := serve.server()["receiver"])["state"] == "backing off" and r,
        what="backing off",
    )
    assert receiver["consecutive_failures"] == 2 and receiver["restarts"] == 1
    assert 50 < receiver["next_start_after"] - time.time() <= 60
    samples = parse_metrics(serve.metrics())
    assert metric(samples, "walvault_receiver_up", server="pg") == 0
    assert metric(samples, "walvault_receiver_consecutive_failures", server="pg") == 2
    assert receivers_for(wv.server().streaming_wals_directory) == []


def test_metrics_follow_lag_backlog_and_receiver_death(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    server = wv.server()
    serve = Serve(wv, "--sample-interval", "1", "--check-interval", "3")
    receiver = streaming_pid(serve)

    # backlog: while archive-wal is busy elsewhere (we hold its lock), a streamed segment
    # waits in streaming/ and the metric counts it
    lock = locks.ServerLock(server.lock_directory, "pg", locks.ARCHIVE_WAL).acquire()
    try:
        pg.sql("CREATE TABLE t (i int)")
        closed = pg.switch_wal()
        pg.sql("INSERT INTO t VALUES (1)")
        wait_for(lambda: (Path(server.streaming_wals_directory) / closed).exists(), what="streamed")
        samples = wait_for(
            lambda: (
                (s := parse_metrics(serve.metrics()))
                and metric(s, "walvault_archive_backlog_files", server="pg", source="streaming")
                == 1
                and s
            ),
            what="backlog 1",
        )
        assert not archived(wv, closed)
    finally:
        lock.release()
    wait_for(lambda: archived(wv, closed), timeout=5, what="archived once the lock is free")
    wait_for(
        lambda: (
            metric(
                parse_metrics(serve.metrics()),
                "walvault_archive_backlog_files",
                server="pg",
                source="streaming",
            )
            == 0
        ),
        what="backlog 0",
    )

    # lag: a stopped pg_receivewal receives nothing while the server writes WAL; the lag
    # sampled by serve grows past what was written
    caught_up = (
        "SELECT pg_current_wal_lsn() = write_lsn FROM pg_stat_replication "
        "WHERE application_name = 'walvault_receive_wal'"
    )
    wait_for(lambda: pg.scalar(caught_up), what="receiver caught up")
    before = int(pg.scalar("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    os.kill(receiver, signal.SIGSTOP)
    try:
        pg.sql("INSERT INTO t SELECT generate_series(1, 20000)")
        written = int(pg.scalar("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")) - before
        assert written > 200_000
        samples = wait_for(
            lambda: (
                (s := parse_metrics(serve.metrics()))
                and (metric(s, "walvault_streaming_lag_bytes", server="pg") or 0) >= written
                and s
            ),
            what="lag seen",
        )
        lag = metric(samples, "walvault_streaming_lag_bytes", server="pg")
        assert lag is not None and written <= lag < written + 65536
    finally:
        os.kill(receiver, signal.SIGCONT)
    wait_for(
        lambda: (
            metric(parse_metrics(serve.metrics()), "walvault_streaming_lag_bytes", server="pg") == 0
        ),
        what="lag back to 0",
    )

    # a receiver that cannot come back (the server is gone) is down in the metrics, its
    # check fails, and the restarts are counted
    pg.stop()
    samples = wait_for(
        lambda: (
            (s := parse_metrics(serve.metrics()))
            and metric(s, "walvault_receiver_up", server="pg") == 0
            and metric(s, "walvault_check_ok", server="pg", check="receive-wal running") == 0
            and (metric(s, "walvault_receiver_restarts_total", server="pg") or 0) >= 1
            and metric(s, "walvault_streaming_lag_bytes", server="pg") is None  # unknown now
            and s
        ),
        what="receiver down, restarted in vain",
    )
    assert metric(samples, "walvault_check_ok", server="pg", check="PostgreSQL") == 0


def test_sigterm_stops_every_receiver(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    serve = Serve(wv)
    streaming_pid(serve)
    wait_for(lambda: slot_active(pg), what="streaming")
    directory = wv.server().streaming_wals_directory
    pg.sql("CREATE TABLE t (i int)")  # something to stream: pg_receivewal opens its .partial

    def partials() -> list[str]:
        return [n for n in os.listdir(directory) if n.endswith(".partial")]

    streamed = wait_for(partials, what="a .partial")
    assert serve.stop(signal.SIGTERM) == 0
    assert receivers_for(directory) == []
    wait_for(lambda: not slot_active(pg), what="slot released")
    assert partials() == streamed  # left in place for the next run
    state = wv.server()
    assert locks.lock_holder(state.lock_directory, "pg", locks.RECEIVE_WAL) is None
    assert "stopped on request" in str(
        json.loads(Path(state.backup_directory, "walvault-receiver.json").read_text())[
            "exit_reason"
        ]
    )


def test_cron_and_serve_start_one_receiver(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    directory = wv.server().streaming_wals_directory
    assert wv.run("cron").returncode == 0  # cron starts a detached receive-wal first
    wait_for(lambda: slot_active(pg), what="cron's receiver streaming")
    cron_receiver = receivers_for(directory)
    assert len(cron_receiver) == 1
    serve = Serve(wv)
    wait_for(
        lambda: (
            (r := serve.server()["receiver"])["external"] and r["up"] and not r["managed_by_serve"]
        ),
        what="seen as external",
    )
    for _ in range(3):  # cron keeps running beside serve
        assert wv.run("cron").returncode == 0
        assert receivers_for(directory) == cron_receiver
    time.sleep(1.5)
    assert receivers_for(directory) == cron_receiver

    # cron's receiver dies: serve takes over, and cron no longer starts one of its own
    os.kill(cron_receiver[0], signal.SIGKILL)
    receiver = wait_for(
        lambda: (r := serve.server()["receiver"])["managed_by_serve"] and r["up"] and r,
        what="serve's own receiver",
    )
    taken = receiver["pg_receivewal_pid"]
    assert taken != cron_receiver[0]
    for _ in range(3):
        assert wv.run("cron").returncode == 0
        assert receivers_for(directory) == [taken]


def test_stop_on_request_pauses_and_sighup_adds_and_removes_servers(
    pg: Any, walvault_factory: Any
) -> None:
    second = streaming_server(
        pg, slot_name="walvault2", streaming_archiver_name="walvault_receive_wal2"
    )
    wv = walvault_factory({"pg": streaming_server(pg)})
    serve = Serve(wv)
    streaming_pid(serve)

    # receive-wal --stop is obeyed: serve does not start it again at once
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    wait_for(lambda: not slot_active(pg), what="stopped")
    time.sleep(2)
    receiver = serve.server()["receiver"]
    assert not receiver["up"] and receiver["next_start_after"] is not None
    assert receivers_for(wv.server().streaming_wals_directory) == []

    # SIGHUP: a new server is started
    wv.write({"pg": streaming_server(pg), "pg2": second})
    serve.proc.send_signal(signal.SIGHUP)
    streaming_pid(serve, "pg2")
    dir2 = wv.server("pg2").streaming_wals_directory
    assert len(receivers_for(dir2)) == 1

    # SIGHUP: a changed server's receiver is restarted with its new settings
    before = streaming_pid(serve, "pg2")
    wv.write({"pg": streaming_server(pg), "pg2": {**second, "streaming_status_interval": 2}})
    serve.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: (pids := receivers_for(dir2)) and pids[0] != before, what="pg2 restarted")
    argv = Path(f"/proc/{receivers_for(dir2)[0]}/cmdline").read_bytes().split(b"\0")
    assert b"--status-interval=2" in argv

    # SIGHUP: a removed server's receiver is stopped
    wv.write({"pg": streaming_server(pg)})
    serve.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: receivers_for(dir2) == [], what="pg2 stopped")
    assert serve.proc.poll() is None  # reloads never stop the service
    wait_for(lambda: [s["name"] for s in serve.status()["servers"]] == ["pg"], what="pg2 gone")
    assert serve.stop() == 0


def test_no_secret_on_any_page_and_loopback_only(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    serve = Serve(wv, "--sample-interval", "1", "--check-interval", "2")
    streaming_pid(serve)
    wait_for(lambda: serve.server()["checks"]["at"], what="checks ran")
    passwords = [p for p in pg.passwords.values() if p]
    assert passwords
    for path in ("/", "/metrics", "/api/status"):
        code, headers, body = serve.get(path)
        assert code == 200
        assert headers["cache-control"] == "no-store"
        for password in passwords:
            assert password.encode() not in body, (path, password)
    code, headers, _ = serve.get("/")
    assert "script-src 'nonce-" in headers["content-security-policy"]
    assert serve.get("/nothing")[0] == 404
    assert serve.get("/", host="attacker.example:80")[0] == 421  # DNS rebinding
    assert serve.get("/", host=f"localhost:{serve.port}")[0] == 200
    # a second service on the same address: one ERROR line, exit 1
    taken = wv.run("serve", "--listen", f"127.0.0.1:{serve.port}", timeout=60)
    assert taken.returncode == 1
    assert f"ERROR: cannot listen on 127.0.0.1:{serve.port}" in taken.stderr
    assert "Traceback" not in taken.stderr
    bad = wv.run("serve", "--listen", "localhost:9781")
    assert bad.returncode == 1 and "is not an IP address" in bad.stderr


def test_serve_settles_a_waiting_backup(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    serve = Serve(wv, "--sample-interval", "1")
    streaming_pid(serve)
    wait_for(lambda: slot_active(pg), what="streaming")
    taken = wv.run("backup", "pg")  # no --wait: WAITING_FOR_WALS until its WAL is archived
    assert taken.returncode == 0, taken.stderr
    pg.sql("CREATE TABLE t (i int)")  # the server writes on, so the last segment is complete
    wait_for(
        lambda: (
            "WAITING_FOR_WALS" not in (out := wv.run("list-backups", "pg").stdout)
            and "FAILED" not in out
        ),
        timeout=30,
        what="backup settled by serve",
    )
    done = wait_for(
        lambda: metric(
            parse_metrics(serve.metrics()),
            "walvault_backup_last_completed_timestamp_seconds",
            server="pg",
        ),
        what="backup in the metrics",
    )
    assert time.time() - 300 < done <= time.time()
    coverage = serve.server()["coverage"]
    assert [b["status"] for b in coverage["backups"]] == ["DONE"]


def test_storage_requests_of_an_archive_in_a_bucket_are_counted(
    pg: Any, walvault_factory: Any, moto_server: Any, s3_bucket: str, aws_env: None
) -> None:
    options = streaming_server(
        pg,
        wals_directory=f"s3://{s3_bucket}/serve",
        aws_endpoint_url=moto_server.endpoint,
        compression="zstd",
    )
    wv = walvault_factory({"pg": options})
    serve = Serve(wv, "--sample-interval", "1", "--check-interval", "2")
    streaming_pid(serve)
    pg.sql("CREATE TABLE t (i int)")
    pg.switch_wal()
    pg.sql("INSERT INTO t VALUES (1)")

    def puts() -> float:
        samples = parse_metrics(serve.metrics())
        labels = {"server": "pg", "driver": "s3", "op": "put"}
        return metric(samples, "walvault_storage_requests_total", **labels) or 0

    wait_for(lambda: puts() >= 1, what="a PUT counted", timeout=30)
    samples = parse_metrics(serve.metrics())
    for op in ("put", "head"):
        errors = metric(
            samples, "walvault_storage_request_errors_total", server="pg", driver="s3", op=op
        )
        assert errors in (None, 0), (op, errors)
