"""Removing WAL that no backup needs any more: files and catalogue lines, durably and together.

A file goes when it is not a ``.history`` file and its segment name (the first 24 characters:
timeline, log, segment) sorts before ``keep_from``, the begin WAL of the oldest backup kept
(Barman's rule, so every timeline below it goes too).  Files are removed first, through the
archive's store (a local archive fsyncs the directories and removes the ones left empty;
object storage deletes in batches of 1,000 keys), then the catalogue is rewritten without
their lines (temp file + rename), all under the archive-wal lock and the xlogdb lock: a
crash in between leaves catalogue lines of removed files, which the next purge drops; never
a file without its line.  Deleting oldest first makes an interrupted purge resumable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from walvault.archive.catalogue import CatalogueEntry, rewrite
from walvault.archive.walstore import WalArchive
from walvault.config import ServerConfig
from walvault.errors import LockBusy
from walvault.locks import ARCHIVE_WAL, ServerLock
from walvault.wal.names import WalKind, classify


def is_obsolete(name: str, keep_from: str) -> bool:
    """Whether the archived file ``name`` is older than the segment ``keep_from`` (pure)."""
    kind = classify(name)
    if kind is None or kind is WalKind.HISTORY:
        return False
    return name[:24] < keep_from


@dataclass
class PurgeResult:
    """What a purge removed, or why it did not run (``postponed``)."""

    removed: list[str] = field(default_factory=list)
    postponed: str | None = None


def _files_below(archive: WalArchive, keep_from: str) -> list[str]:
    """Obsolete archived WAL files (catalogued or not), up to the boundary."""
    return sorted(n for n in archive.names_below(keep_from) if is_obsolete(n, keep_from))


def has_obsolete_wal(server: ServerConfig, keep_from: str) -> bool:
    """Cheap test: is there any obsolete file in the archive?"""
    archive = WalArchive(server)
    if not archive.cloud:
        dirs = archive.hash_dirs()
        if not dirs or dirs[0] > keep_from[:16]:
            return False
    return bool(_files_below(archive, keep_from))


def remove_wal_before(
    server: ServerConfig, keep_from: str, *, lock_wait: float = 60.0
) -> PurgeResult:
    """Remove every obsolete WAL file (see the module docstring) and its catalogue line.

    Waits up to ``lock_wait`` seconds for a running archive-wal; if it is still busy, nothing
    is removed and ``postponed`` says why (the next purge does the work).
    """
    result = PurgeResult()
    os.makedirs(server.lock_directory, exist_ok=True)
    lock = ServerLock(server.lock_directory, server.name, ARCHIVE_WAL, wait=True, timeout=lock_wait)
    try:
        lock.acquire()
    except LockBusy:
        result.postponed = f"archive-wal is still running on server {server.name}"
        return result
    try:
        archive = WalArchive(server)

        def edit(entries: list[CatalogueEntry]) -> list[CatalogueEntry]:
            names = {e.name for e in entries if is_obsolete(e.name, keep_from)}
            names.update(_files_below(archive, keep_from))
            if not names:
                return entries
            archive.delete(sorted(names))
            result.removed = sorted(names)
            return [e for e in entries if e.name not in names]

        rewrite(server, edit)
    finally:
        lock.release()
    return result  # the caller logs what and why (walvault.backup.delete.purge_unneeded_wal)
