"""PostgreSQL 15 archiving through walvault-wal-archive --spool-dir: the archive agent.

Each run takes a base backup (``-X none``: every WAL byte must come from the archive),
archives a pgbench run and a series of ``pg_switch_wal`` through the agent (locally, and
over ssh through the test sshd), checks every file PostgreSQL marked done is in the archive
byte for byte and catalogued once, then recovers the backup from the archive and counts the
rows.  The faults: an agent killed (with its put-wal) while it ships acknowledges nothing
that is not durable and the archive ends complete; a put-wal that refuses (another
cluster's system identifier) makes archive_command fail with the reason and nothing is
acknowledged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archiving import (
    archiving_server,
    assert_archived_identical,
    base_backup,
    enable_archive_command,
    recover_from_backup,
    wait_shipped,
)
from sshharness import Sshd
from walvault.clients import acks, archagent
from walvault.clients.common import source_label
from walvault.clients.spool import spool_key
from wvharness import PG_BIN, make_segments, wait_for

BIN = os.path.dirname(sys.executable)
CLIENT = os.path.join(BIN, "walvault-wal-archive")
RESTORE = os.path.join(BIN, "walvault-wal-restore")
WALVAULT_BIN = os.path.join(BIN, "walvault")
SWITCHES = 6


@pytest.fixture
def spool_dir() -> Iterator[Path]:
    """A short spool directory (an ssh ControlPath in it must stay under ~90 bytes); every
    agent found in it is stopped (with its put-wal) at the end."""
    path = Path(tempfile.mkdtemp(prefix="wa", dir="/tmp"))
    yield path
    for lock in path.glob(f"*/{archagent.LOCK}"):
        kill_agent(lock.parent, signal.SIGTERM)
    shutil.rmtree(path, ignore_errors=True)


def agent_pid(spool: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((spool / archagent.LOCK).read_text())
    return None


def kill_agent(spool: Path, sig: int) -> int | None:
    """Signal the agent of ``spool`` and everything it runs (its own process group)."""
    pid = agent_pid(spool)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), sig)
    return pid


def pgbench(pg: Any, *args: str) -> None:
    subprocess.run(
        [f"{PG_BIN}/pgbench", *args, pg.superuser_conninfo()],
        check=True,
        capture_output=True,
        timeout=300,
    )


def ready(pg: Any) -> list[str]:
    return sorted(n for n in os.listdir(pg.wal_dir / "archive_status") if n.endswith(".ready"))


def done(pg: Any) -> list[str]:
    status = pg.wal_dir / "archive_status"
    return sorted(n[: -len(".done")] for n in os.listdir(status) if n.endswith(".done"))


BALANCES = "SELECT count(*), sum(abalance), (SELECT count(*) FROM pgbench_history) FROM " + (
    "pgbench_accounts"
)


def archive_pgbench_and_recover(pg: Any, wv: Any, tmp_path: Path, argv: list[str]) -> list[str]:
    """The whole story (module docstring); returns the names PostgreSQL archived."""
    enable_archive_command(pg, argv)
    backup = base_backup(pg, tmp_path / "backup")
    pgbench(pg, "-i", "-s", "1", "-q")
    for _ in range(SWITCHES):
        pgbench(pg, "-n", "-c", "2", "-t", "200")
        pg.switch_wal()
    expected = pg.sql(BALANCES)
    pg.switch_wal()
    wait_for(lambda: not ready(pg), timeout=240, what="every .ready archived")
    names = done(pg)
    segments = [n for n in names if len(n) == 24]
    assert len(segments) > 15, names
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stderr
    assert_archived_identical(pg, wv, segments)
    recovered = recover_from_backup(
        pg, backup, "recovered", f"{RESTORE} -c {wv.conf} local pg %f %p"
    )
    assert recovered.sql(BALANCES) == expected
    return names


def test_local_archive_command_through_the_agent(
    pg: Any, walvault_factory: Any, tmp_path: Path, spool_dir: Path
) -> None:
    wv = walvault_factory({"pg": archiving_server(pg)})
    argv = [CLIENT, "-p", "4", "--spool-dir", str(spool_dir), "-c", str(wv.conf), "local", "pg"]
    names = archive_pgbench_and_recover(pg, wv, tmp_path, argv)
    key = spool_key("pg", "local", str(wv.conf), str(pg.wal_dir), role="archive@")
    log = (spool_dir / key / archagent.LOG).read_text()
    assert "up to 4 put-wal at a time" in log
    shipped = [line for line in log.splitlines() if " shipped " in line]
    assert shipped and all("exit 0" in line for line in shipped), log
    put_wals = sum(line.count(", ") + 1 for line in shipped)
    print(f"{len(names)} files archived, {put_wals} through {len(shipped)} put-wal runs")
    # the backup history file went through the agent too
    assert any(n.endswith(".backup") for n in names)


def test_archive_command_through_the_agent_over_ssh(
    pg: Any, walvault_factory: Any, tmp_path: Path, spool_dir: Path, sshd: Sshd
) -> None:
    wv = walvault_factory({"pg": archiving_server(pg, compression="gzip")})
    argv = [
        CLIENT,
        "-p",
        "4",
        "--spool-dir",
        str(spool_dir),
        "--ssh-command",
        sshd.ssh_command,
        "--port",
        str(sshd.port),
        "-U",
        sshd.user,
        "--walvault-command",
        WALVAULT_BIN,
        "-c",
        str(wv.conf),
        "--lz4",
        "127.0.0.1",
        "pg",
    ]
    connections_before = sshd.log.read_text().count("Accepted publickey")
    names = archive_pgbench_and_recover(pg, wv, tmp_path, argv)
    label = source_label("127.0.0.1", sshd.user, str(sshd.port))
    key = spool_key("pg", label, str(wv.conf), str(pg.wal_dir), role="archive@")
    log = (spool_dir / key / archagent.LOG).read_text()
    assert "shipping through one shared ssh connection" in log
    put_wals = sum(line.count(", ") + 1 for line in log.splitlines() if " shipped " in line)
    connections = sshd.log.read_text().count("Accepted publickey") - connections_before
    print(
        f"{len(names)} files archived in {put_wals} put-wal runs over {connections} ssh connections"
    )
    # one master connection per agent session (a few if sessions started in parallel at
    # first), far fewer than the files sent
    assert 1 <= connections <= len(names) // 4, (connections, len(names), put_wals)


THROTTLE = """
import subprocess, sys, time
proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE)
while chunk := sys.stdin.buffer.read1(32768):
    proc.stdin.write(chunk)
    proc.stdin.flush()
    time.sleep(0.05)
