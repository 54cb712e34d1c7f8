"""archive-wal: copy finished WAL from streaming/ and incoming/ into the archive, durably.

One pass per staging directory (streaming first, as Barman does), each over one batch:

1. inspect each file (header, system identifier, archived twin); files that cannot be
   archived go to errors/ at once; the others are stored by a thread pool -- compressed
   while the digest of their plain content is computed, or (already compressed by the
   client, or no compression) decoded whole for the digest and stored as they are; with
   ``encryption = gpg`` the stored bytes go through gpg on their way (the key is checked
   once before the first file: :mod:`walvault.archive.encryption`);
2. commit the store's batch: a local archive fsyncs each file as it is written and links
   them all into ``wals/`` now, each directory fsynced once; object storage has already
   confirmed every upload (create-only PUTs with checksums);
3. append the catalogue lines (one fsync, under the xlogdb lock only now);
4. remove the sources.

The source is never removed before its copy is durable.  A crash anywhere leaves the source
in place: the next run finds the archived twin, compares the decoded contents (identical:
the catalogue line is added if missing and the source dropped; different: errors/).  Older
versions wrote a journal (:mod:`walvault.archive.journal`); one left behind is still
replayed first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from walvault.archive import errors_dir, ingest, journal
from walvault.archive.batch import INCOMING, STREAMING, Batch, next_batch
from walvault.archive.catalogue import CatalogueEntry, RebuildResult, append_entries, rebuild
from walvault.archive.encryption import GPG, EncryptionError, Gpg
from walvault.archive.gpgkeys import resolve_recipient
from walvault.archive.walstore import ArchivedFile, WalArchive
from walvault.compression import CompressionError, resolve_level
from walvault.config import ServerConfig
from walvault.errors import LockBusy, WalvaultError
from walvault.fs import SyncBatch, cleanup_stale_temps, remove_files
from walvault.locks import ARCHIVE_WAL, ServerLock
from walvault.storage.base import ObjectInfo, StorageError, WriteBatch
from walvault.wal.header import WalHeader

log = logging.getLogger("walvault.archive")
Echo = Callable[[str], None]


@dataclass
class ArchiveResult:
    """What one archive-wal run did for one server."""

    server: str
    busy: bool = False
    archived: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # identical to their archived twin
    errors: dict[str, list[str]] = field(default_factory=dict)  # errors/ kind -> names
    failed: list[tuple[str, str]] = field(default_factory=list)  # left in place, retried
    recovered: list[str] = field(default_factory=list)  # catalogue lines from the journal

    @property
    def exit_code(self) -> int:
        """1 when something was left behind or belongs to no valid WAL stream of ours."""
        serious = self.errors.get(errors_dir.FOREIGN) or self.errors.get(errors_dir.INVALID)
        return 1 if self.failed or serious else 0


#: Uploads in flight per core for an archive in object storage: each thread spends most of
#: its time waiting for the store (one PUT ~20 ms on loopback, more over a network).
UPLOADS_PER_CORE = 4


def _workers(cloud: bool) -> int:
    """One compressing thread per usable core (local), a few uploads per core (object
    storage).

    Compression is CPU-bound and releases the GIL; reading and fsyncing a segment take a
    few ms beside 10-20 ms of compression (zstd).  Measured on 2 cores with
    zstd: 3 threads were no faster than 2, and 4 were about 10 % slower and used more
    memory (each thread holds a compressor and a read buffer).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores) * (UPLOADS_PER_CORE if cloud else 1)


@dataclass
class _Item:
    staged: ingest.Staged
    key: str
    action: str  # "store" or "drop" (an identical copy is already archived)
    future: Future[ObjectInfo] | None = None
    entry: CatalogueEntry | None = None


