"""Retention policies: which backups are obsolete (pure), and applying that (cron's step).

* ``REDUNDANCY n`` keeps the newest ``n`` DONE backups.
* ``RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`` (a month is 31 days, as in Barman) keeps every
  DONE backup that ended inside the window, plus the newest one that ended before it (the
  one a recovery to the start of the window begins from).
* Never fewer than ``minimum_redundancy`` DONE backups are kept.
* Chains of incremental backups (:mod:`walvault.backup.chain`) count as one: REDUNDANCY and
  ``minimum_redundancy`` count full backups, each kept with every incremental built on it;
  RECOVERY WINDOW judges every backup, and a kept incremental keeps its whole chain.  So
  an obsolete backup never has a kept descendant, and they are deleted newest first.
* Only DONE backups are ever obsolete: a FAILED one is left for the user, a WAITING_FOR_WALS
  or STARTED one is not finished.

Applying it deletes the obsolete backups with the code of ``delete``, then removes the WAL
older than the oldest backup left (see :mod:`walvault.archive.purge`); with no backup left, no
WAL is removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from walvault.backup import info as binfo
from walvault.backup.chain import ancestors, descendants
from walvault.backup.info import DONE, BackupInfo
from walvault.config import ServerConfig
from walvault.config.parsers import RetentionPolicy

Echo = Callable[[str], None]
VALID = "VALID"
OBSOLETE = "OBSOLETE"
_UNIT_DAYS = {"days": 1, "weeks": 7, "months": 31}


def window_start(policy: RetentionPolicy, now: datetime) -> datetime:
    """The oldest point a RECOVERY WINDOW policy must be able to recover to."""
    return now - timedelta(days=policy.value * _UNIT_DAYS[policy.unit])


def retention_report(
    backups: Sequence[BackupInfo],
    policy: RetentionPolicy | None,
    minimum_redundancy: int,
    now: datetime,
    kept: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``{backup_id: VALID | OBSOLETE | KEEP:FULL | KEEP:STANDALONE}`` for every DONE backup
    (pure; ``now`` is aware).  Without a policy every DONE backup is VALID; a kept one
    (``kept``: id -> ``full``/``standalone``, see walvault.backup.keep) is reported KEEP:...
    and still counts towards the policy, as in Barman.
    """
    done = sorted((b for b in backups if b.status == DONE), key=lambda b: b.backup_id)
    newest_first = list(reversed(done))
    fulls = [b for b in newest_first if not b.is_incremental]
    keep: set[str] = set()
    if policy is None:
        keep = {b.backup_id for b in done}
    elif policy.kind == "redundancy":
        keep = {b.backup_id for b in fulls[: policy.value]}
    else:
        start = window_start(policy, now)
        before_found = False
        for backup in newest_first:
            ended = backup.end_time or backup.begin_time
            if ended is not None and ended.tzinfo is None:
                ended = ended.astimezone()  # a naive time is local time
            if ended is None or ended >= start:
                keep.add(backup.backup_id)
            elif not before_found:
                keep.add(backup.backup_id)
                before_found = True
    keep.update(b.backup_id for b in fulls[:minimum_redundancy])
    keep.update(kept or {})
    for backup in done:  # a kept incremental needs its chain
        if backup.backup_id in keep:
            keep.update(ancestors(done, backup))
    if policy is not None and policy.kind == "redundancy":  # a kept full keeps its children
        for backup_id in list(keep):
            keep.update(b.backup_id for b in descendants(done, backup_id))
    report = {b.backup_id: VALID if b.backup_id in keep else OBSOLETE for b in done}
    for backup_id, target in (kept or {}).items():
        if backup_id in report:
            report[backup_id] = f"KEEP:{target.upper()}"
    return report


def obsolete_backups(
    backups: Sequence[BackupInfo],
    policy: RetentionPolicy | None,
    minimum_redundancy: int,
    now: datetime,
    kept: Mapping[str, str] | None = None,
) -> list[str]:
    """The ids of the obsolete backups, oldest first (never a kept one)."""
    report = retention_report(backups, policy, minimum_redundancy, now, kept)
    return sorted(backup_id for backup_id, state in report.items() if state == OBSOLETE)


@dataclass
class RetentionResult:
    """What one application of the policy did."""

    deleted: list[str] = field(default_factory=list)
    wal_removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # messages: backups busy, purge postponed


def enforce_retention(
    server: ServerConfig,
    echo: Echo,
    *,
    now: datetime | None = None,
    lock_wait: float = 30.0,
) -> RetentionResult:
    """Delete the backups the policy makes obsolete, then the WAL no kept backup needs.

    Does nothing without a ``retention_policy``. A backup another process holds is skipped
    this time (said in ``skipped``).
    """
    from walvault.backup.delete import DeleteRefused, delete_backup, purge_unneeded_wal
    from walvault.errors import LockBusy

    result = RetentionResult()
    policy = server.retention_policy
    if policy is None:
        return result
    from walvault.backup.keep import kept_backups

    when = now or datetime.now().astimezone()
    backups = list(binfo.iter_backups(server))
    kept = kept_backups(server, (b.backup_id for b in backups))
    obsolete = obsolete_backups(backups, policy, server.minimum_redundancy, when, kept)
    for backup_id in reversed(obsolete):  # an incremental before its parent
        echo(
            f"Enforcing retention policy: removing backup {backup_id} for server "
            f"{server.name} (retention: {policy})"
        )
        try:
            delete_backup(
                server,
                backup_id,
                echo,
                purge_wal=False,
                reason=f"obsolete under the retention policy '{policy}' (cron)",
            )
        except (LockBusy, DeleteRefused) as exc:
            result.skipped.append(exc.message)
            echo(f"Skipping obsolete backup {backup_id} of server {server.name}: {exc.message}")
            continue
        result.deleted.append(backup_id)
    header = (
        f"Enforcing retention policy on server {server.name} ({policy}): removing WAL older "
        "than {keep_from}, the first WAL of the oldest backup kept ({backup_id}):"
    )
    purge = purge_unneeded_wal(
        server,
        echo,
        lock_wait=lock_wait,
        only_if_needed=True,
        header=header,
        reason=f"under the retention policy '{policy}' (cron)",
    )
    result.wal_removed = purge.removed
    if purge.postponed:
        result.skipped.append(purge.postponed)
    return result
