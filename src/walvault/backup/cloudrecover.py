"""``recover`` from object storage: a backup's tars downloaded, decompressed, unpacked in a stream.

The copy step of :mod:`walvault.backup.recover` when ``basebackups_directory`` is an
``s3://`` URL (walvault's backups and barman-cloud-backup's alike).  Nothing of the backup
is staged on local disk: each tar (``data.tar[.ext]`` into the destination, ``<oid>.tar``
into its tablespace's location) flows

    ranged GETs, ``jobs`` parts of 16 MiB in flight (:class:`RangedReader`)
        | decompression (the codec its extension names), in a thread of its own
        | :func:`walvault.backup.tarstream.unpack` (every member checked before it is written)

Memory stays near ``jobs`` x part size.  A small object (below two parts), and any object
with ``jobs`` = 1, is one streaming GET, checked against the digest recorded at upload
when there is one.  (Ranged GETs are how S3 itself is read fast; a test server may make
each range cost as much as the whole object -- moto does -- which ``--jobs 1`` avoids.)
Before anything is written, the backup's objects are listed and checked: a ``data`` tar,
a tar for every tablespace ``backup.info`` names and none for another, readable
extensions, and every target directory new or empty.  An unpack that fails (a refused
member, a corrupt stream, the store) removes what it wrote and raises one line.
"""

from __future__ import annotations

import collections
import os
import queue
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

from walvault.backup.cloudstore import BackupFile, CloudBackups
from walvault.backup.info import BackupInfo, parse_tablespaces
from walvault.backup.progress import Progress
from walvault.backup.tarstream import unpack
from walvault.compression import CompressionError, open_decompressed
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.storage.base import Storage

Echo = Callable[[str], None]
PART_SIZE = 16 << 20
_PIECE = 1 << 20
DEFAULT_JOBS = 4


class RangedReader:
    """An object read front to back through ranged GETs, ``jobs`` of them in flight."""

    def __init__(
        self,
        storage: Storage,
        key: str,
        size: int,
        jobs: int,
        progress: Progress,
        part_size: int = PART_SIZE,
    ) -> None:
        self._storage, self._key, self._size = storage, key, size
        self._progress, self._part = progress, part_size
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="recover-get")
        self._jobs = max(1, jobs)
        self._next = 0
        self._queue: collections.deque[Future[bytes]] = collections.deque()
        self._buffer = memoryview(b"")
        self._received = 0
        for _ in range(self._jobs):
            self._submit()

    def _submit(self) -> None:
        if self._next >= self._size:
            return
        start, end = self._next, min(self._size, self._next + self._part)
        self._next = end
        read_range = getattr(self._storage, "read_range")  # noqa: B009 - S3 only
        self._queue.append(self._pool.submit(read_range, self._key, start, end))

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            if not self._queue:
                if self._received != self._size:
                    raise WalvaultError(
                        f"{self._storage.url(self._key)}: got {self._received} bytes of "
                        f"{self._size}: truncated"
                    )
                return b""
            piece = self._queue.popleft().result()
            self._submit()
            self._received += len(piece)
            self._progress.add(len(piece))
            self._buffer = memoryview(piece)
        take = len(self._buffer) if size is None or size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:take])
        self._buffer = self._buffer[take:]
        return data

    def close(self) -> None:
        for future in self._queue:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Counted:
    """A store reader that reports its bytes to the progress display."""

    def __init__(self, reader: object, progress: Progress) -> None:
        self._reader, self._progress = reader, progress

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._reader.read(size)  # type: ignore[attr-defined]
        self._progress.add(len(data))
        return data

    def close(self) -> None:
        self._reader.close()  # type: ignore[attr-defined]


def check_empty(path: str) -> None:
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise WalvaultError(
            f"'{path}' exists and is not an empty directory: recover only into new or empty "
            "directories"
        )


def plan(
    server: ServerConfig,
    backup: BackupInfo,
    destination: str,
    locations: dict[str, str],
) -> tuple[list[BackupFile], dict[str, str]]:
    """The backup's tars and ``{oid: location}`` of its tablespaces, checked (nothing written)."""
    cloud = CloudBackups(server)
    files = cloud.files(backup.backup_id)
    spaces = {str(t.oid): t for t in parse_tablespaces(backup.tablespaces)}
    with_tar = {f.name for f in files if f.name != "data"}
    unknown = sorted(with_tar - set(spaces))
    if unknown:
        raise WalvaultError(
            f"backup {backup.backup_id} has {unknown[0]}.tar but no tablespace with oid "
            f"{unknown[0]} in its backup.info"
        )
    missing = sorted(set(spaces) - with_tar)
    if missing:
        oid = missing[0]
        raise WalvaultError(
            f"backup {backup.backup_id} has no tar for tablespace '{spaces[oid].name}' "
            f"(oid {oid}) in {cloud.url(backup.backup_id)}"
        )
    links = {oid: locations.get(oid) or f"{destination}_tablespaces/{oid}" for oid in spaces}
    for target in links.values():
        check_empty(target)
    return files, links


