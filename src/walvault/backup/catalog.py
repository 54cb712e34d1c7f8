"""The backups of a server with their WAL: what list-backups and show-backup display.

For each backup, from the WAL catalogue (``xlog.db``):

* *required* WAL: the segments ``begin_wal`` .. ``end_wal`` (counted in Barman's "Size");
* WAL *until the next* backup: the files after ``end_wal`` and before the next backup's
  ``begin_wal`` (all newer files for the newest backup) — Barman's "WAL Size".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from walvault.archive.catalogue import CatalogueEntry, iter_entries
from walvault.backup import info as binfo
from walvault.backup.chain import ancestors, root_id
from walvault.backup.info import FAILED, BackupInfo
from walvault.backup.retention import retention_report
from walvault.config import ServerConfig
from walvault.wal.names import WalKind, classify


@dataclass(frozen=True)
class WalStats:
    """Files, bytes on disk and the newest name of a group of archived WAL files."""

    count: int = 0
    size: int = 0
    last: str | None = None


@dataclass(frozen=True)
class BackupSummary:
    """One backup with its WAL and its retention status (``-`` when not applicable)."""

    info: BackupInfo
    required: WalStats
    until_next: WalStats
    retention: str
    previous: str | None
    next: str | None
    #: the full backup at the root of an incremental's chain, and the chain's copies' size
    root: str | None = None
    chain_size: int = 0

    @property
    def total_size(self) -> int:
        """The copy plus the WAL it needs (Barman's "Size")."""
        return (self.info.size or 0) + self.required.size


def _stats(entries: Sequence[CatalogueEntry]) -> WalStats:
    if not entries:
        return WalStats()
    return WalStats(len(entries), sum(e.size for e in entries), max(e.name for e in entries))


def summarize(
    backups: Sequence[BackupInfo],
    entries: Sequence[CatalogueEntry],
    report: dict[str, str],
) -> list[BackupSummary]:
    """Pure: the summaries of ``backups`` (oldest first) given the catalogue ``entries``."""
    wal = [e for e in entries if classify(e.name) not in (None, WalKind.HISTORY)]
    usable = [b for b in backups if b.status != FAILED and b.begin_wal]
    sizes = {b.backup_id: b.size or 0 for b in backups}
    result = []
    for backup in backups:
        later = [b for b in usable if b.backup_id > backup.backup_id]
        earlier = [b for b in usable if b.backup_id < backup.backup_id]
        required: list[CatalogueEntry] = []
        after: list[CatalogueEntry] = []
        if backup.status != FAILED and backup.begin_wal and backup.end_wal:
            begin, end = backup.begin_wal, backup.end_wal
            stop = later[0].begin_wal if later else None
            for entry in wal:
                segment = entry.name[:24]
                if begin <= segment <= end and classify(entry.name) is WalKind.SEGMENT:
                    required.append(entry)
                elif segment > end and (stop is None or segment < stop):
                    after.append(entry)
        result.append(
            BackupSummary(
                backup,
                _stats(required),
                _stats(after),
                report.get(backup.backup_id, "-"),
                earlier[-1].backup_id if earlier else None,
                later[0].backup_id if later else None,
                _root(backups, backup),
                sizes[backup.backup_id] + sum(sizes[a] for a in ancestors(backups, backup)),
            )
        )
    return result


def _root(backups: Sequence[BackupInfo], backup: BackupInfo) -> str | None:
    """The root of an incremental's chain; None for a full backup or a broken chain."""
    root = root_id(backups, backup) if backup.is_incremental else None
    if root is None or root == backup.backup_id:
        return None
    return root


def server_backups(server: ServerConfig, now: datetime | None = None) -> list[BackupSummary]:
    """Every backup of ``server``, oldest first, summarised (reads the catalogue unlocked)."""
    from walvault.backup.keep import kept_backups

    backups = list(binfo.iter_backups(server))
    report = retention_report(
        backups,
        server.retention_policy,
        server.minimum_redundancy,
        now or datetime.now().astimezone(),
        kept_backups(server, (b.backup_id for b in backups)),
    )
    return summarize(backups, list(iter_entries(server.xlogdb_path)), report)