proc.stdin.close()
sys.exit(proc.wait())
"""


def test_an_agent_killed_while_it_ships_acknowledges_nothing_that_is_not_durable(
    pg: Any, walvault_factory: Any, tmp_path: Path, spool_dir: Path
) -> None:
    wv = walvault_factory({"pg": archiving_server(pg)})
    incoming = Path(wv.server().incoming_wals_directory)
    incoming.mkdir(parents=True)
    throttle = tmp_path / "throttle.py"
    throttle.write_text(THROTTLE)
    slow = shlex.join([sys.executable, str(throttle), WALVAULT_BIN])
    argv = [CLIENT, "-p", "2", "--spool-dir", str(spool_dir), "-c", str(wv.conf)]
    enable_archive_command(pg, [*argv, "--walvault-command", slow, "local", "pg"])
    spool = spool_dir / spool_key("pg", "local", str(wv.conf), str(pg.wal_dir), role="archive@")
    names = make_segments(pg, 8)

    def writing() -> bool:
        for entry in os.listdir(incoming):
            with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
                if entry.endswith(".tmp") and (incoming / entry).stat().st_size > 0:
                    return True
        return False

    wait_for(lambda: agent_pid(spool) and writing(), timeout=60, what="a put-wal writing")
    pid = kill_agent(spool, signal.SIGKILL)
    assert pid is not None
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the agent gone")
    # every ack left behind is backed by a durable copy with exactly its bytes
    for name in acks.names(str(spool)):
        size, digest, _ = acks.read(str(spool), name) or (0, "", 0)
        landed = (incoming / name).read_bytes()
        assert (len(landed), hashlib.sha256(landed).hexdigest()) == (size, digest)
    wait_shipped(pg, names, timeout=240)  # PostgreSQL asks again; a new agent ships
    assert agent_pid(spool) not in (None, pid)
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stderr
    assert_archived_identical(pg, wv, names)


def test_put_wal_refusing_fails_archive_command_with_the_reason(
    pg: Any, walvault_factory: Any, spool_dir: Path
) -> None:
    wv = walvault_factory({"pg": archiving_server(pg)})
    identity = Path(wv.server().identity_path)
    identity.parent.mkdir(parents=True, exist_ok=True)
    identity.write_text(json.dumps({"systemid": str(pg.system_identifier() + 1), "version": "15"}))
    argv = [CLIENT, "-p", "2", "--spool-dir", str(spool_dir), "-c", str(wv.conf), "local", "pg"]
    enable_archive_command(pg, argv)
    (name,) = make_segments(pg, 1)

    def failed() -> Any:
        return pg.scalar("SELECT failed_count FROM pg_stat_archiver") >= 2

    wait_for(failed, timeout=60, what="archive_command failing")
    log = pg.log_path.read_text()
    assert f"WAL file '{name}' belongs to another PostgreSQL cluster" in log
    assert "archive command failed with exit code 1" in log
    spool = spool_dir / spool_key("pg", "local", str(wv.conf), str(pg.wal_dir), role="archive@")
    assert acks.names(str(spool)) == []
    assert pg.scalar("SELECT last_archived_wal FROM pg_stat_archiver") is None