def unpack_backup(
    server: ServerConfig,
    backup: BackupInfo,
    destination: str,
    locations: dict[str, str],
    echo: Echo,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> None:
    """Download and unpack ``backup`` into ``destination`` (see the module docstring)."""
    files, links = plan(server, backup, destination, locations)
    storage = CloudBackups(server).storage
    unpack_files(server, storage, files, destination, links, echo, jobs=jobs, progress=progress)


def unpack_files(
    server: ServerConfig,
    storage: Storage,
    files: list[BackupFile],
    destination: str,
    links: dict[str, str],
    echo: Echo,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> None:
    """Unpack the tars ``files`` of ``storage`` (checked: :func:`plan`) into ``destination``
    and the tablespaces' ``links``; on failure remove what was written.  An encrypted tar
    (``.gpg``) is decrypted by gpg on the way, with ``server``'s passphrase: no plaintext
    of it ever touches the disk."""
    progress = progress or Progress("Recover", None, enabled=False)
    progress.set_total(sum(f.size for f in files))
    created = [destination, *links.values()]
    existed = {path for path in created if os.path.exists(path)}
    try:
        os.makedirs(destination, mode=0o700, exist_ok=True)
        for item in files:
            target = destination if item.name == "data" else links[item.name]
            os.makedirs(target, mode=0o700, exist_ok=True)
            _unpack_one(server, storage, item, target, links, jobs, progress)
            if item.name != "data":
                echo(f"Tablespace {item.name} restored to {target}")
        _link_tablespaces(destination, links)
    except BaseException:
        progress.close()
        for path in created:
            _remove_contents(path, keep=path in existed)
        raise
    progress.close()


def tar_source(
    server: ServerConfig, storage: Storage, item: BackupFile, jobs: int, progress: Progress
) -> RangedReader | _Counted:
    """The stored bytes of ``item`` as a stream (decrypted when it is encrypted)."""
    where = storage.url(item.key)
    ranged = jobs > 1 and item.size >= 2 * PART_SIZE and hasattr(storage, "read_range")
    if ranged and not item.encrypted:
        return RangedReader(storage, item.key, item.size, jobs, progress)
    reader = storage.open(item.key)
    if reader is None:
        raise WalvaultError(f"{where} disappeared while recovering")
    if not item.encrypted:
        return _Counted(reader, progress)
    from walvault.archive.encryption import DecryptingReader, Gpg

    return _Counted(DecryptingReader(Gpg.for_server(server), reader, b"", where), progress)


def _unpack_one(
    server: ServerConfig,
    storage: Storage,
    item: BackupFile,
    target: str,
    links: dict[str, str],
    jobs: int,
    progress: Progress,
) -> None:
    where = storage.url(item.key)
    source = tar_source(server, storage, item, jobs, progress)
    decoded = _Decoded(open_decompressed(item.compression, source))  # type: ignore[arg-type]
    try:
        unpack(
            decoded,  # type: ignore[arg-type]
            target,
            what=where,
            tablespace_links=links if item.name == "data" else None,
        )
    except CompressionError as exc:
        raise WalvaultError(f"{where}: {exc.message}") from None
    finally:
        decoded.close()
        source.close()


class _Decoded:
    """The decompressed stream, produced by a thread of its own: decompression (which
    releases the GIL) overlaps with unpacking and writing, at most :data:`AHEAD` pieces of
    1 MiB ahead.  An error of the producer is raised by the ``read`` that reaches it."""

    AHEAD = 8

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(self.AHEAD)
        self._stop = threading.Event()
        self._buffer = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name="recover-decode", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                piece = self._stream.read(_PIECE)
                self._put(piece)
                if not piece:
                    return
        except BaseException as exc:  # handed to the reading side
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._ended:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if not item:
                self._ended = True
            self._buffer = memoryview(item)
        take = len(self._buffer) if size is None or size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:take])
        self._buffer = self._buffer[take:]
        return data

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _link_tablespaces(destination: str, links: dict[str, str]) -> None:
    """``pg_tblspc/<oid>`` -> the tablespace's location, for every tablespace: pg_basebackup's
    tar carries the links (re-pointed while unpacking), barman-cloud's does not."""
    directory = os.path.join(destination, "pg_tblspc")
    for oid, location in links.items():
        link = os.path.join(directory, oid)
        if os.path.lexists(link):
            if not os.path.islink(link) or os.readlink(link) != location:
                raise WalvaultError(f"{link} is not a link to {location}: refused")
            continue
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.symlink(location, link)


def _remove_contents(path: str, *, keep: bool) -> None:
    """Undo a failed unpack: empty ``path`` (it was new or empty) or remove it."""
    if not os.path.lexists(path):
        return
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
        return
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            os.unlink(full)
