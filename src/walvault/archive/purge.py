"""Removing WAL that no backup needs any more: files and catalogue lines, durably and together.

A file goes when it is not a ``.history`` file and its segment name (the first 24 characters:
timeline, log, segment) sorts before ``keep_from``, the begin WAL of the oldest backup kept
(Barman's rule, so every timeline below it goes too).  Files are unlinked first (directories
fsynced), then the catalogue is rewritten without their lines (temp file + rename), all
under the archive-wal lock and the xlogdb lock: a crash in between leaves catalogue lines of
removed files, which the next purge drops; never a file without its line.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

from walvault.archive.catalogue import CatalogueEntry, rewrite
from walvault.archive.layout import archived_path, hash_dirs
from walvault.config import ServerConfig
from walvault.errors import LockBusy
from walvault.fs import fsync_dir, remove_files
from walvault.locks import ARCHIVE_WAL, ServerLock
from walvault.wal.names import WalKind, classify

log = logging.getLogger("walvault.archive")


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


def _files_below(server: ServerConfig, keep_from: str) -> list[str]:
    """Obsolete WAL files on disk (catalogued or not), from the hash dirs up to the boundary."""
    found = []
    for directory in hash_dirs(server):
        if directory > keep_from[:16]:
            break
        try:
            names = os.listdir(os.path.join(server.wals_directory, directory))
        except FileNotFoundError:
            continue
        found += [n for n in names if n[:16] == directory and is_obsolete(n, keep_from)]
    return sorted(found)


def has_obsolete_wal(server: ServerConfig, keep_from: str) -> bool:
    """Cheap test: is there any obsolete file in the oldest hash directory?"""
    dirs = hash_dirs(server)
    return bool(dirs) and dirs[0] <= keep_from[:16] and bool(_files_below(server, keep_from))


def _remove_empty_dirs(server: ServerConfig, keep_from: str) -> None:
    removed = False
    for directory in hash_dirs(server):
        if directory >= keep_from[:16]:
            break
        with contextlib.suppress(OSError):  # not empty (a foreign file), or gone
            os.rmdir(os.path.join(server.wals_directory, directory))
            removed = True
    if removed:
        fsync_dir(server.wals_directory)


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

        def edit(entries: list[CatalogueEntry]) -> list[CatalogueEntry]:
            names = {e.name for e in entries if is_obsolete(e.name, keep_from)}
            names.update(_files_below(server, keep_from))
            if not names:
                return entries
            remove_files(archived_path(server, name) for name in sorted(names))
            _remove_empty_dirs(server, keep_from)
            result.removed = sorted(names)
            return [e for e in entries if e.name not in names]

        rewrite(server, edit)
    finally:
        lock.release()
    if result.removed:
        log.info(
            "server %s: removed %d WAL files before %s",
            server.name,
            len(result.removed),
            keep_from,
        )
    return result
