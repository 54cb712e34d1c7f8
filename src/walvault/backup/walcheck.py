"""WAITING_FOR_WALS -> DONE or FAILED: is every WAL a backup needs in the archive (check-backup)?"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from walvault import locks
from walvault.archive.walstore import WalArchive
from walvault.backup import info as binfo
from walvault.backup.info import DONE, FAILED, STARTED, WAITING_FOR_WALS, BackupInfo
from walvault.config import ServerConfig
from walvault.errors import LockBusy, WalvaultError
from walvault.fs import fsync_dir
from walvault.wal.names import Segment, segment_range, timeline_of

log = logging.getLogger("walvault.backup")
Echo = Callable[[str], None]


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: the status to record and, when FAILED, why."""

    status: str
    error: str | None = None


def evaluate(
    info: BackupInfo, newest_archived: str | None, archived: Callable[[str], bool]
) -> Verdict:
    """Decide the status of a WAITING_FOR_WALS backup (pure: I/O comes in as arguments).

    ``newest_archived`` is the newest complete segment archived on the backup's timeline;
    ``archived(name)`` tells whether one segment is in the archive. Every segment from
    ``begin_wal`` up to the newest archived one must exist (a hole there will never be
    filled); the backup is DONE once the archive has reached ``end_wal``.
    """
    if not info.begin_wal or not info.end_wal or not info.xlog_segment_size:
        return Verdict(info.status)
    begin_tli, end_tli = timeline_of(info.begin_wal), timeline_of(info.end_wal)
    if begin_tli != end_tli:
        return Verdict(
            FAILED,
            "Backups spanning multiple timelines are not supported. The backup starts in "
            f"timeline {begin_tli} and ends in timeline {end_tli}.",
        )
    if newest_archived is None or newest_archived < info.begin_wal:
        return Verdict(WAITING_FOR_WALS)
    last = min(newest_archived, info.end_wal)
    seg_size = info.xlog_segment_size
    for segment in segment_range(
        Segment.from_name(info.begin_wal), Segment.from_name(last), seg_size
    ):
        if not archived(segment.name):
            return Verdict(
                FAILED,
                f"At least one WAL file is missing. The first missing WAL file is {segment.name}",
            )
    return Verdict(DONE if info.end_wal <= newest_archived else WAITING_FOR_WALS)


def required_wals(info: BackupInfo) -> list[str]:
    """The segments ``begin_wal`` .. ``end_wal`` (empty when unknown or across timelines)."""
    if not info.begin_wal or not info.end_wal or not info.xlog_segment_size:
        return []
    begin, end = Segment.from_name(info.begin_wal), Segment.from_name(info.end_wal)
    if begin.tli != end.tli:
        return []
    return [s.name for s in segment_range(begin, end, info.xlog_segment_size)]


def _archived(archive: WalArchive) -> Callable[[str], bool]:
    return archive.exists


def id_lock(server: ServerConfig, backup_id: str, *, wait: float | None = None) -> locks.ServerLock:
    """Barman's per-backup lock ``.<server>-<backup_id>.lock`` (not yet acquired)."""
    os.makedirs(server.lock_directory, exist_ok=True)
    if wait is None:
        return locks.ServerLock(server.lock_directory, server.name, backup_id, wait=False)
    return locks.ServerLock(server.lock_directory, server.name, backup_id, wait=True, timeout=wait)


def check_backup(server: ServerConfig, backup_id: str, *, wait: float | None = None) -> BackupInfo:
    """Re-evaluate one WAITING_FOR_WALS backup under its lock; record a new status durably.

    Other statuses are returned unchanged. Raises :class:`LockBusy` when another process
    holds the backup's lock (after ``wait`` seconds, when given), :class:`WalvaultError` when
    the backup was deleted.
    """
    with id_lock(server, backup_id, wait=wait):
        try:
            info = binfo.load(server, backup_id)
        except FileNotFoundError:
            raise WalvaultError(
                f"backup {backup_id} of server {server.name} does not exist (any more)"
            ) from None
        if info.status != WAITING_FOR_WALS:
            return info
        timeline = timeline_of(info.begin_wal) if info.begin_wal else None
        archive = WalArchive(server)
        verdict = evaluate(info, archive.newest_segment(timeline), _archived(archive))
        if verdict.status == info.status:
            return info
        info = info.with_(status=verdict.status, error=verdict.error)
        binfo.save(server, info)
        log.info("backup %s of server %s is now %s", backup_id, server.name, verdict.status)
        return info


def remove_backup_data(server: ServerConfig, backup_id: str) -> bool:
    """Remove ``base/<id>`` (a partial or obsolete copy) durably; True if it existed.

    In object storage: remove its local spool (a backup with tablespaces), abort its
    incomplete uploads, delete its tars and its ``backup.info``
    (:meth:`walvault.backup.cloudstore.CloudBackups.remove`).
    """
    from walvault.backup.tarspool import spool_directory

    shutil.rmtree(spool_directory(server, backup_id), ignore_errors=True)  # tablespaces' tars
    if server.basebackups_in_object_storage:
        from walvault.backup.cloudstore import CloudBackups

        return CloudBackups(server).remove(backup_id) > 0
    directory = os.path.dirname(binfo.data_dir(server, backup_id))
    if not os.path.lexists(directory):
        return False
    shutil.rmtree(directory)
    with contextlib.suppress(FileNotFoundError):
        fsync_dir(server.basebackups_directory)
    return True


def _fail_abandoned(server: ServerConfig, info: BackupInfo, echo: Echo) -> None:
    """A STARTED backup whose process is gone: FAILED, its partial copy removed."""
    if locks.lock_holder(server.lock_directory, server.name, locks.BACKUP) is not None:
        return  # a backup is running (it holds this backup's lock while STARTED anyway)
    reason = "the backup process ended before the backup was complete"
    try:
        with id_lock(server, info.backup_id):
            current = binfo.load(server, info.backup_id)
            if current.status != STARTED:
                return
            binfo.save(server, current.with_(status=FAILED, error=reason))
            remove_backup_data(server, info.backup_id)
    except LockBusy:
        return
    echo(f"Backup {info.backup_id} of server {server.name} is FAILED: {reason}")


def check_waiting_backups(server: ServerConfig, echo: Echo) -> list[BackupInfo]:
    """cron's step: settle every WAITING_FOR_WALS backup, fail abandoned STARTED ones.

    Returns the backups whose status changed.
    """
    changed = []
    for info in binfo.iter_backups(server):
        if info.status == STARTED:
            _fail_abandoned(server, info, echo)
            continue
        if info.status != WAITING_FOR_WALS:
            continue
        try:
            after = check_backup(server, info.backup_id)
        except LockBusy:
            continue  # the backup (or a delete) is working on it
        if after.status == info.status:
            continue
        changed.append(after)
        detail = f": {after.error}" if after.error else ""
        echo(f"Backup {info.backup_id} of server {server.name} is now {after.status}{detail}")
    return changed
