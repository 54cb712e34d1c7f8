"""replication-status against real PostgreSQL 15: a walvault receiver and a hot standby."""

from __future__ import annotations

import json
import re
from typing import Any

from wvharness import start_receiver, streaming_server, wait_for

LSN = r"[0-9A-F]+/[0-9A-F]+"


def run_until(wv: Any, args: list[str], wanted: list[str]) -> str:
    """Run walvault until its output holds every ``wanted`` text (positions settle quickly)."""

    def attempt() -> str | None:
        result = wv.run(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout if all(w in result.stdout for w in wanted) else None

    output: str = wait_for(attempt, timeout=30, what=f"{wanted} in {args}")
    return output


def test_receiver_and_hot_standby(pg: Any, walvault_factory: Any) -> None:
    pg.make_standby(name="standby")
    wv = walvault_factory({"pg": streaming_server(pg)})
    start_receiver(wv, pg)
    full = run_until(
        wv,
        ["replication-status", "pg"],
        ["Number of streaming clients: 2", "5/5 Hot standby (max)", "3/3 Remote write"],
    )
    assert full.startswith("Status of streaming clients for server 'pg':\n")
    assert re.search(rf"^  Current LSN on master: {LSN}$", full, re.M), full
    streamer, standby = re.split(r"\n\n", full)[1:3]
    if "standby" in streamer.splitlines()[0]:
        streamer, standby = standby, streamer
    assert re.match(r"  \d\. Async WAL streamer\n", streamer), streamer
    for text in (
        "     Application name: walvault_receive_wal",
        "     Sync stage      : 3/3 Remote write",
        "     Communication   : TCP/IP",
        "     User name       : streaming_walvault",
        "     Current state   : streaming (async)",
        "     Replication slot: walvault",
    ):
        assert text in streamer, (text, streamer)
    assert re.search(r"     IP Address      : 127\.0\.0\.1 / Port: \d+ / Host: -", streamer)
    assert re.search(rf"     Sent LSN   : {LSN} \(diff: 0 B\)", streamer), streamer
    assert "Replay LSN" not in streamer
    assert re.match(r"  \d\. Async standby\n", standby), standby
    assert "     Application name: standby" in standby
    assert "     Sync stage      : 5/5 Hot standby (max)" in standby
    assert "Replication slot" not in standby  # the standby streams without a slot
    assert re.search(rf"     Replay LSN : {LSN} \(diff: 0 B\)", standby), standby

    minimal = run_until(
        wv, ["replication-status", "--minimal", "pg"], ["AN:walvault_receive_wal", "AN:standby"]
    )
    lines = minimal.splitlines()
    assert re.fullmatch(rf"Streaming clients for master 'pg' \(LSN @ {LSN}\):", lines[0]), lines
    assert any(
        re.fullmatch(
            rf"  \d\. W\) streaming_walvault@127\.0\.0\.1 S:{LSN} W:{LSN} P:0 "
            "AN:walvault_receive_wal",
            line,
        )
        for line in lines
    ), lines
    assert any(
        re.fullmatch(
            rf"  \d\. A\) streaming_walvault@127\.0\.0\.1 S:{LSN} F:{LSN} R:{LSN} P:0 AN:standby",
            line,
        )
        for line in lines
    ), lines

    standbys = wv.run("replication-status", "--target", "hot-standby", "pg").stdout
    assert "Status of hot standby servers for server 'pg':" in standbys
    assert "Number of hot standby servers: 1" in standbys
    assert "Application name: standby" in standbys
    assert "walvault_receive_wal" not in standbys
    streamers = wv.run("replication-status", "--target", "wal-streamer", "--minimal", "pg")
    assert streamers.returncode == 0, streamers.stderr
    assert streamers.stdout.startswith("WAL streamers for master 'pg'")
    assert "AN:walvault_receive_wal" in streamers.stdout
    assert "AN:standby" not in streamers.stdout

    document = json.loads(wv.run("-f", "json", "replication-status", "pg").stdout)
    clients = document["pg"]["clients"]
    assert {c["application_name"]: c["kind"] for c in clients} == {
        "walvault_receive_wal": "WAL streamer",
        "standby": "standby",
    }
    assert document["pg"]["in_recovery"] is False
    receiver = next(c for c in clients if c["kind"] == "WAL streamer")
    assert receiver["slot_name"] == "walvault" and receiver["replay_lsn"] is None
    assert isinstance(receiver["sent_diff_bytes"], int)


def test_no_clients_and_missing_privileges(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory(
        {
            "pg": streaming_server(pg),
            "blind": streaming_server(pg, conninfo=pg.conninfo("nomonitor"), slot_name="blind"),
        }
    )
    none = wv.run("replication-status", "--target", "wal-streamer", "pg")
    assert none.returncode == 0, none.stderr
    assert none.stdout.splitlines()[-1] == "  No WAL streamers attached"
    refused = wv.run("replication-status", "blind", "pg")
    assert refused.returncode == 1
    assert "ERROR: replication-status of server 'blind' (conninfo)" in refused.stderr
    assert "pg_monitor" in refused.stderr
    assert "Status of streaming clients for server 'pg':" in refused.stdout  # the others run


def test_source_wal_host_asks_the_wal_source(pg: Any, walvault_factory: Any) -> None:
    standby = pg.make_standby(name="standby")
    options = streaming_server(
        standby, wal_streaming_conninfo=pg.streaming_conninfo(), wal_conninfo=pg.conninfo()
    )
    wv = walvault_factory({"pg": options})
    start_receiver(wv, pg)
    backup_host = wv.run("replication-status", "pg")
    assert backup_host.returncode == 0, backup_host.stderr
    assert re.search(rf"^  Current LSN on standby: {LSN}$", backup_host.stdout, re.M)
    assert "  No streaming clients attached" in backup_host.stdout
    wal_host = run_until(
        wv,
        ["replication-status", "--source", "wal-host", "pg"],
        ["Number of streaming clients: 2", "Application name: walvault_receive_wal"],
    )
    assert "Current LSN on master" in wal_host
    assert "Application name: standby" in wal_host
