"""Recovery of an incremental backup: ``pg_combinebackup`` of its chain into the destination.

``pg_combinebackup --output=<destination> <root>/data <incr 1>/data ... <backup>/data``
writes the full data directory straight into the destination: no staging copy.  Each
tablespace is mapped (``--tablespace-mapping``) from where the *last* backup's
``pg_tblspc/<oid>`` link points (that backup's own copy) to its ``--tablespace`` location or
``<destination>_tablespaces/<oid>``, as recover does for a full backup: nothing is ever
written into a backup.  pg_combinebackup has no progress report of its own; on a terminal,
the destination's growth is shown against the chain's last backup's ``cluster_size``.

pg_combinebackup reads directories, so a chain in object storage is first downloaded and
unpacked (:func:`walvault.backup.cloudrecover.unpack_backup`, every member checked) into
``<destination>.chain/<id>/`` -- the one staging copy, beside the destination, removed at
the end whatever happens; it needs the chain's unpacked size in free space there.
"""

from __future__ import annotations

import os
import shutil
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
    last_data: str, last: BackupInfo, destination: str, locations: dict[str, str]
) -> dict[str, tuple[str, str]]:
    """``{oid: (where the last backup's link points, where the restored one goes)}``;
    ``last_data`` is the data directory of the chain's last backup."""
    tblspc = os.path.join(last_data, "pg_tblspc")
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
    program: str, data_dirs: list[str], destination: str, moves: dict[str, tuple[str, str]]
) -> list[str]:
    """The argv of pg_combinebackup for ``data_dirs`` (the root's first) into ``destination``."""
    argv = [program, f"--output={destination}"]
    for old, new in moves.values():
        argv.append(f"--tablespace-mapping={_escape(old)}={_escape(new)}")
    return argv + data_dirs


def _escape(path: str) -> str:
    return path.replace("=", "\\=")


def _local_chain(server: ServerConfig, backup: BackupInfo, links: list[BackupInfo]) -> list[str]:
    found = [binfo.data_dir(server, link.backup_id) for link in links]
    for link, data in zip(links, found, strict=True):
        if not os.path.isdir(data):
            raise WalvaultError(
                f"the data of backup {link.backup_id} (in the chain of {backup.backup_id}) is "
                f"missing: {data}"
            )
    return found


def _staged_chain(
    server: ServerConfig,
    links: list[BackupInfo],
    staging: str,
    echo: Callable[[str], None],
    jobs: int,
    progress_stream: TextIO | None,
) -> list[str]:
    """Download and unpack every backup of the chain into ``staging/<id>/``."""
    from walvault.backup.cloudrecover import unpack_backup

    found = []
    for link in links:
        top = os.path.join(staging, link.backup_id)
        data = os.path.join(top, "data")
        places = {
            str(t.oid): os.path.join(top, str(t.oid))
            for t in binfo.parse_tablespaces(link.tablespaces)
        }
        echo(f"Downloading and unpacking backup {link.backup_id} into {top}")
        progress = Progress("Download", progress_stream)
        unpack_backup(server, link, data, places, echo, jobs=jobs, progress=progress)
        found.append(data)
    return found


def combine_backup(
    server: ServerConfig,
    backup: BackupInfo,
    destination: str,
    locations: dict[str, str],
    echo: Callable[[str], None],
    progress_stream: TextIO | None = None,
    *,
    jobs: int = 4,
) -> None:
    """Restore the chain of the incremental ``backup`` into ``destination`` (new or empty)."""
    from walvault.postgres.programs import find_program, require_compatible

    links = chain(server, backup)
    program = find_program(COMBINE_NAMES, server.search_path)
    require_compatible(program, "pg_combinebackup", backup.version or 0)
    assert program is not None
    staging = None
    if server.basebackups_in_object_storage:
        staging = f"{destination.rstrip(os.sep)}.chain"
        if os.path.lexists(staging):
            raise WalvaultError(
                f"'{staging}' exists: recover stages a chain from object storage there and "
                "removes it after; remove it (a recover killed earlier left it) or choose "
                "another destination"
            )
        try:
            os.makedirs(staging, mode=0o700)
        except OSError as exc:
            raise WalvaultError(
                f"cannot create '{staging}' to stage the chain from object storage: "
                f"{exc.strerror or exc}"
            ) from None
    try:
        if staging is None:
            data_dirs = _local_chain(server, backup, links)
        else:
            data_dirs = _staged_chain(server, links, staging, echo, jobs, progress_stream)
        echo(
            f"Combining the chain {' > '.join(link.backup_id for link in links)} with "
            f"pg_combinebackup into {destination}"
        )
        moves = tablespace_moves(data_dirs[-1], backup, destination, locations)
        _run(program.path, data_dirs, destination, moves, backup, progress_stream)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    for oid, (_old, new) in sorted(moves.items()):
        echo(f"Tablespace {oid} restored to {new}")


def _run(
    program: str,
    data_dirs: list[str],
    destination: str,
    moves: dict[str, tuple[str, str]],
    backup: BackupInfo,
    progress_stream: TextIO | None,
) -> None:
    argv = combine_command(program, data_dirs, destination, moves)
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
        raise WalvaultError(f"cannot run {program}: {exc.strerror or exc}") from None
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
        progress.close()
    if run.returncode != 0:
        lines = [line for line in (run.stderr + run.stdout).splitlines() if line.strip()]
        detail = " / ".join(lines[-_SHOWN_LINES:]) or f"exit code {run.returncode}"
        raise WalvaultError(f"pg_combinebackup failed for backup {backup.backup_id}: {detail}")
