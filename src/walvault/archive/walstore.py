"""The WAL archive of one server as objects in a store: which key holds which WAL file.

Every command that reads, lists, writes or deletes archived WAL goes through
:class:`WalArchive`; nothing outside this module builds an archive key.  Two layouts, one
per kind of store:

* **local** (``wals_directory`` is a directory; Barman's layout): ``<hash>/<name>`` for
  segments, ``.partial`` and ``.backup`` files, ``<name>`` for history files, relative to
  ``wals_directory``; a compressed file keeps its plain name (the codec is recognised by its
  content).  Metadata (digests) lives in ``<backup_directory>/walvault-meta`` (see
  :mod:`walvault.storage.posix`).
* **object storage** (``wals_directory = s3://BUCKET[/PATH]``; barman-cloud's layout):
  ``<server>/wals/<hash>/<name><ext>`` and ``<server>/wals/<name><ext>`` for history files,
  relative to PATH, with barman-cloud's extensions (``.gz .bz2 .xz .zst .lz4``, none when
  uncompressed), so barman-cloud-wal-restore and Barman read what walvault writes and the
  other way round.  Metadata is the object's own (``x-amz-meta-walvault-digest``).

``<hash>`` is the first 16 hex digits of the name (timeline and log).  Look-ups are
GET-first: the key with the configured codec's extension, then (object storage, on a miss)
one LIST of the name's exact prefix to find it under another extension -- at most two
requests, never a LIST per segment when the file is there.

What the archive records with each file it writes (:mod:`walvault.archive.integrity`): the
digest of the plain content (``walvault-digest``) and its size (``walvault-plain-size``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from walvault.compression import BY_EXTENSION, EXTENSIONS
from walvault.wal.names import WalKind, classify, hash_dir

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from walvault.config import ServerConfig
    from walvault.storage.base import ObjectInfo, Reader, Storage, WriteBatch


class ArchivedFile:
    """An archived WAL file found by name: its key, info and the codec its key says."""

    __slots__ = ("compression", "info", "key", "name")

    def __init__(self, name: str, key: str, info: ObjectInfo, compression: str | None) -> None:
        self.name, self.key, self.info, self.compression = name, key, info, compression

    def __repr__(self) -> str:
        return f"ArchivedFile({self.name!r}, {self.key!r}, {self.info.size})"


def open_storage(server: ServerConfig) -> Storage:
    """The store holding ``server``'s WAL archive."""
    if server.wals_in_object_storage:
        from walvault.storage.s3 import S3Storage

        return S3Storage.from_options(server.wals_directory, dict(server.storage_options))
    from walvault.storage.posix import PosixStorage

    return PosixStorage(server.wals_directory, meta_dir=server.wal_meta_directory)


