"""Chains of PostgreSQL 17+ incremental backups, in Barman's ``backup.info`` fields.

An incremental backup (``pg_basebackup --incremental=<parent's backup_manifest>``) holds only
the blocks changed since its parent, found from the server's WAL summaries
(``summarize_wal = on``); it is restored by ``pg_combinebackup`` of its whole chain, the full
backup at its root first.  So:

* ``parent_backup_id`` names the parent; the parent's ``children_backup_ids`` (comma
  separated) lists its children -- both written, as Barman writes them, so Barman reads
  walvault's chains and walvault reads Barman's.  Where the two disagree (a crash between the
  child's and the parent's record), ``parent_backup_id`` is the truth: :func:`descendants`
  reads it, and the parent's list is repaired when next written.
* the parent's ``backup_manifest`` is kept as ``meta/<id>-backup_manifest`` too (Barman's
  copy, which a Barman incremental on a walvault parent reads).
* a backup with children is never deleted alone, and retention counts chains
  (:mod:`walvault.backup.retention`).

In object storage the chain is the same; the manifest is kept in the bucket
(:meth:`walvault.backup.cloudstore.CloudBackups.manifest_key`), and a local copy of a parent's
is made in ``meta/`` when a child is taken.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from walvault.backup import info as binfo
from walvault.backup.info import DONE, BackupInfo
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.fs import durable_replace_bytes, remove_durably

#: The oldest PostgreSQL that takes incremental backups (WAL summaries exist from 17 on).
INCREMENTAL_SINCE = 170000
FULL_SHORTCUTS = ("latest-full", "last-full")


def manifest_copy(server: ServerConfig, backup_id: str) -> str:
    """``meta/<id>-backup_manifest``: the backup's manifest, where Barman keeps its copy."""
    binfo.info_path(server, backup_id)  # validates the id
    return os.path.join(server.meta_directory, f"{backup_id}-backup_manifest")


