"""Recovery through walvault-wal-restore: a crashed primary's streamed WAL, .partial included.

Each test takes a pg_basebackup (-X none: every WAL byte must come from walvault), commits
rows while receive-wal streams, crashes the primary (``pg_ctl stop -m immediate``) with
the last rows only in the streamed ``.partial``, restores the backup into a new cluster
whose restore_command is walvault-wal-restore, and checks every committed row is there.
This also checks PostgreSQL's side of the contract: a ``.partial`` padded with zeros to
the segment size is replayed up to its last valid record.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from archiving import base_backup, recover_from_backup
from pgharness import free_port
from sshharness import Sshd
from walvault.clients.common import source_label
from walvault.clients.spool import spool_key
from wvharness import segment_names, start_receiver, streaming_server, wait_for

BIN = Path(sys.executable).parent
RESTORE = BIN / "walvault-wal-restore"


def receiver_caught_up(pg: Any) -> bool:
    return bool(
        pg.scalar(
            "SELECT write_lsn >= pg_current_wal_flush_lsn() FROM pg_stat_replication "
            "WHERE application_name = 'walvault_receive_wal'"
        )
    )


def crashed_primary(pg: Any, wv: Any, tmp_path: Path, segments: int) -> dict[str, Any]:
    """Backup, then ``segments`` full segments of commits, then a few in the .partial; crash."""
    receiver = start_receiver(wv, pg)
    pg.sql("CREATE TABLE rows (id int PRIMARY KEY, pad text)")
    backup = base_backup(pg, tmp_path / "backup")
    next_id = 0
    for _ in range(segments):
        pg.sql(
            "INSERT INTO rows SELECT g, repeat('r', 200) FROM generate_series(%s::int, %s::int) g",
            (next_id + 1, next_id + 300),
        )
        next_id += 300
        pg.switch_wal()
    for _ in range(3):  # small commits, streamed into the .partial only
        next_id += 1
        pg.sql("INSERT INTO rows VALUES (%s::int, 'tail')", (next_id,))
    tail_segment = pg.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    wait_for(lambda: receiver_caught_up(pg), what="receiver caught up")
    pg.crash()
    receiver.send_signal(signal.SIGINT)
    receiver.wait(timeout=30)
    streaming = Path(wv.server().streaming_wals_directory)
    assert (streaming / f"{tail_segment}.partial").exists()
    assert tail_segment not in segment_names(streaming)  # the tail exists only as .partial
    return {"backup": backup, "rows": next_id, "tail": tail_segment}


def restore(pg: Any, crashed: dict[str, Any], name: str, restore_command: str) -> Any:
    """Start a cluster from the backup with ``restore_command``; wait for the promotion."""
    return recover_from_backup(pg, crashed["backup"], name, restore_command)


def check_everything_is_back(cluster: Any, crashed: dict[str, Any]) -> None:
    count, top = cluster.sql("SELECT count(*), max(id) FROM rows")[0]
    assert (count, top) == (crashed["rows"], crashed["rows"])
    log = cluster.log_path.read_text()
    assert f'restored log file "{crashed["tail"]}" from archive' in log


def test_local_recovery_reaches_rows_only_in_the_partial(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    crashed = crashed_primary(pg, wv, tmp_path, segments=3)
    command = f"{RESTORE} -P -c {wv.conf} local pg %f %p"
    cluster = restore(pg, crashed, "restored", command)
    check_everything_is_back(cluster, crashed)


def test_without_partial_the_tail_is_lost(pg: Any, walvault_factory: Any, tmp_path: Path) -> None:
    """The control experiment: without -P, recovery stops before the streamed tail."""
    wv = walvault_factory({"pg": streaming_server(pg)})
    crashed = crashed_primary(pg, wv, tmp_path, segments=1)
    cluster = restore(pg, crashed, "restored", f"{RESTORE} -c {wv.conf} local pg %f %p")
    assert cluster.scalar("SELECT count(*) FROM rows") == 300


def test_recovery_over_ssh(pg: Any, walvault_factory: Any, tmp_path: Path, sshd: Sshd) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    crashed = crashed_primary(pg, wv, tmp_path, segments=2)

    def command(port: int) -> str:
        return (
            f"{RESTORE} -P --ssh-command {shlex.quote(sshd.ssh_command)} -U {sshd.user} "
            f"--port {port} -c {wv.conf} 127.0.0.1 pg"
        )

    test = subprocess.run(
        f"{command(sshd.port)} -t DUMMY DUMMY", shell=True, capture_output=True, text=True
    )
    assert test.returncode == 0, test.stderr
    assert "Ready to retrieve WAL files from the server pg" in test.stdout
    cluster = restore(pg, crashed, "restored", f"{command(sshd.port)} %f %p")
    check_everything_is_back(cluster, crashed)
    # a dead ssh endpoint stops PostgreSQL (200), it is not "end of recovery" (1)
    dead = subprocess.run(
        f"{command(free_port())} {crashed['tail']} {tmp_path}/x",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert dead.returncode == 200, dead.stderr
    assert "Connection problem with ssh" in dead.stderr


def test_prefetch_recovery_ignores_a_stale_spool(
    pg: Any, pg_factory: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    crashed = crashed_primary(pg, wv, tmp_path, segments=8)
    streaming = Path(wv.server().streaming_wals_directory)
    needed = segment_names(streaming)
    # a segment of another cluster, under the name of one this recovery will ask for
    target = needed[-3]
    other = pg_factory("other")
    current = "SELECT pg_walfile_name(pg_current_wal_insert_lsn())"
    for _ in range(200):
        if other.scalar(current) > target:
            break
        other.switch_wal()
    stale = (other.wal_dir / target).read_bytes()
    assert stale[:40] != (streaming / target).read_bytes()[:40]
    spool_dir = tmp_path / "spool"
    spool = spool_dir / spool_key("pg", "local", str(wv.conf))
    spool.mkdir(parents=True, mode=0o700)
    spool_dir.chmod(0o700)
    (spool / target).write_bytes(stale)
    command = f"{RESTORE} -P -p 4 --spool-dir {spool_dir} -c {wv.conf} local pg %f %p"
    cluster = restore(pg, crashed, "restored", command)
    try:
        check_everything_is_back(cluster, crashed)
        log = (spool / "agent.log").read_text()
        assert "prefetching 4 segments" in log
        assert log.count(" spooled ") >= 4, log
        assert not (spool / target).exists()
    finally:
        lock = spool / ".prefetch.lock"
        pid = int(lock.read_text() or 0) if lock.exists() else 0
        if pid:
            os.kill(pid, signal.SIGTERM)
            time.sleep(0.2)


def test_prefetch_recovery_over_a_shared_ssh_connection(
    pg: Any, walvault_factory: Any, tmp_path: Path, sshd: Sshd
) -> None:
    """The README's ssh recipe: -p 4 and OpenSSH connection sharing (ControlMaster with
    ControlPersist).  PostgreSQL recovers every row, the prefetcher fetched over ssh, and
    the shared connection was used (its socket exists while the master lives)."""
    import tempfile

    wv = walvault_factory({"pg": streaming_server(pg)})
    crashed = crashed_primary(pg, wv, tmp_path, segments=6)
    control = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))  # a socket path must be short
    spool_dir = tmp_path / "spool"
    ssh = (
        f"{sshd.ssh_command} -o ControlMaster=auto -o ControlPath={control}/cm-%C "
        "-o ControlPersist=60"
    )
    command = (
        f"{RESTORE} -P -p 4 --spool-dir {spool_dir} --ssh-command {shlex.quote(ssh)} "
        f"-U {sshd.user} --port {sshd.port} -c {wv.conf} 127.0.0.1 pg %f %p"
    )
    key = spool_key("pg", source_label("127.0.0.1", sshd.user, str(sshd.port)), str(wv.conf))
    try:
        cluster = restore(pg, crashed, "restored", command)
        check_everything_is_back(cluster, crashed)
        assert [p.name for p in control.iterdir() if p.name.startswith("cm-")], "no master"
        log = (spool_dir / key / "agent.log").read_text()
        assert log.count(" spooled ") >= 4, log
        # a remote stream-wal per fetch running at once (4 prefetching + 1 request), not a
        # get-wal per file
        assert 1 <= log.count("stream-wal session open") <= 5, log
        assert "get-wal per file" not in log and "session broke" not in log, log
    finally:
        lock = spool_dir / key / ".prefetch.lock"
        pid = int(lock.read_text() or 0) if lock.exists() else 0
        if pid:
            os.kill(pid, signal.SIGTERM)
        for socket in control.glob("cm-*"):
            subprocess.run(
                [*shlex.split(sshd.ssh_command), "-o", f"ControlPath={socket}", "-O", "exit", "x"],
                capture_output=True,
                timeout=10,
            )
        shutil.rmtree(control, ignore_errors=True)


def test_prefetch_over_ssh_to_a_walvault_without_stream_wal_falls_back_to_get_wal(
    pg: Any, walvault_factory: Any, tmp_path: Path, sshd: Sshd
) -> None:
    """The agent's stream-wal sessions need a walvault that has the command; against an older
    one (or Barman) every file goes through get-wal, and every row still comes back."""
    wv = walvault_factory({"pg": streaming_server(pg)})
    crashed = crashed_primary(pg, wv, tmp_path, segments=4)
    old = tmp_path / "old-walvault"
    old.write_text(
        "#!/bin/sh\n"
        'for a; do [ "$a" = stream-wal ] && '
        "{ echo \"walvault: error: invalid choice: 'stream-wal'\" >&2; exit 2; }; done\n"
        f'exec {BIN / "walvault"} "$@"\n'
    )
    old.chmod(0o755)
    spool_dir = tmp_path / "spool"
    command = (
        f"{RESTORE} -P -p 2 --spool-dir {spool_dir} --ssh-command {shlex.quote(sshd.ssh_command)} "
        f"--walvault-command {old} -U {sshd.user} --port {sshd.port} -c {wv.conf} "
        "127.0.0.1 pg %f %p"
    )
    key = spool_key("pg", source_label("127.0.0.1", sshd.user, str(sshd.port)), str(wv.conf))
    try:
        cluster = restore(pg, crashed, "restored", command)
        check_everything_is_back(cluster, crashed)
        log = (spool_dir / key / "agent.log").read_text()
        assert "no stream-wal on the other end" in log, log
        assert "stream-wal session open" not in log, log
    finally:
        lock = spool_dir / key / ".prefetch.lock"
        pid = int(lock.read_text() or 0) if lock.exists() else 0
        if pid:
            os.kill(pid, signal.SIGTERM)
