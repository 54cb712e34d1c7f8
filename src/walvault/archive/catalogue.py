"""The WAL catalogue ``<server>-xlog.db``: Barman's line format, reading, appending, rebuilding.

One line per archived file, in arrival order, five tab-separated columns::

    <name> <size on disk> <source mtime, a float> <compression|None> <encryption|None>

Every change happens under the blocking ``.<server>-xlogdb.lock`` flock (shared with Barman).
Appends are fsynced once per batch; a crash can leave a torn last line, which readers ignore
and the next append cuts off before writing (:func:`walvault.fs.truncate_torn_tail`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from walvault.config import ServerConfig
from walvault.fs import append_lines_durably, durable_write_from, ensure_dir, truncate_torn_tail
from walvault.locks import XLOGDB, ServerLock
from walvault.wal.names import WalKind, classify

if TYPE_CHECKING:
    from walvault.archive.walstore import WalArchive

log = logging.getLogger("walvault.archive")

_NONE = "None"
_BLOCK = 1 << 20


@dataclass(frozen=True)
class CatalogueEntry:
    """One archived file as the catalogue records it."""

    name: str
    size: int
    time: float
    compression: str | None = None
    encryption: str | None = None

    def to_line(self) -> str:
        """The line Barman writes (``WalFileInfo.to_xlogdb_line``), newline included."""
        return (
            f"{self.name}\t{self.size}\t{float(self.time)!r}\t"
            f"{self.compression or _NONE}\t{self.encryption or _NONE}\n"
        )


def _optional(text: str) -> str | None:
    return None if text == _NONE else text


def parse_line(line: str) -> CatalogueEntry:
    """Parse a catalogue line of 3, 4 or 5 whitespace-separated columns (ValueError if bad)."""
    cols = line.split()
    if not 3 <= len(cols) <= 5:
        raise ValueError(f"a catalogue line has 3 to 5 columns, got {len(cols)}: {line!r}")
    name, size, mtime = cols[0], int(cols[1]), float(cols[2])
    if classify(name) is None:
        raise ValueError(f"not a WAL file name in the catalogue: {name!r}")
    compression = _optional(cols[3]) if len(cols) > 3 else None
    encryption = _optional(cols[4]) if len(cols) > 4 else None
    return CatalogueEntry(name, size, mtime, compression, encryption)


def iter_entries(path: str | os.PathLike[str]) -> Iterator[CatalogueEntry]:
    """The entries of a catalogue file in order; a torn last line and bad lines are skipped."""
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        return
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith("\n"):
                log.warning("%s: ignoring the torn last line %d", path, number)
                return
            if not line.strip():
                continue
            try:
                yield parse_line(line)
            except ValueError as exc:
                log.warning("%s:%d: ignoring a malformed line: %s", path, number, exc)


def _first_token(line: bytes) -> str:
    parts = line.split(None, 1)
    return parts[0].decode("utf-8", "replace") if parts else ""


def find_names(path: str | os.PathLike[str], names: Collection[str]) -> set[str]:
    """Which of ``names`` have a complete line in the catalogue.

    Reads backwards from the end and stops as soon as all are found, so checking the files
    of a recent batch costs little; names that are absent cost a full read.
    """
    wanted = set(names)
    found: set[str] = set()
    try:
        handle: BinaryIO = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return found
    with handle:
        pos = handle.seek(0, os.SEEK_END)
        carry: bytes | None = None  # None: we are at the end, the text after the last \n is torn
        while pos > 0 and wanted - found:
            step = min(_BLOCK, pos)
            pos -= step
            handle.seek(pos)
            block = handle.read(step) + (carry or b"")
            lines = block.split(b"\n")
            if carry is None:
                lines.pop()  # after the final newline: empty, or a torn line
            carry = lines.pop(0) if pos > 0 else None
            for line in lines:
                token = _first_token(line)
                if token in wanted:
                    found.add(token)
    return found


#: How much of the catalogue's end :func:`newest_catalogued_segment` reads (~50,000 lines).
NEWEST_SCAN = 4 << 20


def recent_catalogued_segments(server: ServerConfig) -> list[str]:
    """The segment names among the catalogue's latest lines, highest first: what an archive
    in object storage uses instead of listing the bucket.

    Lines are in arrival order, so the newest segments are at the end; only the last
    ``NEWEST_SCAN`` bytes are read (a torn last line is ignored).
    """
    try:
        handle: BinaryIO = open(server.xlogdb_path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return []
    with handle:
        end = handle.seek(0, os.SEEK_END)
        start = max(0, end - NEWEST_SCAN)
        handle.seek(start)
        lines = handle.read().split(b"\n")
    if start:
        lines = lines[1:]  # the first one is cut
    names = {_first_token(line) for line in lines[:-1]}
    return sorted((n for n in names if classify(n) is WalKind.SEGMENT), reverse=True)


def newest_catalogued_segment(server: ServerConfig, timeline: int | None = None) -> str | None:
    """The highest catalogued segment name (optionally on one timeline): see
    :func:`recent_catalogued_segments`."""
    for name in recent_catalogued_segments(server):
        if timeline is None or int(name[:8], 16) == timeline:
            return name
    return None


def xlogdb_lock(server: ServerConfig) -> ServerLock:
    """The blocking ``.<server>-xlogdb.lock`` (not yet acquired)."""
    os.makedirs(server.lock_directory, exist_ok=True)
    return ServerLock(server.lock_directory, server.name, XLOGDB, wait=True)


def append_entries(
    server: ServerConfig, entries: Sequence[CatalogueEntry], *, skip_existing: bool = False
) -> list[CatalogueEntry]:
    """Append ``entries`` (fsynced once) under the catalogue lock; return those written.

    A missing catalogue is first rebuilt from the archive, as Barman does; entries the
    rebuild already found are then not appended again.  ``skip_existing`` also leaves out
    entries whose name is already in the catalogue (for crash recovery; see find_names).
    """
    if not entries:
        return []
    path = server.xlogdb_path
    with xlogdb_lock(server):
        if not os.path.exists(path):
            # the batch's own lines replace what the scan found for the same files: the scan
            # cannot tell the codec of an encrypted file, the batch knows it
            known = {e.name: e for e in entries}
            present = {e.name for e in _rebuild_locked(server, known).entries}
        else:
            truncate_torn_tail(path)
            present = find_names(path, {e.name for e in entries}) if skip_existing else set()
        todo = [e for e in entries if e.name not in present]
        append_lines_durably(path, [e.to_line() for e in todo])
    return todo


def read_entries(server: ServerConfig) -> list[CatalogueEntry]:
    """The whole catalogue of ``server`` (read under its lock; rebuilt first if missing)."""
    with xlogdb_lock(server):
        if not os.path.exists(server.xlogdb_path):
            return list(_rebuild_locked(server).entries)
        return list(iter_entries(server.xlogdb_path))


@dataclass
class RebuildResult:
    """What a rebuild found: the entries written, counts by kind, unexpected paths."""

    entries: list[CatalogueEntry] = field(default_factory=list)
    history: int = 0
    backup_labels: int = 0
    wal_file: int = 0
    partial: int = 0
    unexpected: list[str] = field(default_factory=list)

    def summary(self, server: str) -> str:
        """Barman's closing line, plus the ``partial`` count Barman does not keep."""
        return (
            f"Done rebuilding xlogdb for server {server} (history: {self.history}, "
            f"backup_labels: {self.backup_labels}, wal_file: {self.wal_file}, "
            f"partial: {self.partial})"
        )


