"""receive-wal and a WAL source whose history forked behind walvault's position (real PG 15).

The whole failover driven by cron alone is tests/e2e/test_failover_fork.py; here, receive-wal
is started by hand, for the two other ways a fork meets it: inside walvault's newest segment
(pg_receivewal follows by itself; the abandoned bytes are still recorded and kept), and a fork
that pg_receivewal reports although the look at the server's history missed it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from wvharness import streaming_server, wait_for

APP = "walvault_receive_wal"
MB = 1 << 20


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _received(pg: Any) -> int:
    query = "SELECT write_lsn::text FROM pg_stat_replication WHERE application_name = %s"
    value = pg.scalar(query, (APP,))
    return _lsn(value) if value else 0


def _fail_over(pg: Any, wv: Any, switches: int) -> tuple[Any, int, int]:
    """Stream from ``pg``; stop its standby, write ``switches`` segments and a tail that only
    walvault receives; kill ``pg``, promote the standby and point walvault at it.

    Returns (new primary, where the standby's WAL ended, where walvault's ended)."""
    standby = pg.make_standby(name="standby")
    receiver = wv.spawn("receive-wal", "pg")
    wait_for(lambda: pg.replication_state(APP) == "streaming", what="walvault streaming")
    pg.sql("CREATE TABLE t (v text)")
    target = pg.scalar("SELECT pg_current_wal_lsn()::text")
    wait_for(
        lambda: standby.scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)),
        what="standby caught up",
    )
    standby_end = _lsn(standby.scalar("SELECT pg_last_wal_receive_lsn()::text"))
    standby.stop()
    for _ in range(switches):
        pg.sql("INSERT INTO t SELECT 'abandoned' FROM generate_series(1, 3000)")
        pg.switch_wal()
    pg.sql("INSERT INTO t VALUES ('abandoned tail')")
    tail = _lsn(pg.scalar("SELECT pg_current_wal_lsn()::text"))
    wait_for(lambda: _received(pg) >= tail, what="walvault received the tail")
    pg.crash()
    receiver.wait(timeout=30)
    standby.start()
    standby.promote()
    options = streaming_server(standby)
    wv.write({"pg": options})
    return standby, standby_end, tail


def _forks(wv: Any) -> list[dict[str, Any]]:
    path = Path(wv.server().backup_directory) / "walvault-forks.json"
    return list(json.loads(path.read_text()))


def test_fork_inside_the_newest_segment_is_recorded_and_followed(
    pg: Any, walvault_factory: Any
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    standby, standby_end, tail = _fail_over(pg, wv, switches=0)
    assert standby_end // MB == tail // MB  # the fork lies inside walvault's .partial
    proc = wv.spawn("receive-wal", "pg")
    wait_for(lambda: standby.replication_state(APP) == "streaming", what="streaming again")
    (fork,) = _forks(wv)
    fork_lsn = _lsn(fork["fork_lsn"])
    assert (fork["old_timeline"], fork["new_timeline"]) == (1, 2)
    assert standby_end <= fork_lsn < tail
    assert 0 < fork["abandoned_bytes"] <= tail - fork_lsn
    streaming = Path(wv.server().streaming_wals_directory)
    old = streaming / f"0000000100000000{fork_lsn // MB:08X}.partial"
    wait_for(lambda: (streaming / "00000002.history").exists(), what="history fetched")
    # pg_receivewal followed by itself (no restart), and left the abandoned bytes in place
    data = old.read_bytes()
    past_fork = data[fork_lsn % MB : tail % MB]
    assert past_fork.strip(b"\0"), "the WAL streamed past the fork was overwritten"
    standby.sql("INSERT INTO t VALUES ('tl2')")
    closed = standby.switch_wal()
    wait_for(lambda: (streaming / closed).exists(), what="timeline 2 segment streamed")
    assert (streaming / closed).read_bytes() == (standby.wal_dir / closed).read_bytes()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert "Restarting streaming at the fork point" not in out
    assert "pg_receivewal follows the new timeline" in out


# receive-wal whose first look at the server's history sees no fork (as when the failover
# happens between that look and pg_receivewal's start): only pg_receivewal's refusal tells
_BLIND_FIRST_LOOK = """
import sys
import walvault.receiver.service as service
real = service.follow_fork
looks = []
def blind_once(*args, **kwargs):
    looks.append(1)
    return None if len(looks) == 1 else real(*args, **kwargs)
service.follow_fork = blind_once
from walvault.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_refusal_of_pg_receivewal_is_recognised_and_healed(
    pg: Any, walvault_factory: Any
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    standby, _, tail = _fail_over(pg, wv, switches=2)
    proc = subprocess.Popen(
        [sys.executable, "-c", _BLIND_FIRST_LOOK, "-c", str(wv.conf), "receive-wal", "pg"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wv.procs.append(proc)
    try:
        wait_for(lambda: standby.replication_state(APP) == "streaming", what="streaming on TL2")
        streaming = Path(wv.server().streaming_wals_directory)

        def on_timeline_2() -> bool:
            names = os.listdir(streaming)
            return any(n.startswith("00000002") and n.endswith(".partial") for n in names)

        wait_for(on_timeline_2, what="a timeline 2 .partial")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert "is not in this server's history" in out, out
    assert "pg_receivewal was refused a position past a fork" in out, out
    assert "Restarting streaming at the fork point" in out, out
    (fork,) = _forks(wv)
    assert fork["abandoned_bytes"] >= MB
    assert _lsn(fork["streamed_to"]) >= tail - 64
