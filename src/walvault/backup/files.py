"""``list-files``: the files a backup is made of, Barman's four targets.

* ``data``: every file of the copy (``base/<id>/``: the data directory and the tablespaces
  copied beside it), the ``pg_tblspc`` links excepted;
* ``standalone`` (the default): ``data`` plus the WAL segments ``begin_wal`` .. ``end_wal``,
  what a recovery to the end of the backup needs;
* ``wal``: the WAL from ``begin_wal`` up to the next backup's ``begin_wal`` (every newer file
  for the newest backup), history files included: what a point-in-time recovery between this
  backup and the next can read;
* ``full``: ``data`` plus ``wal``.

WAL files are named by where they are archived (a path, or an ``s3://`` URL), from the WAL
catalogue; the selection itself is pure (:func:`select_wal`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from walvault.archive.catalogue import CatalogueEntry, iter_entries
from walvault.backup import info as binfo
from walvault.backup.info import FAILED, BackupInfo
from walvault.config import ServerConfig
from walvault.wal.names import WalKind, classify

TARGETS = ("data", "standalone", "wal", "full")


def select_wal(
    backup: BackupInfo,
    backups: Sequence[BackupInfo],
    entries: Sequence[CatalogueEntry],
    target: str,
) -> list[str]:
    """Pure: the names of the archived WAL files ``target`` lists for ``backup``."""
    if target == "data" or not backup.begin_wal or not backup.end_wal:
        return []
    begin, end = backup.begin_wal, backup.end_wal
    if target == "standalone":
        return sorted(
            e.name
            for e in entries
            if classify(e.name) is WalKind.SEGMENT and begin <= e.name <= end
        )
    later = [
        b.begin_wal
        for b in backups
        if b.backup_id > backup.backup_id and b.status != FAILED and b.begin_wal
    ]
    stop = min(later) if later else None
    names = []
    for entry in entries:
        kind = classify(entry.name)
        if kind is WalKind.HISTORY or (
            kind is not None
            and begin <= entry.name[:24]
            and (stop is None or entry.name[:24] < stop)
        ):
            names.append(entry.name)
    return sorted(names)


def data_files(server: ServerConfig, backup_id: str) -> Iterator[str]:
    """Every file of the backup's copy, sorted within each directory."""
    top = os.path.dirname(binfo.data_dir(server, backup_id))
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if not os.path.islink(path):
                yield path


def backup_files(server: ServerConfig, backup: BackupInfo, target: str) -> Iterator[str]:
    """What ``list-files --target TARGET`` prints, in that order: data, then WAL."""
    from walvault.archive.walstore import WalArchive

    if target not in TARGETS:
        raise ValueError(f"unknown target '{target}'")
    if target in ("data", "standalone", "full"):
        yield from data_files(server, backup.backup_id)
    if target == "data":
        return
    wal_target = "standalone" if target == "standalone" else "wal"
    backups = list(binfo.iter_backups(server))
    names = select_wal(backup, backups, list(iter_entries(server.xlogdb_path)), wal_target)
    archive = WalArchive(server)
    for name in names:
        found = archive.find(name)
        yield archive.storage.url(found.key) if found is not None else archive.url(name)