class WalArchive:
    """``server``'s archived WAL (see the module docstring)."""

    def __init__(self, server: ServerConfig, storage: Storage | None = None) -> None:
        self.server = server
        self.storage = storage if storage is not None else open_storage(server)
        self.cloud = not self.storage.features.local
        self._base = f"{server.name}/wals/" if self.cloud else ""
        self._listing: list[tuple[str, ObjectInfo, str | None]] | None = None

    def __repr__(self) -> str:
        return f"WalArchive({self.server.name!r}, {self.storage.url()!r})"

    # ---------------------------------------------------------------- naming

    def key(self, name: str, compression: str | None = None) -> str:
        """The key of ``name`` stored with ``compression`` (the extension counts only in
        object storage)."""
        directory = hash_dir(name)
        ext = EXTENSIONS[compression] if self.cloud else ""
        return f"{self._base}{directory + '/' if directory else ''}{name}{ext}"

    def url(self, name: str = "", compression: str | None = None) -> str:
        """Where ``name`` lives (or the archive itself), for messages."""
        return self.storage.url(self.key(name, compression)) if name else self.storage.url()

    def parse_key(self, key: str) -> tuple[str, str | None] | None:
        """(WAL name, codec from the extension) for a key of this archive, or None for a key
        that is no archived WAL file where it should be (foreign files, wrong directory)."""
        if not key.startswith(self._base):
            return None
        rest = key[len(self._base) :]
        directory, _, base = rest.rpartition("/")
        name, compression = base, None
        if self.cloud:
            stem, dot, ext = base.rpartition(".")
            if dot and f".{ext}" in BY_EXTENSION and classify(stem) is not None:
                name, compression = stem, BY_EXTENSION[f".{ext}"]
        kind = classify(name)
        if kind is None or hash_dir(name) != directory:
            return None
        return name, compression

    # ---------------------------------------------------------------- reading

    def open(self, name: str) -> tuple[ArchivedFile, Reader] | None:
        """The archived copy of ``name`` and an open reader of it, or None when absent."""
        preferred = self.server.compression if self.cloud else None
        key = self.key(name, preferred)
        reader = self.storage.open(key)
        if reader is not None:
            return ArchivedFile(name, key, reader.info, preferred), reader
        if not self.cloud:
            return None
        for other in self._variants(name):
            if other.key != key:
                reader = self.storage.open(other.key)
                if reader is not None:
                    return ArchivedFile(name, other.key, reader.info, other.compression), reader
        return None

    def _variants(self, name: str) -> list[ArchivedFile]:
        """Every stored copy of ``name`` (object storage: one LIST of its exact prefix)."""
        found = []
        for info in self.storage.list(self.key(name)):
            parsed = self.parse_key(info.key)
            if parsed is not None and parsed[0] == name:
                found.append(ArchivedFile(name, info.key, info, parsed[1]))
        return found

    def find(self, name: str) -> ArchivedFile | None:
        """The archived copy of ``name`` without reading it, or None when absent."""
        preferred = self.server.compression if self.cloud else None
        key = self.key(name, preferred)
        info = self.storage.head(key)
        if info is not None:
            return ArchivedFile(name, key, info, preferred)
        if not self.cloud:
            return None
        variants = self._variants(name)
        return variants[0] if variants else None

    def exists(self, name: str) -> bool:
        """Whether ``name`` is archived (under any extension)."""
        return self.find(name) is not None

    # ---------------------------------------------------------------- listing

    def files(self, directory: str | None = None) -> Iterator[tuple[str, ObjectInfo, str | None]]:
        """(name, info, codec from the key) of every archived WAL file -- or of those in one
        hash ``directory`` -- in key order; keys that are not archived WAL files where they
        should be are skipped (see :meth:`strays`)."""
        start = f"{self._base}{directory}/" if directory else self._base
        for info in self.storage.list(start):
            parsed = self.parse_key(info.key)
            if parsed is not None:
                yield parsed[0], info, parsed[1]

    def probe(self) -> None:
        """Ask the store one cheap question (raises StorageError when it does not answer)."""
        for _ in self.storage.list(self._base):
            break

    def strays(self) -> Iterator[str]:
        """Keys under the archive that are no archived WAL file (for rebuild-xlogdb)."""
        for info in self.storage.list(self._base):
            if self.parse_key(info.key) is None:
                yield info.key

    def _cloud_listing(self) -> list[tuple[str, ObjectInfo, str | None]]:
        """Every archived file of a bucket, listed once per WalArchive (LIST requests cost:
        a check or a status reads the listing once, not once per question)."""
        if self._listing is None:
            self._listing = list(self.files())
        return self._listing

    def history_names(self) -> list[str]:
        """The archived ``.history`` file names, sorted."""
        if self.cloud:
            names = {n for n, _, _ in self._cloud_listing() if classify(n) is WalKind.HISTORY}
            return sorted(names)
        import os

        try:
            entries = os.listdir(self.server.wals_directory)
        except FileNotFoundError:
            return []
        return sorted(e for e in entries if classify(e) is WalKind.HISTORY)

    def hash_dirs(self) -> list[str]:
        """The ``<timeline><log>`` directories that hold files, oldest first."""
        if not self.cloud:
            import os

            try:
                entries = os.listdir(self.server.wals_directory)
            except FileNotFoundError:
                return []
            root = self.server.wals_directory
            return sorted(
                e
                for e in entries
                if len(e) == 16 and _is_hex(e) and os.path.isdir(os.path.join(root, e))
            )
        dirs: set[str] = set()
        for name, _, _ in self._cloud_listing():
            if classify(name) is not WalKind.HISTORY:
                dirs.add(name[:16])
        return sorted(dirs)

    def names_below(self, boundary: str) -> list[str]:
        """Archived names (not history files) whose segment sorts before the segment name
        ``boundary``, oldest first: what a purge up to ``boundary`` removes."""
        found: list[str] = []
        if self.cloud:
            for name, _, _ in self.files():
                if classify(name) is WalKind.HISTORY:
                    continue
                if name[:16] > boundary[:16]:
                    break  # keys come in name order: nothing older follows
                if name[:24] < boundary:
                    found.append(name)
            return sorted(set(found))
        for directory in self.hash_dirs():
            if directory > boundary[:16]:
                break
            found += [n for n in self.names_in(directory) if n[:24] < boundary]
        return found

    def names_in(self, directory: str) -> list[str]:
        """The archived file names of one hash directory, sorted."""
        if self.cloud and self._listing is not None:
            return sorted({n for n, _, _ in self._listing if hash_dir(n) == directory})
        return sorted({name for name, _, _ in self.files(directory)})

    def newest_segment(self, timeline: int | None = None) -> str | None:
        """The highest complete segment name archived (optionally on one timeline).

        A local archive lists only its newest directories, so the cost does not grow with
        the archive.  Object storage asks the local catalogue instead (its latest lines:
        :func:`walvault.archive.catalogue.newest_catalogued_segment`): finding the newest
        key of a bucket would mean listing all of it.
        """
        if self.cloud:
            from walvault.archive.catalogue import newest_catalogued_segment

            return newest_catalogued_segment(self.server, timeline)
        for directory in reversed(self.hash_dirs()):
            if timeline is not None and int(directory[:8], 16) != timeline:
                continue
            segments = [n for n in self.names_in(directory) if classify(n) is WalKind.SEGMENT]
            if segments:
                return segments[-1]
        return None

    def segments_newest_first(self) -> Iterator[str]:
        """Archived segment names, newest first (object storage: the catalogue's latest
        lines, as :meth:`newest_segment`)."""
        if self.cloud:
            from walvault.archive.catalogue import recent_catalogued_segments

            yield from recent_catalogued_segments(self.server)
            return
        for directory in reversed(self.hash_dirs()):
            names = [n for n in self.names_in(directory) if classify(n) is WalKind.SEGMENT]
            yield from reversed(names)

    def read_head(self, name: str, size: int) -> bytes:
        """The first ``size`` bytes of the decoded content of archived ``name`` (fewer if it is
        shorter); FileNotFoundError when it is not archived."""
        from walvault.archive.ingest import archived_pieces

        twin = self.find(name)
        if twin is None:
            raise FileNotFoundError(f"{name} is not archived in {self.url()}")
        pieces = archived_pieces(self, twin)
        head = b""
        try:
            for piece in pieces:
                head += piece
                if len(head) >= size:
                    break
        finally:
            pieces.close()
        return head[:size]

    # ---------------------------------------------------------------- writing, deleting

    def batch(self) -> WriteBatch:
        """Writes committed together (see :meth:`walvault.storage.base.Storage.batch`)."""
        return self.storage.batch()

    def prepare(self, name: str) -> None:
        """Before writing ``name`` into a local archive: remove the temporary files dead
        writers left in its directory (the caller holds the archive-wal lock)."""
        if self.cloud:
            return
        import os

        from walvault.fs import cleanup_stale_temps

        directory = os.path.dirname(os.path.join(self.server.wals_directory, self.key(name)))
        if os.path.isdir(directory):
            cleanup_stale_temps(directory, older_than=0)

    def delete(self, names: Iterable[str]) -> list[str]:
        """Remove every stored copy of ``names``; return the keys removed."""
        keys: list[str] = []
        for name in names:
            if self.cloud:
                keys += [copy.key for copy in self._variants(name)]
            else:
                keys.append(self.key(name))
        self.storage.delete(keys)
        return keys


def _is_hex(text: str) -> bool:
    return all(c in "0123456789ABCDEF" for c in text)
