"""archive-wal's journal: a batch's catalogue lines, made durable before its files go live.

A batch is committed as: journal, archived files renamed into ``wals/``, catalogue lines
appended, sources removed, journal removed.  After a crash anywhere in that sequence the next
run calls :func:`recover` first: each journalled file that reached ``wals/`` gets its
catalogue line unless the catalogue already has it, so no line is lost or written twice.

The journal is written atomically, so a malformed one (bad header or line, unreadable) was
damaged by something else.  :func:`read_journal` then raises
:class:`~walvault.errors.StateFileError`, and :func:`recover` heals: it rebuilds the
catalogue from the files of the archive (which holds every line the journal could have
added) and removes the journal, with a warning in the log naming the problem.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from walvault.archive.catalogue import CatalogueEntry, append_entries, parse_line, rebuild
from walvault.archive.layout import archive_journal_path, archived_path
from walvault.config import ServerConfig
from walvault.errors import StateFileError, describe_os_error
from walvault.fs import durable_replace_bytes, ensure_dir, remove_durably

log = logging.getLogger("walvault.archive")

HEADER = "# walvault archive-wal journal v1\n"


def write_journal(server: ServerConfig, entries: Sequence[CatalogueEntry]) -> None:
    """Durably record the catalogue lines of the batch about to be committed."""
    ensure_dir(server.backup_directory)
    text = HEADER + "".join(entry.to_line() for entry in entries)
    durable_replace_bytes(archive_journal_path(server), text.encode("utf-8"))


def read_journal(server: ServerConfig) -> list[CatalogueEntry] | None:
    """The journalled entries, or None when there is no journal (StateFileError when it is
    malformed or unreadable)."""
    path = archive_journal_path(server)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(path, f"unreadable: {describe_os_error(exc)}") from None
    except UnicodeDecodeError:
        raise StateFileError(path, "malformed: not UTF-8 text") from None
    if not lines or lines[0] + "\n" != HEADER:
        raise StateFileError(path, f"malformed: its first line is not {HEADER.strip()!r}")
    entries = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            entries.append(parse_line(line))
        except ValueError:
            raise StateFileError(
                path, f"malformed: line {number} is not a catalogue line"
            ) from None
    return entries


def clear_journal(server: ServerConfig) -> None:
    """Remove the journal once its batch is fully committed."""
    remove_durably(archive_journal_path(server), missing_ok=True)


def recover(server: ServerConfig) -> list[CatalogueEntry]:
    """Finish the catalogue part of an interrupted batch; return the entries appended.

    A malformed journal is healed by rebuilding the catalogue (see the module docstring);
    an unreadable one raises: nothing can be done about it without the operator.
    """
    try:
        entries = read_journal(server)
    except StateFileError as exc:
        if exc.problem.startswith("unreadable"):
            raise
        log.warning("%s: rebuilding the WAL catalogue from the archive instead", exc.message)
        rebuild(server)
        clear_journal(server)
        return []
    if entries is None:
        return []
    arrived = [e for e in entries if os.path.lexists(archived_path(server, e.name))]
    written = append_entries(server, arrived, skip_existing=True)
    clear_journal(server)
    return written
