"""archive-wal's journal: a batch's catalogue lines, made durable before its files go live.

A batch is committed as: journal, archived files renamed into ``wals/``, catalogue lines
appended, sources removed, journal removed.  After a crash anywhere in that sequence the next
run calls :func:`recover` first: each journalled file that reached ``wals/`` gets its
catalogue line unless the catalogue already has it, so no line is lost or written twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from walvault.archive.catalogue import CatalogueEntry, append_entries, parse_line
from walvault.archive.layout import archive_journal_path, archived_path
from walvault.config import ServerConfig
from walvault.fs import durable_replace_bytes, ensure_dir, remove_durably

HEADER = "# walvault archive-wal journal v1\n"


def write_journal(server: ServerConfig, entries: Sequence[CatalogueEntry]) -> None:
    """Durably record the catalogue lines of the batch about to be committed."""
    ensure_dir(server.backup_directory)
    text = HEADER + "".join(entry.to_line() for entry in entries)
    durable_replace_bytes(archive_journal_path(server), text.encode("utf-8"))


def read_journal(server: ServerConfig) -> list[CatalogueEntry] | None:
    """The journalled entries, or None when there is no journal."""
    try:
        with open(archive_journal_path(server), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return None
    return [parse_line(line) for line in lines if line.strip() and not line.startswith("#")]


def clear_journal(server: ServerConfig) -> None:
    """Remove the journal once its batch is fully committed."""
    remove_durably(archive_journal_path(server), missing_ok=True)


def recover(server: ServerConfig) -> list[CatalogueEntry]:
    """Finish the catalogue part of an interrupted batch; return the entries appended."""
    entries = read_journal(server)
    if entries is None:
        return []
    arrived = [e for e in entries if os.path.lexists(archived_path(server, e.name))]
    written = append_entries(server, arrived, skip_existing=True)
    clear_journal(server)
    return written
