"""archive-wal: move finished WAL from streaming/ and incoming/ into the archive, durably.

One pass per staging directory (streaming first, as Barman does), each over one batch:

1. inspect each file (header, system identifier, archived twin) and start its compression
   in a thread pool; files that cannot be archived go to errors/ at once;
2. journal the batch's catalogue lines (:mod:`walvault.archive.journal`);
3. fsync the written files, rename them into ``wals/``, fsync each directory once; files
   that need no rewriting are fsynced and renamed straight from the staging directory;
4. append the catalogue lines (one fsync, under the xlogdb lock only now);
5. remove the sources, then the journal.

A crash anywhere leaves either the source (retried; an identical archived twin is then
dropped) or the archived file plus a journal line (recovered at the next run's start).
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
from walvault.archive.compression import resolve_level
from walvault.archive.layout import archived_path
from walvault.config import ServerConfig
from walvault.errors import LockBusy, WalvaultError
from walvault.fs import SyncBatch, cleanup_stale_temps, durable_move, ensure_dir, remove_files
from walvault.locks import ARCHIVE_WAL, ServerLock
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


def _workers() -> int:
    """One compressing thread per usable core.

    Compression is CPU-bound and releases the GIL; reading and fsyncing a segment take a
    few ms beside 10-20 ms of compression (zstd).  Measured on 2 cores with
    zstd: 3 threads were no faster than 2, and 4 were about 10 % slower and used more
    memory (each thread holds a compressor and a read buffer).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


@dataclass
class _Item:
    staged: ingest.Staged
    dst: str
    action: str  # "move", "write" or "drop"
    future: Future[int] | None = None
    entry: CatalogueEntry | None = None


class _Pass:
    """One batch from one staging directory."""

    def __init__(
        self, server: ServerConfig, batch: Batch, result: ArchiveResult, echo: Echo, warn: Echo
    ) -> None:
        self.server = server
        self.batch = batch
        self.result = result
        self.echo = echo
        self.warn = warn
        self.algorithm = server.compression
        self.level = resolve_level(server.compression, server.compression_level)
        self.sync = SyncBatch()
        self.pool: ThreadPoolExecutor | None = None
        self.prepared: set[str] = set()
        self.items: list[_Item] = []
        self.unknown: list[str] = []
        wals = ensure_dir(server.wals_directory)
        self.same_fs = os.stat(batch.directory).st_dev == os.stat(wals).st_dev

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
            entries = [item.entry for item in self.items if item.entry is not None]
            if entries:
                journal.write_journal(self.server, entries)
        except BaseException:  # nothing is live yet: drop the temporary files
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
            self.sync.discard()
            raise
        if self.pool is not None:
            self.pool.shutdown()
        self._commit(entries)

    def _prepare(self, dst: str) -> None:
        directory = os.path.dirname(dst)
        if directory not in self.prepared:
            ensure_dir(directory)
            cleanup_stale_temps(directory, older_than=0)  # we hold the archive-wal lock
            self.prepared.add(directory)

    def _to_errors(self, path: str, kind: str, message: str) -> None:
        errors_dir.move_to_errors(self.server, path, kind, batch=self.sync)
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
            errors_dir.move_to_errors(self.server, path, errors_dir.UNKNOWN, batch=self.sync)
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
        dst = archived_path(self.server, name)
        if os.path.lexists(dst):
            self._twin(staged, dst)
            return
        self._prepare(dst)
        if self.algorithm is not None and staged.compression is None:
            self._submit(_Item(staged, dst, "write"), self.algorithm)
        elif self.same_fs:
            self.items.append(_Item(staged, dst, "move"))
        else:
            self._submit(_Item(staged, dst, "write"), None)

    def _submit(self, item: _Item, algorithm: str | None) -> None:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(_workers(), thread_name_prefix="archive-wal")
        item.future = self.pool.submit(
            ingest.write_archived, item.staged, item.dst, algorithm, self.level, self.sync
        )
        self.items.append(item)

    def _twin(self, staged: ingest.Staged, dst: str) -> None:
        try:
            identical = ingest.same_content(dst, staged)
        except (ingest.UnreadableArchive, OSError) as exc:
            self._fail(staged.name, f"cannot compare it with its archived copy: {exc}")
            return
        if identical:
            self._prepare(dst)
            self.sync.add_file(dst)  # the twin may be the one a killed run just renamed
            self.sync.add_dir(os.path.dirname(dst))
            self.items.append(_Item(staged, dst, "drop"))
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
                errors_dir.move_to_errors(self.server, path, errors_dir.UNKNOWN, batch=self.sync)
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
                    size = item.future.result()
                except FileNotFoundError:
                    continue  # removed by someone else meanwhile
                except Exception as exc:  # one bad file must not stop the batch
                    self._fail(item.staged.name, str(exc))
                    continue
                item.entry = CatalogueEntry(
                    item.staged.name, size, item.staged.mtime, self.algorithm
                )
            elif item.action == "move":
                staged = item.staged
                item.entry = CatalogueEntry(
                    staged.name, staged.size, staged.mtime, staged.compression
                )
            kept.append(item)
        self.items = kept

    def _commit(self, entries: list[CatalogueEntry]) -> None:
        self.sync.flush()
        moves = SyncBatch()
        done: set[str] = set()
        for item in self.items:
            if item.action != "move":
                continue
            try:
                durable_move(item.staged.path, item.dst, batch=moves)
            except OSError as exc:
                self._fail(item.staged.name, f"cannot move it into the archive: {exc}")
                continue
            done.add(item.staged.name)
        moves.flush()
        done.update(i.staged.name for i in self.items if i.action == "write")
        written = [e for e in entries if e.name in done]
        append_entries(self.server, written)
        remove_files(item.staged.path for item in self.items if item.action != "move")
        if entries:
            journal.clear_journal(self.server)
        for item in self.items:
            if item.action == "drop":
                self.result.dropped.append(item.staged.name)
        self.result.archived.extend(e.name for e in written)


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
    if server.encryption != "none":
        raise WalvaultError(
            f"server {server.name}: encryption = {server.encryption} is not supported by "
            "walvault; refusing to archive WAL unencrypted"
        )
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
                _Pass(server, batch, result, echo, warn or echo).run(identity)
            except OSError as exc:
                raise WalvaultError(
                    f"archive-wal of server {server.name} stopped: {exc}; "
                    "the next run will finish the batch"
                ) from exc
    finally:
        lock.release()
    return result


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