_COUNTERS = {
    WalKind.HISTORY: "history",
    WalKind.BACKUP: "backup_labels",
    WalKind.SEGMENT: "wal_file",
    WalKind.PARTIAL: "partial",
}


def scan_archive(server: ServerConfig) -> RebuildResult:
    """Catalogue entries for every file of the archive (history on top, the rest in hash
    dirs), through :class:`~walvault.archive.walstore.WalArchive`: a directory or a bucket.

    The codec comes from the key's extension in object storage, from the file's first bytes
    in a local archive (where compressed files keep their plain names).  So does the
    encryption in a local archive -- then the codec is not known without decrypting, and is
    recorded None, as Barman does; a listing of object storage does not tell it (the fifth
    column stays None there).
    """
    from walvault.archive.walstore import WalArchive

    archive = WalArchive(server)
    result = RebuildResult()
    for name, info, compression in archive.files():
        encryption = None
        if not archive.cloud:
            present, compression, encryption = _stored_format(archive, info.key)
            if not present:
                continue  # removed meanwhile (retention)
        kind = classify(name)
        assert kind is not None
        result.entries.append(CatalogueEntry(name, info.size, info.mtime, compression, encryption))
        counter = _COUNTERS[kind]
        setattr(result, counter, getattr(result, counter) + 1)
    catalogues = {
        os.path.abspath(server.xlogdb_path),
        os.path.join(server.wals_directory, "xlog.db"),  # its name before Barman 3.13
    }
    for key in archive.strays():
        where = archive.storage.url(key)
        if archive.cloud or os.path.abspath(where) not in catalogues:
            result.unexpected.append(where)
    return result


