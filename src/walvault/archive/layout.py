"""Where every local file of a server lives (Barman's layout); the only place paths are made.

incoming/<name>, streaming/<name>               (staging: always local)
<server>-xlog.db in xlogdb_directory
errors/<name>.<UTC stamp>[.<n>].<kind>  (see errors_dir)
<backup_directory>/walvault-archive-wal.journal   (archive-wal's intent record, see journal)

The archive itself (``wals/``, local or in a bucket) is named by
:mod:`walvault.archive.walstore`; :func:`archived_path` is its local layout's path, for the
local-only tools and the tests.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from walvault.wal.names import hash_dir, is_segment, validate_wal_name

if TYPE_CHECKING:
    from walvault.config import ServerConfig


def archived_path(server: ServerConfig, name: str) -> str:
    """``wals/<hash>/<name>`` (or ``wals/<name>`` for a history file); ``name`` is validated."""
    validate_wal_name(name)
    return os.path.join(server.wals_directory, hash_dir(name), name)


def incoming_path(server: ServerConfig, name: str) -> str:
    """``incoming/<name>`` for a validated WAL name."""
    return os.path.join(server.incoming_wals_directory, validate_wal_name(name))


def streaming_path(server: ServerConfig, name: str) -> str:
    """``streaming/<name>`` for a validated WAL name."""
    return os.path.join(server.streaming_wals_directory, validate_wal_name(name))


#: The place of :func:`lookup_order` that means "the archive" (local directory or bucket).
ARCHIVE = "<archive>"


def lookup_order(
    server: ServerConfig, name: str, *, partial: bool = False
) -> list[tuple[str, str]]:
    """Where get-wal looks for ``name``, in order (Barman's order, repeats included), as
    (place, file name): place is :data:`ARCHIVE` or a staging directory.

    The archive, ``incoming/``, ``streaming/``; with ``partial`` (plain segments only)
    ``streaming/<name>.partial``, ``streaming/<name>`` again (pg_receivewal may have just
    completed it), the archived ``<name>.partial``, ``incoming/<name>.partial``; and the
    archive once more, in case archive-wal moved the file while we looked.
    """
    validate_wal_name(name)
    incoming, streaming = server.incoming_wals_directory, server.streaming_wals_directory
    order = [(ARCHIVE, name), (incoming, name), (streaming, name)]
    if partial and is_segment(name):
        partial_name = name + ".partial"
        order += [
            (streaming, partial_name),
            (streaming, name),
            (ARCHIVE, partial_name),
            (incoming, partial_name),
        ]
    order.append((ARCHIVE, name))
    return order


def hash_dirs(server: ServerConfig) -> list[str]:
    """The hash directories of the archive, sorted (oldest first)."""
    from walvault.archive.walstore import WalArchive

    return WalArchive(server).hash_dirs()


def newest_archived_segment(server: ServerConfig, timeline: int | None = None) -> str | None:
    """The highest complete segment name in the archive (optionally on one timeline).

    Looks only at the newest hash directories, so the cost does not grow with the archive.
    """
    from walvault.archive.walstore import WalArchive

    return WalArchive(server).newest_segment(timeline)


def archive_journal_path(server: ServerConfig) -> str:
    """archive-wal's journal: the catalogue lines of the batch being committed."""
    return os.path.join(server.backup_directory, "walvault-archive-wal.journal")


def errors_path(server: ServerConfig, filename: str) -> str:
    """``errors/<filename>`` (``filename`` is built by :mod:`walvault.archive.errors_dir`)."""
    if not filename or "/" in filename or filename in (".", ".."):
        raise ValueError(f"invalid errors/ file name {filename!r}")
    return os.path.join(server.errors_directory, filename)
