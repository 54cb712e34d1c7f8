"""``keep``: a backup retention never deletes (Barman's keep annotations, same file).

``<backup_directory>/meta/<id>-keep`` (Barman 3.13.3 and later; the older
``<basebackups_directory>/<id>/annotations/keep`` is read too) holds ``full`` or
``standalone``, written durably, so both tools honour one another's keeps.  As in Barman, a
kept DONE backup is reported ``KEEP:FULL``/``KEEP:STANDALONE`` by the retention report
instead of VALID or OBSOLETE and still counts towards the redundancy; retention never
deletes it, and ``delete`` refuses it until ``keep --release``.
Its WAL stays too: walvault removes only WAL older than the oldest backup there is, so every
WAL file from a kept backup's begin on is kept, for both targets (``standalone`` would need
only ``begin_wal``..``end_wal``; walvault keeps more, never less).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.fs import durable_replace_bytes, remove_durably

TARGETS = ("full", "standalone")


def keep_path(server: ServerConfig, backup_id: str) -> str:
    """The annotation file (Barman's place since 3.13.3)."""
    return os.path.join(server.meta_directory, f"{backup_id}-keep")


def _old_keep_path(server: ServerConfig, backup_id: str) -> str:
    return os.path.join(server.basebackups_directory, backup_id, "annotations", "keep")


def keep_target(server: ServerConfig, backup_id: str) -> str | None:
    """``full``/``standalone`` when the backup is kept, else None.  Like Barman, any other
    content counts as ``full`` (the safe reading: keep everything)."""
    for path in (keep_path(server, backup_id), _old_keep_path(server, backup_id)):
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read().strip()
        except FileNotFoundError:
            continue
        return text if text in TARGETS else "full"
    return None


def kept_backups(server: ServerConfig, backup_ids: Iterable[str]) -> dict[str, str]:
    """``{backup_id: target}`` of the kept ones among ``backup_ids``."""
    found = {}
    for backup_id in backup_ids:
        target = keep_target(server, backup_id)
        if target is not None:
            found[backup_id] = target
    return found


def set_keep(server: ServerConfig, backup_id: str, target: str) -> None:
    """Keep the backup (``target``: full or standalone)."""
    if target not in TARGETS:
        raise WalvaultError(f"invalid keep target '{target}': accepted: {', '.join(TARGETS)}")
    os.makedirs(server.meta_directory, mode=0o700, exist_ok=True)
    durable_replace_bytes(keep_path(server, backup_id), target.encode())


def release_keep(server: ServerConfig, backup_id: str) -> bool:
    """Remove the keep (at both places); True when there was one."""
    removed = remove_durably(keep_path(server, backup_id), missing_ok=True)
    return remove_durably(_old_keep_path(server, backup_id), missing_ok=True) or removed
