"""Failover to a standby that has less WAL than walvault: cron alone follows the new timeline.

A primary and its asynchronous standby; the standby stops, the primary commits more, walvault
streams several segments past what the standby has; the primary dies and the standby is
promoted. walvault's configuration is then rewritten to point at the new primary (the choice
documented in docs/operations.md), and only ``walvault cron`` runs, every two seconds, as a
crontab would (faster). Streaming must resume on timeline 2 within 60 s, the abandoned tail of
timeline 1 must stay in the archive, status and check must report the fork, and recovering a
backup taken before the failover must give exactly timeline 2's rows.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from wvharness import start_restored, streaming_server, wait_for

APP = "walvault_receive_wal"
MB = 1 << 20


class CronLoop:
    """``walvault cron`` every ``every`` seconds in a thread, like a (fast) crontab."""

    def __init__(self, wv: Any, every: float = 2.0) -> None:
        self.wv = wv
        self.every = every
        self.stop = threading.Event()
        self.outputs: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            result = self.wv.run("cron", timeout=300)
            self.outputs.append(result.stdout + result.stderr)
            self.stop.wait(self.every)

    def __enter__(self) -> CronLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=300)


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def server_rows(cluster: Any) -> list[str]:
    return [row[0] for row in cluster.sql("SELECT v FROM marks ORDER BY v")]


def _walvault_received(pg: Any) -> int:
    """What walvault's pg_receivewal has written (asynchronous: it flushes per segment)."""
    query = "SELECT write_lsn::text FROM pg_stat_replication WHERE application_name = %s"
    value = pg.scalar(query, (APP,))
    return _lsn(value) if value else 0


