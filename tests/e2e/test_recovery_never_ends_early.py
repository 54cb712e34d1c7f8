"""A fault in the middle of a recovery stops PostgreSQL; it never promotes with a short WAL.

The issue's trial: a backup, 6,000 rows written after it, ``recover --get-wal``, then one
archived segment in the middle made unreadable to walvault's user. walvault-wal-restore used
to exit 2, which PostgreSQL takes for "no such file": it promoted with half the rows, on a
new timeline. Now the client exits 200, PostgreSQL's startup process stops with FATAL, and
once the segment is readable again a plain restart completes the recovery with every row.
The same holds when the fault is a dead ssh connection to the backup host.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

from sshharness import Sshd
from wvharness import restored_cluster, segment_names, streaming_server, wait_for

ROWS, BATCHES = 6000, 6
BIN = Path(sys.executable).parent


def _backup_then_rows(pg: Any, wv: Any) -> list[str]:
    """A DONE backup, then ROWS rows over several segments, all archived; the new segments."""
    assert wv.run("cron").returncode == 0
    wait_for(lambda: pg.replication_state("walvault_receive_wal"), what="streaming")
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    backup = wv.run("backup", "--wait", "pg", timeout=180)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    wals = Path(wv.server().wals_directory)
    before = {n for d in wals.iterdir() if d.is_dir() for n in segment_names(d)}
    per = ROWS // BATCHES
    for batch in range(BATCHES):
        pg.sql(
            "INSERT INTO t SELECT g, repeat('x', 300) FROM generate_series(%s::int, %s::int) g",
            (batch * per + 1, (batch + 1) * per),
        )
        pg.switch_wal()
    closed = pg.switch_wal()

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return (wals / closed[:16] / closed).exists()

    wait_for(archived, what="every segment archived")
    after = {n for d in wals.iterdir() if d.is_dir() for n in segment_names(d)}
    return sorted(after - before)


def _start_expecting_a_stop(cluster: Any) -> str:
    """Start ``cluster`` without waiting; return its log once the postmaster has exited."""
    offset = cluster.log_path.stat().st_size if cluster.log_path.exists() else 0
    cluster._run("pg_ctl", "start", "-W", "-D", str(cluster.data_dir), "-l", str(cluster.log_path))
    time.sleep(1)
    wait_for(lambda: cluster.postmaster_pid() is None, what="the startup process to stop")
    with cluster.log_path.open(errors="replace") as log:
        log.seek(offset)
        return log.read()


def _check_stopped_not_promoted(log: str) -> None:
    assert "exit code 200" in log, log[-3000:]
    assert "FATAL" in log
    assert "selected new timeline ID" not in log
    assert "archive recovery complete" not in log


def _recovered_rows(cluster: Any) -> int:
    cluster.start(timeout=120)
    wait_for(lambda: not cluster.is_in_recovery(), what="end of recovery", timeout=120)
    return int(cluster.scalar("SELECT count(*) FROM t"))


def test_an_unreadable_segment_stops_recovery_and_a_restart_completes_it(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    written = _backup_then_rows(pg, wv)
    assert len(written) >= BATCHES
    target = tmp_path / "restored"
    result = wv.run("recover", "pg", "latest", str(target / "data"), "--get-wal")
    assert result.returncode == 0, result.stdout + result.stderr
    middle = Path(wv.server().wals_directory) / written[len(written) // 2][:16]
    victim = middle / written[len(written) // 2]
    victim.chmod(0)
    restored = restored_cluster(pg, target, "restored")
    try:
        _check_stopped_not_promoted(_start_expecting_a_stop(restored))
    finally:
        victim.chmod(0o600)
    assert _recovered_rows(restored) == ROWS


def test_a_dead_ssh_connection_stops_recovery_and_a_restart_completes_it(
    pg: Any, walvault_factory: Any, tmp_path: Path, sshd: Sshd
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    _backup_then_rows(pg, wv)
    target = tmp_path / "restored"
    result = wv.run("recover", "pg", "latest", str(target / "data"), "--get-wal")
    assert result.returncode == 0, result.stdout + result.stderr
    restore = (
        f"{BIN}/walvault-wal-restore --ssh-command {shlex.quote(sshd.ssh_command)} "
        f"-U {sshd.user} --port {sshd.port} -c {wv.conf} 127.0.0.1 pg %f %p"
    )
    auto = target / "data" / "postgresql.auto.conf"
    text = auto.read_text()
    escaped = restore.replace("'", "''")
    auto.write_text(text + f"restore_command = '{escaped}'\n")
    sshd.stop()
    restored = restored_cluster(pg, target, "restored")
    _check_stopped_not_promoted(_start_expecting_a_stop(restored))
    sshd.start()
    assert _recovered_rows(restored) == ROWS