class _Pass:
    """One batch from one staging directory."""

    def __init__(
        self,
        server: ServerConfig,
        archive: WalArchive,
        batch: Batch,
        result: ArchiveResult,
        echo: Echo,
        warn: Echo,
        encrypt: ingest.Encrypt | None = None,
    ) -> None:
        self.server = server
        self.encrypt = encrypt
        self.archive = archive
        self.batch = batch
        self.result = result
        self.echo = echo
        self.warn = warn
        self.algorithm = server.compression
        self.level = resolve_level(server.compression, server.compression_level)
        self.errors = SyncBatch()  # moves into errors/, synced once
        self.store: WriteBatch = archive.batch()
        self.pool: ThreadPoolExecutor | None = None
        self.prepared: set[str] = set()
        self.items: list[_Item] = []
        self.unknown: list[str] = []

    @staticmethod
    def header_for(server: ServerConfig, batch: Batch) -> str:
        """Barman's header line, with the batch size when the run leaves files waiting."""
        text = f"Processing xlog segments from {batch.label} for {server.name}"
        if batch.size < batch.waiting:
            text += f" (batch size: {batch.size})"
        return text

    def run(self, identity: _Identity) -> None:
        self.echo(self.header_for(self.server, self.batch))
        try:
            for name in self.batch.files:
                self._plan(name, identity)
            self._move_unknown()
            self._collect()
        except BaseException:  # nothing is live yet: drop what was written
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
            self.store.discard()
            self.errors.flush()
            raise
        if self.pool is not None:
            self.pool.shutdown()
        self._commit()

    def _to_errors(self, path: str, kind: str, message: str) -> None:
        errors_dir.move_to_errors(self.server, path, kind, batch=self.errors)
        self.result.errors.setdefault(kind, []).append(os.path.basename(path))
        self.echo(message)
        log.warning("%s", message.strip())

    def _plan(self, name: str, identity: _Identity) -> None:
        found = ingest.inspect_staged(
            self.batch.directory,
            name,
            system_identifier=identity.system_identifier,
            segment_size=identity.segment_size,
        )
        if found.verdict is ingest.Verdict.VANISHED:
            return
        self.echo(f"\t{name}")
        path = os.path.join(self.batch.directory, name)
        srv = self.server.name
        if found.verdict is ingest.Verdict.UNKNOWN:  # e.g. a directory with a WAL name
            errors_dir.move_to_errors(self.server, path, errors_dir.UNKNOWN, batch=self.errors)
            self.unknown.append(name)
            return
        if found.verdict is ingest.Verdict.FOREIGN:
            self._to_errors(
                path,
                errors_dir.FOREIGN,
                f"\tError: {name} belongs to another PostgreSQL cluster than server {srv} "
                f"({found.problem}). File moved to errors directory.",
            )
            return
        if found.verdict is ingest.Verdict.INVALID:
            self._to_errors(
                path,
                errors_dir.INVALID,
                f"\tError: {name} is not a valid WAL file for its name ({found.problem}). "
                "File moved to errors directory.",
            )
            return
        staged = found.staged
        assert staged is not None
        if found.header is not None:
            identity.record(self.server, found.header)
        compress = self.algorithm is not None and staged.compression is None
        key = self.archive.key(name, self.algorithm if compress else staged.compression)
        directory = key.rpartition("/")[0]
        if directory not in self.prepared:  # also for a twin: a killed run's temp lies beside it
            self.archive.prepare(name)
            self.prepared.add(directory)
        twin = self.archive.find(name)  # a store that does not answer stops the pass
        if twin is not None:
            self._twin(staged, twin)
            return
        if self.pool is None:
            workers = _workers(self.archive.cloud)
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="archive-wal")
        if compress:
            assert self.algorithm is not None
            future = self.pool.submit(
                ingest.store_compressed,
                staged,
                key,
                self.algorithm,
                self.level,
                self.store,
                self.encrypt,
            )
        else:
            future = self.pool.submit(ingest.store_as_is, staged, key, self.store, self.encrypt)
        self.items.append(_Item(staged, key, "store", future))

    def _twin(self, staged: ingest.Staged, twin: ArchivedFile) -> None:
        try:
            identical = ingest.same_as_archived(self.archive, twin, staged)
            if identical:
                _, codec, encryption = ingest.stored_format(self.archive, twin)
        except (ingest.UnreadableArchive, OSError) as exc:
            self._fail(staged.name, f"cannot compare it with its archived copy: {exc}")
            return
        if identical:
            compression = twin.compression if self.archive.cloud else codec
            entry = CatalogueEntry(
                staged.name, twin.info.size, staged.mtime, compression, encryption
            )
            self.items.append(_Item(staged, twin.key, "drop", entry=entry))
            return
        self._to_errors(
            staged.path,
            errors_dir.DUPLICATE,
            f"\tError: {staged.name} is already present in server {self.server.name}. "
            "File moved to errors directory.",
        )

    def _fail(self, name: str, why: str) -> None:
        self.result.failed.append((name, why))
        self.warn(
            f"cannot archive {name} from {self.batch.directory}: {why} "
            "(it stays there and will be retried)"
        )

    def _move_unknown(self) -> None:
        for name in self.batch.unknown:
            path = os.path.join(self.batch.directory, name)
            try:
                errors_dir.move_to_errors(self.server, path, errors_dir.UNKNOWN, batch=self.errors)
            except FileNotFoundError:
                continue
            self.unknown.append(name)
        if not self.unknown:
            return
        self.result.errors.setdefault(errors_dir.UNKNOWN, []).extend(self.unknown)
        self.echo(
            "Some unknown objects have been found while processing xlog segments for "
            f"{self.server.name}. Objects moved to errors directory:"
        )
        for name in self.unknown:
            self.echo(f"\t{name}")
        log.warning("moved to errors/ as unknown: %s", ", ".join(self.unknown))

    def _collect(self) -> None:
        kept: list[_Item] = []
        for item in self.items:
            if item.future is not None:
                try:
                    info = item.future.result()
                except FileNotFoundError:
                    continue  # removed by someone else meanwhile
                except CompressionError as exc:  # a client's compressed file that is corrupt
                    self._fail(item.staged.name, str(exc))
                    continue
                except Exception as exc:  # one bad file must not stop the batch
                    self._fail(item.staged.name, str(exc))
                    continue
                compression = self.algorithm if item.staged.compression is None else None
                item.entry = CatalogueEntry(
                    item.staged.name,
                    info.size,
                    item.staged.mtime,
                    compression or item.staged.compression,
                    GPG if self.encrypt is not None else None,
                )
            kept.append(item)
        self.items = kept

    def _commit(self) -> None:
        self.errors.flush()
        failures = self.store.commit()
        stored: list[CatalogueEntry] = []
        dropped: list[CatalogueEntry] = []
        done: list[_Item] = []
        for item in self.items:
            if item.key in failures and item.action == "store":
                self._fail(item.staged.name, str(failures[item.key]))
                continue
            assert item.entry is not None
            (stored if item.action == "store" else dropped).append(item.entry)
            done.append(item)
        append_entries(self.server, stored)
        append_entries(self.server, dropped, skip_existing=True)  # after a crash: maybe not
        remove_files(item.staged.path for item in done)
        self.result.dropped.extend(e.name for e in dropped)
        self.result.archived.extend(e.name for e in stored)


