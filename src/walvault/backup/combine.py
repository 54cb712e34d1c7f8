"""Recovery of an incremental backup: ``pg_combinebackup`` of its chain into the destination.

``pg_combinebackup --output=<destination> <root>/data <incr 1>/data ... <backup>/data``
writes the full data directory straight into the destination: no staging copy.  Each
tablespace is mapped (``--tablespace-mapping``) from where the *last* backup's
``pg_tblspc/<oid>`` link points (that backup's own copy) to its ``--tablespace`` location or
``<destination>_tablespaces/<oid>``, as recover does for a full backup: nothing is ever
written into a backup.  pg_combinebackup has no progress report of its own; on a terminal,
the destination's growth is shown against the chain's last backup's ``cluster_size``.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from typing import TextIO

from walvault.backup import info as binfo
from walvault.backup.chain import chain
from walvault.backup.info import BackupInfo
from walvault.backup.progress import Progress
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.fs import tree_size

COMBINE_NAMES = ("pg_combinebackup",)
_SHOWN_LINES = 3


def tablespace_moves(
    server: ServerConfig, last: BackupInfo, destination: str, locations: dict[str, str]
) -> dict[str, tuple[str, str]]:
    """``{oid: (where the last backup's link points, where the restored one goes)}``."""
    tblspc = os.path.join(binfo.data_dir(server, last.backup_id), "pg_tblspc")
    moves = {}
    for space in binfo.parse_tablespaces(last.tablespaces):
        oid = str(space.oid)
        link = os.path.join(tblspc, oid)
        if not os.path.islink(link):
            raise WalvaultError(f"backup {last.backup_id} has no tablespace link {link}")
        new = locations.get(oid) or os.path.join(f"{destination}_tablespaces", oid)
        moves[oid] = (os.readlink(link), new)
    return moves


def combine_command(
    program: str,
    server: ServerConfig,
    links: list[BackupInfo],
    destination: str,
    moves: dict[str, tuple[str, str]],
) -> list[str]:
    """The argv of pg_combinebackup for ``links`` (root first) into ``destination``."""
    argv = [program, f"--output={destination}"]
    for old, new in moves.values():
        argv.append(f"--tablespace-mapping={_escape(old)}={_escape(new)}")
    argv += [binfo.data_dir(server, link.backup_id) for link in links]
    return argv


def _escape(path: str) -> str:
    return path.replace("=", "\\=")


def combine_backup(
    server: ServerConfig,
    backup: BackupInfo,
    destination: str,
    locations: dict[str, str],
    echo: Callable[[str], None],
    progress_stream: TextIO | None = None,
) -> None:
    """Restore the chain of the incremental ``backup`` into ``destination`` (new or empty)."""
    from walvault.postgres.programs import find_program, require_compatible

    links = chain(server, backup)
    program = find_program(COMBINE_NAMES, server.search_path)
    require_compatible(program, "pg_combinebackup", backup.version or 0)
    assert program is not None
    for link in links:
        if not os.path.isdir(binfo.data_dir(server, link.backup_id)):
            raise WalvaultError(
                f"the data of backup {link.backup_id} (in the chain of {backup.backup_id}) is "
                f"missing: {binfo.data_dir(server, link.backup_id)}"
            )
    echo(
        f"Combining the chain {' > '.join(link.backup_id for link in links)} with "
        f"pg_combinebackup into {destination}"
    )
    moves = tablespace_moves(server, backup, destination, locations)
    argv = combine_command(program.path, server, links, destination, moves)
    progress = Progress("Combine", progress_stream, total=backup.cluster_size)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            progress.add(tree_size(destination) - progress.done)

    watcher = threading.Thread(target=watch, daemon=True) if progress.shown else None
    if watcher is not None:
        watcher.start()
    env = dict(os.environ, LC_MESSAGES="C", LC_ALL="C")
    try:
        run = subprocess.run(argv, capture_output=True, text=True, errors="replace", env=env)
    except OSError as exc:
        raise WalvaultError(f"cannot run {program.path}: {exc.strerror or exc}") from None
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
        progress.close()
    if run.returncode != 0:
        lines = [line for line in (run.stderr + run.stdout).splitlines() if line.strip()]
        detail = " / ".join(lines[-_SHOWN_LINES:]) or f"exit code {run.returncode}"
        raise WalvaultError(f"pg_combinebackup failed for backup {backup.backup_id}: {detail}")
    for oid, (_old, new) in sorted(moves.items()):
        echo(f"Tablespace {oid} restored to {new}")
