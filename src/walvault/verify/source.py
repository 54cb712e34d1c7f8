"""What verify reads from the archive, and how: one decoding function and an index of ``wals/``.

:func:`read_plain` is the only place verify turns an archived file into its WAL bytes, so a
verified read path (checksummed frames, object storage) can replace it in one spot.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

from walvault.archive.ingest import UnreadableArchive, archived_pieces
from walvault.archive.integrity import DIGEST_KEY, digest_of
from walvault.archive.walstore import WalArchive
from walvault.config import ServerConfig
from walvault.storage.base import StorageError
from walvault.wal.history import HistoryEntry, history_name, parse_history
from walvault.wal.names import is_history, is_partial, is_segment


class ArchiveReadError(Exception):
    """An archived file is missing, unreadable or cannot be decoded (``missing`` tells)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.message, self.missing = message, missing


@functools.lru_cache(maxsize=8)
def _archive(server: ServerConfig) -> WalArchive:
    """One archive (one store client) per server for reading objects."""
    return WalArchive(server)


def read_plain(server: ServerConfig, name: str) -> bytes:
    """The decoded content of the archived file ``name``.

    The compression is told by the file's magic number, as everywhere in walvault.  Raises
    :class:`ArchiveReadError` when the file is missing, cannot be read, its compressed
    stream is corrupt or truncated, or its content does not match the digest recorded when
    it was archived.
    """
    archive = _archive(server)
    try:
        twin = archive.find(name)
        if twin is None:
            raise ArchiveReadError(f"{name} is missing from the archive", missing=True)
        data = b"".join(archived_pieces(archive, twin))
    except FileNotFoundError:
        raise ArchiveReadError(f"{name} is missing from the archive", missing=True) from None
    except UnreadableArchive as exc:
        raise ArchiveReadError(f"{name} cannot be decompressed: {exc}") from None
    except StorageError as exc:
        raise ArchiveReadError(f"{name} cannot be read: {exc.message}") from None
    except OSError as exc:
        raise ArchiveReadError(f"{name} cannot be read: {exc.strerror or exc}") from None
    recorded = twin.info.metadata.get(DIGEST_KEY)
    if recorded is not None and digest_of(data) != recorded:
        raise ArchiveReadError(
            f"{name}: its content does not match the digest recorded when it was archived"
        )
    return data


@dataclass
class ArchiveIndex:
    """The names in ``wals/``: complete segments, ``.partial`` files, history files."""

    segments: set[str] = field(default_factory=set)
    partials: set[str] = field(default_factory=set)  # segment names that have a .partial
    histories: set[int] = field(default_factory=set)  # timelines with a history file

    @classmethod
    def scan(cls, server: ServerConfig) -> ArchiveIndex:
        """Read the archive's listing (nothing is opened)."""
        return cls.of(name for name, _, _ in WalArchive(server).files())

    @classmethod
    def of(cls, names: Iterable[str]) -> ArchiveIndex:
        """The index of a list of file names (other names are ignored)."""
        index = cls()
        for name in names:
            if is_segment(name):
                index.segments.add(name)
            elif is_partial(name):
                index.partials.add(name[:24])
            elif is_history(name):
                index.histories.add(int(name[:8], 16))
        return index

    def timelines(self) -> set[int]:
        """Every timeline with a segment, a ``.partial`` or a history file."""
        names = self.segments | self.partials
        return {int(n[:8], 16) for n in names} | self.histories

    def newest(self, tli: int, *, partial: bool = True) -> str | None:
        """The highest segment name on ``tli`` (``.partial`` ones included by default)."""
        names = self.segments | (self.partials if partial else set())
        on_tli = [n for n in names if int(n[:8], 16) == tli]
        return max(on_tli) if on_tli else None

    def oldest(self, tli: int) -> str | None:
        """The lowest complete segment name on ``tli``."""
        on_tli = [n for n in self.segments if int(n[:8], 16) == tli]
        return min(on_tli) if on_tli else None


def load_histories(
    server: ServerConfig, timelines: Iterable[int]
) -> tuple[dict[int, list[HistoryEntry]], list[str]]:
    """Parse the history files of ``timelines``: (entries by timeline, problems).

    A history file that cannot be read or parsed is a problem (recovery could not follow
    that timeline), never silently an empty history.
    """
    histories: dict[int, list[HistoryEntry]] = {}
    problems = []
    for tli in sorted(timelines):
        name = history_name(tli)
        try:
            text = read_plain(server, name)
            histories[tli] = parse_history(text, timeline=tli)
        except ArchiveReadError as exc:
            problems.append(exc.message)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    return histories, problems


def segment_size_of(server: ServerConfig, name: str) -> int | None:
    """The segment size in the long header of the archived segment ``name`` (None if unreadable)."""
    from walvault.wal.pagecheck import unpack_long_header

    try:
        return unpack_long_header(read_plain(server, name)[:40])[6]
    except (ArchiveReadError, ValueError):
        return None