class _Identity:
    """The server's system identifier (``identity.json``), recorded on first sight, and the
    archive's segment size."""

    def __init__(self, server: ServerConfig) -> None:
        from walvault.identity import stored_system_identifier

        self.system_identifier = stored_system_identifier(server)
        self.segment_size = ingest.archived_segment_size(server)

    def record(self, server: ServerConfig, header: WalHeader) -> None:
        self.segment_size = self.segment_size or header.segment_size
        if self.system_identifier is None and ingest.record_identity(server, header):
            self.system_identifier = header.system_identifier
            log.info("recorded system identifier %s", header.system_identifier)


def archive_wal(
    server: ServerConfig, echo: Echo, *, verbose: bool = True, warn: Echo | None = None
) -> ArchiveResult:
    """Archive the next batch from streaming/ and from incoming/ of ``server``.

    ``echo`` gets Barman's output lines, ``warn`` (default: ``echo``) the problems that
    leave a file in place.  With ``verbose=False`` nothing is printed when there is nothing
    to do.  When another archive-wal holds the lock, says so and returns with ``busy``.
    Raises :class:`WalvaultError` when a batch cannot be committed (nothing is lost: the
    next run finishes it).
    """
    encrypt = encryption_for(server)
    result = ArchiveResult(server.name)
    os.makedirs(server.lock_directory, exist_ok=True)
    lock = ServerLock(server.lock_directory, server.name, ARCHIVE_WAL, wait=False)
    try:
        lock.acquire()
    except LockBusy:
        echo(
            f"Another archive-wal process is already running on server {server.name}. "
            "Skipping to the next server"
        )
        result.busy = True
        return result
    try:
        for directory in (server.backup_directory, server.xlogdb_directory):
            if os.path.isdir(directory):  # a journal or catalogue a killed run half wrote
                cleanup_stale_temps(directory, older_than=0)
        result.recovered = [entry.name for entry in journal.recover(server)]
        identity = _Identity(server)
        archive = WalArchive(server)
        sources = [STREAMING] if server.streaming_archiver else []
        sources += [INCOMING] if server.archiver else []
        for source in sources:
            batch = next_batch(server, source)
            if batch.size == 0:
                if verbose:
                    echo(_Pass.header_for(server, batch))
                    echo("\tno file found")
                continue
            try:
                _Pass(server, archive, batch, result, echo, warn or echo, encrypt).run(identity)
            except (OSError, StorageError) as exc:
                raise WalvaultError(
                    f"archive-wal of server {server.name} stopped: {exc}; nothing was removed, "
                    "the next run will finish the batch"
                ) from exc
    finally:
        lock.release()
    return result


def encryption_for(
    server: ServerConfig, nothing: str = "nothing was archived"
) -> ingest.Encrypt | None:
    """gpg and the public key of ``encryption = gpg``, checked before any file is touched
    (EncryptionError, exit 1, saying ``nothing``: nothing is stored unencrypted)."""
    if server.encryption != GPG:
        return None
    gpg = Gpg.for_server(server)
    assert server.encryption_key_id is not None  # the loader disables a server without it
    try:
        recipient = resolve_recipient(gpg, server.encryption_key_id)
    except EncryptionError as exc:
        raise EncryptionError(f"{exc.message}; {nothing}") from None
    return ingest.Encrypt(gpg, recipient)


def rebuild_xlogdb(server: ServerConfig, *, wait: float = 300.0) -> RebuildResult:
    """``rebuild-xlogdb``: rewrite the catalogue from ``wals/``.

    Holds the archive-wal lock too (waiting up to ``wait`` seconds), so that a batch being
    committed cannot get its lines both from the rebuild and from its own append (the race
    of Barman #328).
    """
    os.makedirs(server.lock_directory, exist_ok=True)
    lock = ServerLock(server.lock_directory, server.name, ARCHIVE_WAL, wait=True, timeout=wait)
    try:
        lock.acquire()
    except LockBusy:
        raise WalvaultError(
            f"archive-wal is still running on server {server.name} after {wait:.0f}s: "
            "try rebuild-xlogdb again when it has finished"
        ) from None
    try:
        journal.recover(server)
        return rebuild(server)
    finally:
        lock.release()