def _stored_format(archive: WalArchive, key: str) -> tuple[bool, str | None, str | None]:
    """(still there, codec, encryption) of a local archived file, told by its first bytes."""
    from walvault.archive.ingest import stored_format
    from walvault.archive.walstore import ArchivedFile
    from walvault.storage.base import ObjectInfo

    return stored_format(archive, ArchivedFile(key, key, ObjectInfo(key, 0, 0.0), None))


def _rebuild_locked(
    server: ServerConfig, known: dict[str, CatalogueEntry] | None = None
) -> RebuildResult:
    result = scan_archive(server)
    if known:
        result.entries = [known.get(entry.name, entry) for entry in result.entries]
    ensure_dir(server.xlogdb_directory)

    def writer(handle: BinaryIO) -> None:
        for entry in result.entries:
            handle.write(entry.to_line().encode("utf-8"))

    durable_write_from(server.xlogdb_path, writer, mode=0o600)
    log.info("rebuilt %s: %d entries", server.xlogdb_path, len(result.entries))
    return result


def rebuild(server: ServerConfig) -> RebuildResult:
    """Rewrite the catalogue from the files of the archive, atomically, under its lock.

    Unlike Barman, ``.partial`` files are kept.  Callers that may race with archive-wal
    should hold the archive-wal lock too (see :func:`walvault.archive.archiver.rebuild_xlogdb`).
    """
    with xlogdb_lock(server):
        return _rebuild_locked(server)


def rewrite(
    server: ServerConfig, edit: Callable[[list[CatalogueEntry]], list[CatalogueEntry]]
) -> list[CatalogueEntry]:
    """Replace the catalogue with ``edit(entries)``, atomically and durably, under its lock.

    A missing catalogue is first rebuilt from the archive.  ``edit`` runs under the lock, so
    it may remove the files whose entries it drops (WAL purge); a torn last line is dropped.
    When ``edit`` returns the very list it was given, nothing is written.  Returns the entries
    kept.
    """
    path = server.xlogdb_path
    with xlogdb_lock(server):
        if not os.path.exists(path):
            current = list(_rebuild_locked(server).entries)
        else:
            current = list(iter_entries(path))
        kept = edit(current)
        if kept is current:
            return kept

        def writer(handle: BinaryIO) -> None:
            for entry in kept:
                handle.write(entry.to_line().encode("utf-8"))

        durable_write_from(path, writer, mode=0o600)
    return kept