def keep_manifest(server: ServerConfig, backup_id: str) -> None:
    """Copy the backup's ``backup_manifest`` to :func:`manifest_copy` (durably), if it has one."""
    source = os.path.join(binfo.data_dir(server, backup_id), "backup_manifest")
    try:
        with open(source, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return
    durable_replace_bytes(manifest_copy(server, backup_id), data)


def drop_manifest(server: ServerConfig, backup_id: str) -> None:
    """Remove :func:`manifest_copy` (after the backup's data and before its metadata)."""
    remove_durably(manifest_copy(server, backup_id), missing_ok=True)


def parent_manifest(server: ServerConfig, parent: BackupInfo) -> str:
    """The manifest ``pg_basebackup --incremental`` reads for a child of ``parent`` (for a
    backup in object storage, fetched from the bucket into :func:`manifest_copy`)."""
    if server.basebackups_in_object_storage:
        from walvault.backup.cloudstore import CloudBackups

        data = CloudBackups(server).read_manifest(parent.backup_id)
        if data is None:
            raise WalvaultError(
                f"backup {parent.backup_id} has no backup_manifest in the bucket (taken by "
                "barman-cloud, or by walvault before incremental backups): it cannot be the "
                "parent of an incremental backup"
            )
        os.makedirs(server.meta_directory, exist_ok=True)
        durable_replace_bytes(manifest_copy(server, parent.backup_id), data)
        return manifest_copy(server, parent.backup_id)
    from walvault.backup.tarbackup import tar_files

    copy = binfo.data_dir(server, parent.backup_id)
    if os.path.isdir(copy) and tar_files(copy) is not None:
        raise WalvaultError(
            f"backup {parent.backup_id} is tar-format (backup_compression, encryption): "
            "pg_combinebackup combines plain copies only, so it cannot be the parent of an "
            "incremental backup"
        )
    for path in (
        manifest_copy(server, parent.backup_id),
        os.path.join(copy, "backup_manifest"),
    ):
        if os.path.isfile(path):
            return path
    raise WalvaultError(
        f"backup {parent.backup_id} has no backup_manifest (neither in meta/ nor in its data): "
        "it cannot be the parent of an incremental backup"
    )


def resolve_parent(server: ServerConfig, wanted: str) -> BackupInfo:
    """``--incremental latest|last|latest-full|last-full|ID|NAME`` -> the parent, checked."""
    if wanted in FULL_SHORTCUTS:
        fulls = [b for b in binfo.iter_backups(server) if b.status == DONE and not b.is_incremental]
        if not fulls:
            raise WalvaultError(
                f"--incremental {wanted}: server '{server.name}' has no DONE full backup"
            )
        parent = fulls[-1]
    else:
        parent = binfo.resolve_backup_id(server, wanted)
    if parent.status != DONE:
        raise WalvaultError(
            f"backup {parent.backup_id} is {parent.status}: only a DONE backup can be the "
            "parent of an incremental backup"
        )
    if parent.summarize_wal != "on":
        raise WalvaultError(
            f"backup {parent.backup_id} is not eligible as the parent of an incremental backup: "
            "summarize_wal was not 'on' when it was taken (take a full backup first)"
        )
    parent_manifest(server, parent)
    return parent


def parent_for(
    server: ServerConfig, wanted: str, version_num: int, summarize_wal: str | None, systemid: str
) -> tuple[BackupInfo, str]:
    """``backup --incremental WANTED`` on a server of ``version_num`` whose summarize_wal
    setting is ``summarize_wal``: the parent and the manifest pg_basebackup reads."""
    if version_num < INCREMENTAL_SINCE:
        raise WalvaultError(
            f"--incremental: server '{server.name}' runs PostgreSQL {version_num // 10000}; "
            "incremental backups need PostgreSQL 17 or newer (its WAL summaries)"
        )
    if summarize_wal != "on":
        raise WalvaultError(
            f"--incremental: summarize_wal is '{summarize_wal}' on server '{server.name}'; "
            "incremental backups need 'summarize_wal = on' in its postgresql.conf (then take "
            "a full backup: it becomes the first parent)"
        )
    parent = resolve_parent(server, wanted)
    if parent.systemid != systemid:
        raise WalvaultError(
            f"--incremental: backup {parent.backup_id} is of system {parent.systemid}, the "
            f"server is system {systemid}"
        )
    return parent, parent_manifest(server, parent)


def by_id(backups: Sequence[BackupInfo]) -> dict[str, BackupInfo]:
    return {b.backup_id: b for b in backups}


def chain(server: ServerConfig, backup: BackupInfo) -> list[BackupInfo]:
    """The backups ``pg_combinebackup`` needs for ``backup``: its root full backup first,
    ``backup`` last.  Raises when a link is missing or not DONE."""
    known = by_id(list(binfo.iter_backups(server)))
    links = [backup]
    while links[-1].parent_backup_id is not None:
        parent_id = links[-1].parent_backup_id
        parent = known.get(parent_id)
        if parent is None or parent.status != DONE:
            state = "missing" if parent is None else parent.status
            raise WalvaultError(
                f"backup {backup.backup_id} cannot be restored: backup {parent_id}, which "
                f"{links[-1].backup_id} is an incremental of, is {state}"
            )
        if parent in links or len(links) > len(known):
            raise WalvaultError(f"the backup chain of {backup.backup_id} loops at {parent_id}")
        links.append(parent)
    return list(reversed(links))


def root_id(backups: Sequence[BackupInfo], backup: BackupInfo) -> str:
    """The full backup at the root of ``backup``'s chain (itself when full; the oldest link
    found when the chain is broken)."""
    known = by_id(backups)
    current, seen = backup, {backup.backup_id}
    while current.parent_backup_id in known and current.parent_backup_id not in seen:
        current = known[current.parent_backup_id]
        seen.add(current.backup_id)
    return current.backup_id


def descendants(backups: Sequence[BackupInfo], backup_id: str) -> list[BackupInfo]:
    """Every backup whose chain goes through ``backup_id`` (not itself), newest first: the
    order in which they can be deleted."""
    found: list[BackupInfo] = []
    wanted = {backup_id}
    for backup in sorted(backups, key=lambda b: b.backup_id):  # a child is newer than its parent
        if backup.parent_backup_id in wanted:
            found.append(backup)
            wanted.add(backup.backup_id)
    return list(reversed(found))


def ancestors(backups: Sequence[BackupInfo], backup: BackupInfo) -> list[str]:
    """The ids of ``backup``'s parent, grandparent, ... that exist."""
    known = by_id(backups)
    found: list[str] = []
    current = backup
    while current.parent_backup_id in known and current.parent_backup_id not in found:
        found.append(current.parent_backup_id)
        current = known[current.parent_backup_id]
    return found


def add_child(server: ServerConfig, parent_id: str, child_id: str) -> None:
    """Record ``child_id`` in the parent's ``children_backup_ids``."""
    parent = binfo.load(server, parent_id)
    if child_id not in parent.children:
        binfo.save(server, parent.with_(children_backup_ids=",".join([*parent.children, child_id])))


def remove_child(server: ServerConfig, parent_id: str, child_id: str) -> None:
    """Forget ``child_id`` in the parent's ``children_backup_ids`` (a parent gone is fine)."""
    try:
        parent = binfo.load(server, parent_id)
    except FileNotFoundError:
        return
    if child_id in parent.children:
        rest = [c for c in parent.children if c != child_id]
        binfo.save(server, parent.with_(children_backup_ids=",".join(rest) or None))
