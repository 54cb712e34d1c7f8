"""Where every file of a server's archive lives (Barman's layout); the only place paths are made.

wals/<TLI+log, 16 hex>/<segment>[.partial | .<offset>.backup]
wals/<TLI>.history
<server>-xlog.db in xlogdb_directory
errors/<name>.<UTC stamp>[.<n>].<kind>  (see errors_dir)
<backup_directory>/walvault-archive-wal.journal   (archive-wal's intent record, see journal)
"""

from __future__ import annotations

import os

from walvault.records import NamedTuple
from walvault.wal.names import hash_dir, is_segment, validate_wal_name
from walvault.wal.pagecheck import is_upper_hex

# mypy reads this name as typing.TYPE_CHECKING (the restore client imports this module, and
# must not pay ~6 ms for typing and re).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from walvault.config import ServerConfig


def _is_hash_dir(name: str) -> bool:
    """A ``wals/`` sub-directory name: 16 upper-case hex digits (timeline and log id)."""
    return is_upper_hex(name, 16)


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


def lookup_paths(server: ServerConfig, name: str, *, partial: bool = False) -> list[str]:
    """Where get-wal looks for ``name``, in order (Barman's order, repeats included).

    The archive, ``incoming/``, ``streaming/``; with ``partial`` (plain segments only)
    ``streaming/<name>.partial``, ``streaming/<name>`` again (pg_receivewal may have just
    completed it), ``wals/<hash>/<name>.partial``, ``incoming/<name>.partial``; and the
    archive once more, in case archive-wal moved the file while we looked.
    """
    paths = [
        archived_path(server, name),
        incoming_path(server, name),
        streaming_path(server, name),
    ]
    if partial and is_segment(name):
        partial_name = name + ".partial"
        paths += [
            streaming_path(server, partial_name),
            streaming_path(server, name),
            archived_path(server, partial_name),
            incoming_path(server, partial_name),
        ]
    paths.append(archived_path(server, name))
    return paths


def hash_dirs(server: ServerConfig) -> list[str]:
    """The hash directories of ``wals/``, sorted (oldest first)."""
    try:
        entries = os.listdir(server.wals_directory)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if _is_hash_dir(e))


def newest_archived_segment(server: ServerConfig, timeline: int | None = None) -> str | None:
    """The highest complete segment name in the archive (optionally on one timeline).

    Looks only at the newest hash directories, so the cost does not grow with the archive.
    """
    for directory in reversed(hash_dirs(server)):
        if timeline is not None and int(directory[:8], 16) != timeline:
            continue
        try:
            names = [n for n in os.listdir(os.path.join(server.wals_directory, directory))]
        except FileNotFoundError:
            continue
        segments = sorted(n for n in names if is_segment(n))
        if segments:
            return segments[-1]
    return None


def archive_journal_path(server: ServerConfig) -> str:
    """archive-wal's journal: the catalogue lines of the batch being committed."""
    return os.path.join(server.backup_directory, "walvault-archive-wal.journal")


def errors_path(server: ServerConfig, filename: str) -> str:
    """``errors/<filename>`` (``filename`` is built by :mod:`walvault.archive.errors_dir`)."""
    if not filename or "/" in filename or filename in (".", ".."):
        raise ValueError(f"invalid errors/ file name {filename!r}")
    return os.path.join(server.errors_directory, filename)


class ArchiveEntry(NamedTuple):
    """One entry met while walking ``wals/``: ``directory`` is "" at the top level."""

    directory: str
    name: str
    path: str
    is_dir: bool


def walk_archive(server: ServerConfig) -> Iterator[ArchiveEntry]:
    """Every entry of ``wals/`` in Barman's order: top level sorted, hash dirs descended.

    Dot files (temporary files of writers) are skipped; sub-directories of hash dirs and
    top-level directories that are not hash dirs are yielded with ``is_dir`` set.
    """
    top = server.wals_directory
    try:
        names = sorted(os.listdir(top))
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(top, name)
        if not os.path.isdir(path):
            yield ArchiveEntry("", name, path, False)
            continue
        if not _is_hash_dir(name):
            yield ArchiveEntry("", name, path, True)
            continue
        try:
            inner = sorted(os.listdir(path))
        except FileNotFoundError:
            continue
        for child in inner:
            if child.startswith("."):
                continue
            child_path = os.path.join(path, child)
            yield ArchiveEntry(name, child, child_path, os.path.isdir(child_path))
