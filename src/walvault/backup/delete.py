"""``delete``: remove a backup (data, then metadata), then the WAL no remaining backup needs.

Order, for crash safety: ``base/<id>`` goes first (in object storage, the tars and then
``backup.info``: :mod:`walvault.backup.cloudstore`) (a crash leaves metadata without data,
which a second ``delete`` finishes), then ``meta/<id>-backup.info``, then the WAL older than
the oldest remaining backup.  The WAL of a kept backup is never touched, ``.history`` files
are always kept, and with no backup left no WAL is removed at all (unlike Barman).  While
any ``backup.info`` cannot be read (malformed, unreadable), no WAL is removed either: the
backup it describes may be the oldest one, and its WAL must not be judged unneeded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from walvault import locks
from walvault.archive.purge import PurgeResult, has_obsolete_wal, remove_wal_before
from walvault.backup import info as binfo
from walvault.backup.chain import drop_manifest, remove_child
from walvault.backup.info import DONE, STARTED, WAITING_FOR_WALS, BackupInfo
from walvault.backup.walcheck import id_lock, remove_backup_data
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.humanize import pretty_duration

log = logging.getLogger("walvault")
Echo = Callable[[str], None]
#: Statuses whose backups need their WAL (a FAILED backup protects nothing).
PROTECTING = (DONE, WAITING_FOR_WALS, STARTED)


class DeleteRefused(WalvaultError):
    """The backup may not be deleted (minimum redundancy, or a backup in progress)."""


def oldest_needing_wal(backups: Sequence[BackupInfo]) -> BackupInfo | None:
    """The backup with the lowest begin WAL among those that need WAL (pure)."""
    needing = [b for b in backups if b.status in PROTECTING and b.begin_wal]
    return min(needing, key=lambda b: str(b.begin_wal)) if needing else None


def oldest_needed_wal(backups: Sequence[BackupInfo]) -> str | None:
    """The begin WAL of the oldest backup that needs WAL, None when there is none (pure)."""
    oldest = oldest_needing_wal(backups)
    return oldest.begin_wal if oldest else None


def _refuse_if_needed(server: ServerConfig, info: BackupInfo, check_redundancy: bool) -> None:
    from walvault.backup.keep import keep_target

    if keep_target(server, info.backup_id) is not None:
        raise DeleteRefused(
            f"Skipping delete of backup {info.backup_id} for server {server.name} as it has a "
            f"current keep request. If you really want to delete this backup please remove "
            f"the keep ('walvault keep --release {server.name} {info.backup_id}') and try again."
        )
    if info.status == STARTED and locks.lock_holder(
        server.lock_directory, server.name, locks.BACKUP
    ):
        raise DeleteRefused(
            f"Cannot delete backup {info.backup_id} of server {server.name}: it is in progress"
        )
    if not check_redundancy or info.status != DONE or info.is_incremental:
        return
    done = sum(1 for b in binfo.iter_backups(server) if b.status == DONE and not b.is_incremental)
    if done <= server.minimum_redundancy:
        raise DeleteRefused(
            f"Skipping delete of backup {info.backup_id} for server {server.name} due to "
            f"minimum redundancy requirements (minimum redundancy = "
            f"{server.minimum_redundancy}, current redundancy = {done})"
        )


def deletion_order(server: ServerConfig, backup_id: str, with_incrementals: bool) -> list[str]:
    """The backups ``delete`` removes for ``backup_id``: itself, after every incremental
    backup built on it when ``with_incrementals`` (newest first); refused when it has some
    and ``with_incrementals`` is not given -- an incremental without its parent cannot be
    restored."""
    from walvault.backup.chain import descendants

    children = descendants(list(binfo.iter_backups(server)), backup_id)
    if children and not with_incrementals:
        shown = ", ".join(c.backup_id for c in reversed(children))
        raise DeleteRefused(
            f"Cannot delete backup {backup_id} of server {server.name} alone: the incremental "
            f"backups {shown} are built on it and could not be restored without it. Delete "
            f"them first, or delete the whole chain with --with-incrementals"
        )
    return [c.backup_id for c in children] + [backup_id]


def purge_unneeded_wal(
    server: ServerConfig,
    echo: Echo,
    *,
    lock_wait: float = 60.0,
    only_if_needed: bool = False,
    header: str = "Delete associated WAL segments:",
    reason: str = "after 'walvault delete'",
) -> PurgeResult:
    """Remove the WAL older than the oldest backup that needs WAL (nothing without backups).

    ``only_if_needed`` first looks at the oldest archive directory and returns at once when
    it holds nothing obsolete (what cron does every minute).  ``header`` (where
    ``{keep_from}`` and ``{backup_id}`` are replaced) introduces the list of removed files.
    """
    backups, problems = binfo.scan_backups(server)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        why = (
            f"the metadata of a backup cannot be used: {problems[0].message}{more}; "
            "fix or remove it ('walvault check' lists it)"
        )
        echo(f"WAL removal postponed: {why}")
        return PurgeResult(postponed=why)
    oldest = oldest_needing_wal(backups)
    if oldest is None or oldest.begin_wal is None:
        return PurgeResult()
    keep_from = oldest.begin_wal
    if only_if_needed and not has_obsolete_wal(server, keep_from):
        return PurgeResult()
    result = remove_wal_before(server, keep_from, lock_wait=lock_wait)
    if result.postponed:
        echo(f"WAL removal postponed: {result.postponed} (the next delete or cron does it)")
    elif result.removed:
        echo(header.replace("{keep_from}", keep_from).replace("{backup_id}", oldest.backup_id))
        for name in result.removed:
            echo(f"\t{name}")
        log.info(
            "server %s: removed %d WAL files (%s .. %s) %s: no backup kept needs them, the "
            "oldest one (%s) begins at %s",
            server.name,
            len(result.removed),
            result.removed[0],
            result.removed[-1],
            reason,
            oldest.backup_id,
            keep_from,
        )
    return result


@dataclass
class DeleteResult:
    """What ``delete`` removed."""

    backup_id: str
    wal: PurgeResult = field(default_factory=PurgeResult)


def delete_backup(
    server: ServerConfig,
    backup_id: str,
    echo: Echo,
    *,
    check_redundancy: bool = True,
    purge_wal: bool = True,
    lock_wait: float = 60.0,
    reason: str = "asked for by 'walvault delete'",
) -> DeleteResult:
    """Delete one backup (see the module docstring).

    Raises :class:`DeleteRefused` below ``minimum_redundancy`` or while the backup is in
    progress, :class:`walvault.errors.LockBusy` when another process works on the backup.
    """
    started, began = time.monotonic(), time.ctime()
    result = DeleteResult(backup_id)
    with id_lock(server, backup_id):
        info = binfo.load(server, backup_id)
        _refuse_if_needed(server, info, check_redundancy)
        deletion_order(server, backup_id, with_incrementals=False)  # never orphan a child
        echo(f"Deleting backup {backup_id} for server {server.name}")
        remove_backup_data(server, backup_id)
        drop_manifest(server, backup_id)  # the local copy (the bucket's goes with the tars)
        binfo.remove(server, backup_id)
        if info.parent_backup_id is not None:
            remove_child(server, info.parent_backup_id, backup_id)
        log.info(
            "server %s: deleted backup %s (%s, ended %s): %s",
            server.name,
            backup_id,
            info.status,
            info.end_time or "never",
            reason,
        )
    if purge_wal:
        result.wal = purge_unneeded_wal(server, echo, lock_wait=lock_wait)
    elapsed = pretty_duration(time.monotonic() - started)
    echo(f"Deleted backup {backup_id} (start time: {began}, elapsed time: {elapsed})")
    return result


def delete_with_incrementals(
    server: ServerConfig, backup_id: str, echo: Echo, *, lock_wait: float = 60.0
) -> list[DeleteResult]:
    """``delete --with-incrementals``: the backup and every incremental built on it (the
    newest first, so no step leaves an orphan), then the WAL none of the rest needs.  Every
    refusal (keep request, minimum redundancy, a backup in progress) is found before the
    first removal."""
    order = deletion_order(server, backup_id, with_incrementals=True)
    for member in order:
        _refuse_if_needed(server, binfo.load(server, member), check_redundancy=True)
    if len(order) > 1:
        echo(f"Deleting backup {backup_id} and its incremental backups: {', '.join(order[:-1])}")
    results = [delete_backup(server, member, echo, purge_wal=False) for member in order]
    results[-1].wal = purge_unneeded_wal(server, echo, lock_wait=lock_wait)
    return results
