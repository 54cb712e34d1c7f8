"""PostgreSQL's archive_command in tests: a server fed by it, shipping, checks, recovery."""

from __future__ import annotations

import shlex
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from walsupply import catalogue_lines
from walvault.compression import decompress_bytes, identify
from wvharness import WALVAULT, streaming_server, wait_for


def archiving_server(pg: Any, **overrides: Any) -> dict[str, Any]:
    """A server fed by archive_command only."""
    return streaming_server(
        pg, archiver="on", streaming_archiver="off", slot_name=None, **overrides
    )


def enable_archive_command(pg: Any, argv: list[str]) -> None:
    """Make ``argv %p`` the archive_command (restarting); keep segments in pg_wal."""
    command = shlex.join(argv) + " %p"
    pg.configure({"archive_mode": True, "archive_command": command, "wal_keep_size": "256MB"})
    pg.restart()


def wait_shipped(pg: Any, names: list[str], timeout: float = 90) -> None:
    """Until PostgreSQL marks every one of ``names`` as archived (archive_command exit 0)."""
    status = pg.wal_dir / "archive_status"
    for name in names:
        wait_for(lambda n=name: (status / f"{n}.done").exists(), timeout=timeout, what=name)


def archived(wv: Any, name: str) -> Path:
    return Path(wv.server().wals_directory, name[:16], name)


def assert_archived_identical(pg: Any, wv: Any, names: list[str]) -> None:
    """Every name is archived once, decompresses to pg_wal's copy and get-wal serves it."""
    counts = Counter(line[0] for line in catalogue_lines(wv.server()))
    for name in names:
        original = (pg.wal_dir / name).read_bytes()
        stored = archived(wv, name).read_bytes()
        assert decompress_bytes(identify(stored), stored) == original
        got = subprocess.run(
            [*WALVAULT, "-c", str(wv.conf), "get-wal", "pg", name], capture_output=True
        )
        assert got.returncode == 0, got.stderr
        assert got.stdout == original
        assert counts[name] == 1, counts
    assert max(counts.values()) == 1


def base_backup(pg: Any, dest: Path) -> Path:
    """``pg_basebackup -X none`` of ``pg`` into ``dest``: every WAL byte the copy needs must
    then come from the archive."""
    subprocess.run(
        [
            str(pg.bindir / "pg_basebackup"),
            "-D",
            str(dest),
            "-d",
            pg.streaming_conninfo(),
            "-X",
            "none",
            "--no-slot",
            "-c",
            "fast",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return dest


def recover_from_backup(pg: Any, backup: Path, name: str, restore_command: str) -> Any:
    """Start a cluster from the base backup with ``restore_command`` (archiving off); wait
    for the end of recovery (its promotion)."""
    from pgharness import wait_until

    cluster = pg.from_backup(backup, name)
    (cluster.data_dir / "recovery.signal").write_text("")
    escaped = restore_command.replace("'", "''")
    with (cluster.data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write(f"restore_command = '{escaped}'\narchive_mode = off\n")
    cluster.start(timeout=120)
    wait_until(
        lambda: not cluster.is_in_recovery(), timeout=120, what="end of recovery", cluster=cluster
    )
    return cluster