def _recover(wv: Any, tmp_path: Path, template: Any, name: str, *args: str) -> Any:
    result = wv.run("recover", "pg", "oldest", str(tmp_path / name / "data"), *args, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    restored = start_restored(template, tmp_path / name, name)
    wait_for(lambda: not restored.is_in_recovery(), what=f"{name}: end of recovery", timeout=120)
    return restored


def test_failover_to_a_standby_behind_walvault_resumes_on_timeline_2(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    standby = pg.make_standby(name="standby")
    options = streaming_server(pg, immediate_checkpoint="true", compression="zstd")
    wv = walvault_factory({"pg": options})
    server = wv.server()
    wals = Path(server.wals_directory)
    with CronLoop(wv) as cron:
        wait_for(lambda: pg.replication_state(APP) == "streaming", what="walvault streaming")
        pg.sql("CREATE TABLE marks (v text)")
        pg.sql("INSERT INTO marks SELECT 'before ' || g FROM generate_series(1, 5) g")
        backup = wv.run("backup", "--wait", "pg", timeout=300)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        pg.sql("INSERT INTO marks VALUES ('before 6')")
        target = pg.scalar("SELECT pg_current_wal_lsn()::text")
        wait_for(
            lambda: standby.scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)),
            what="standby replayed the last common row",
        )
        standby_end = _lsn(standby.scalar("SELECT pg_last_wal_receive_lsn()::text"))
        standby.stop()

        # only walvault receives these: three switched segments and a streamed tail
        for number in range(3):
            pg.sql("INSERT INTO marks VALUES (%s)", (f"abandoned {number}",))
            pg.sql("INSERT INTO marks SELECT 'pad' FROM generate_series(1, 3000)")
            pg.switch_wal()
        pg.sql("INSERT INTO marks VALUES ('abandoned tail')")
        tail = _lsn(pg.scalar("SELECT pg_current_wal_lsn()::text"))
        wait_for(lambda: _walvault_received(pg) >= tail, what="walvault received the tail")
        assert tail - standby_end >= 2 * MB
        pg.crash()

        standby.start()
        standby.promote()
        assert standby.timeline() == 2
        standby.sql("INSERT INTO marks VALUES ('tl2 a')")
        repointed = {
            **options,
            "conninfo": standby.conninfo(),
            "streaming_conninfo": standby.streaming_conninfo(),
        }
        wv.write({"pg": repointed})
        since = time.monotonic()

        def on_timeline_2() -> bool:
            if standby.replication_state(APP) != "streaming":
                return False
            names = os.listdir(server.streaming_wals_directory)
            return any(n.startswith("00000002") and not n.endswith(".history") for n in names)

        try:
            wait_for(on_timeline_2, what="streaming on timeline 2", timeout=60)
        except AssertionError as exc:
            log = (wv.home / "walvault.log").read_text()[-4000:]
            raise AssertionError(f"{exc}\ncron: {cron.outputs[-3:]}\nlog: {log}") from None
        resumed_after = time.monotonic() - since
        assert resumed_after < 60, resumed_after
        print(f"streaming resumed on timeline 2 {resumed_after:.1f} s after the repointing")

        standby.sql("INSERT INTO marks VALUES ('tl2 b')")
        closed = standby.switch_wal()
        assert closed.startswith("00000002")
        wait_for(
            lambda: (wals / closed[:16] / closed).exists() and (wals / "00000002.history").exists(),
            what="timeline 2 archived",
            timeout=60,
        )

    # the fork is recorded: timelines, fork point, what walvault had past it
    forks = json.loads((Path(server.backup_directory) / "walvault-forks.json").read_text())
    assert len(forks) == 1, forks
    fork = forks[0]
    fork_lsn = _lsn(fork["fork_lsn"])
    assert (fork["old_timeline"], fork["new_timeline"]) == (1, 2)
    assert standby_end - MB <= fork_lsn <= standby_end + MB
    assert fork["abandoned_bytes"] >= 2 * MB
    # counted to the last non-zero byte of the streamed .partial: the last record's trailing
    # zero bytes (alignment, zero fields) are not counted
    assert _lsn(fork["streamed_to"]) >= tail - 64
    assert fork["abandoned_bytes"] == _lsn(fork["streamed_to"]) - fork_lsn
    assert (
        fork["restart_segment"] == f"00000002{fork_lsn // MB >> 12:08X}{fork_lsn // MB & 0xFFF:08X}"
    )
    # the abandoned tail of timeline 1 is in the archive, every segment of it
    archived = set(os.listdir(wals / "0000000100000000"))
    first, last = fork_lsn // MB, (_lsn(fork["streamed_to"]) - 1) // MB
    for segno in range(first, last + 1):
        name = f"0000000100000000{segno:08X}"
        assert name in archived or f"{name}.partial" in archived, (name, sorted(archived))
    assert any(n.endswith(".partial") for n in archived)  # the streamed tail, kept as .partial

    status = wv.run("status", "pg")
    assert status.returncode == 0, status.stderr
    assert "Timeline forks: 1" in status.stdout
    assert f"Timeline fork: timeline 1 -> 2 at {fork['fork_lsn']}" in status.stdout
    check = wv.run("check", "pg")
    line = next(ln for ln in check.stdout.splitlines() if "timeline fork:" in ln)
    assert "FAILED" in line and "timeline 1 -> 2" in line, line
    assert "receive-wal running: OK" in check.stdout, check.stdout
    nagios = wv.run("check", "--nagios", "pg")
    assert nagios.returncode == 2 and "timeline fork" in nagios.stdout

    # a backup from before the failover recovers exactly timeline 2's history
    expected = sorted([*(f"before {n}" for n in range(1, 7)), "tl2 a", "tl2 b"])
    for mode in ("--no-get-wal", "--get-wal"):
        restored = _recover(wv, tmp_path, pg, f"restored{mode}", mode)
        rows = server_rows(restored)
        assert rows == expected, (mode, [r for r in rows if r != "pad"], rows.count("pad"))
        restored.stop()

    # a backup on timeline 2 supersedes the fork
    assert wv.run("backup", "--wait", "pg", timeout=300).returncode == 0
    check = wv.run("check", "pg")
    line = next(ln for ln in check.stdout.splitlines() if "timeline fork:" in ln)
    assert line.strip() == "timeline fork: OK", line
    wv.run("receive-wal", "--stop", "pg")
