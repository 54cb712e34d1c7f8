"""``backup`` into object storage: pg_basebackup's tar stream, compressed, straight into the bucket.

The copy step of :mod:`walvault.backup.basebackup` when ``basebackups_directory`` is an
``s3://`` URL.  Nothing of the backup is written to local disk:

    pg_basebackup --format=tar --pgdata=- --wal-method=none --progress -v
        | TarWatcher (reads backup_label, backup_manifest, pg_control on the way)
        | compressor thread (backup_compression, else compression)   -- os.pipe() --
        | S3Storage.put: a multipart upload, 16 MiB parts, 4 in flight

Memory is bounded by the store's multipart buffer (the first ``multipart_threshold`` =
64 MiB are gathered to decide between one PUT and a multipart upload, then part size x
concurrency) plus a pipe and one compressor: a 100 GiB backup needs no more than a 1 GiB
one.  Back-pressure is the pipes': pg_basebackup blocks when the upload falls behind.

The upload is completed only when the whole stream is good: the reader the store reads
from checks, before it reports the end, that the compressor finished, that the tar ended
exactly at its end-of-archive blocks (:class:`~walvault.backup.tarstream.TarWatcher`), and
that pg_basebackup exited 0.  Otherwise it raises, obstore aborts the multipart upload, and
no ``data.tar`` appears.  ``backup.info`` is written only after that (by
:func:`walvault.backup.info.save`, WAITING_FOR_WALS), so a listing never shows a backup
whose tar is not whole.  A process killed meanwhile leaves a local STARTED record and an
incomplete upload, which cron aborts (:mod:`walvault.backup.cloudstore`).

pg_basebackup writes only one tablespace to its standard output: a cluster with
tablespaces goes through a bounded local spool instead (:mod:`walvault.backup.tarspool`),
with the same upload (:func:`upload_tar`) for each of its tars.

The same pipeline writes walvault's tar-format backups on local disk
(:mod:`walvault.backup.tarbackup`): the store is then a
:class:`~walvault.storage.posix.PosixStorage` on ``base/<id>/data/`` (temporary name, fsync,
rename, directory fsync) and the keys are Barman's ``base.tar[.ext][.gpg]`` names.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from walvault.archive.encryption import encrypting
from walvault.backup.cloudstore import CloudBackups, backup_compression
from walvault.backup.info import BackupInfo
from walvault.backup.pgbasebackup import PROGRESS_RE, BaseBackupCommand, BaseBackupRun
from walvault.backup.progress import Progress
from walvault.backup.tarstream import TarError, TarWatcher
from walvault.compression import compress_stream
from walvault.config import ServerConfig
from walvault.conninfo import mask_text
from walvault.errors import WalvaultError
from walvault.subprocesses import client_connection, die_with_parent
from walvault.wal.names import parse_lsn

if TYPE_CHECKING:
    from walvault.archive.ingest import Encrypt
    from walvault.storage.base import Storage

log = logging.getLogger("walvault.backup")
Echo = Callable[[str], None]
_END_RE = re.compile(r"write-ahead log end point: ([0-9A-Fa-f]+/[0-9A-Fa-f]+)")
_READ = 1 << 20
KEPT_LINES = 20


class CopyFailed(WalvaultError):
    """The stream to the bucket failed: the reason recorded in backup.info."""


def stream_command(
    server: ServerConfig, program_path: str, incremental: str | None = None
) -> BaseBackupCommand:
    """``pg_basebackup --dbname=... -v --progress --no-password --format=tar --pgdata=-
    --no-slot --wal-method=none [--checkpoint=fast] [--incremental=<parent's manifest>]``
    (the password in the environment)."""
    conninfo = server.streaming_conninfo
    assert conninfo, "a server without a streaming conninfo cannot be backed up"
    dsn, env, _ = client_connection(server, conninfo, server.streaming_backup_name)
    argv = [
        program_path,
        f"--dbname={dsn}",
        "-v",
        "--progress",
        "--no-password",
        "--format=tar",
        "--pgdata=-",
        "--no-slot",
        "--wal-method=none",
    ]
    if server.immediate_checkpoint:
        argv.append("--checkpoint=fast")
    if incremental is not None:
        argv.append(f"--incremental={incremental}")
    env["LC_MESSAGES"] = "C"  # its progress lines are parsed
    return BaseBackupCommand(tuple(argv), env)


class Stderr:
    """pg_basebackup's messages, read in a thread: masked, logged, the last ones kept."""

    def __init__(
        self, server: ServerConfig, pipe: IO[bytes], on_line: Echo, progress: Progress
    ) -> None:
        self.server = server
        self.lines: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
        self.end_lsn: int | None = None
        self._pipe, self._on_line, self._progress = pipe, on_line, progress
        self._thread = threading.Thread(target=self._run, name="pg_basebackup-stderr")
        self._thread.daemon = True
        self._thread.start()

    def _run(self) -> None:
        secrets = self.server.secrets()
        pending = b""
        while chunk := self._pipe.read1(65536):  # type: ignore[attr-defined]
            pending += chunk
            *complete, pending = re.split(rb"[\r\n]", pending)
            for raw in complete:
                self._line(mask_text(raw.decode("utf-8", "replace"), secrets))
        if pending:
            self._line(mask_text(pending.decode("utf-8", "replace"), secrets))

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        progress = PROGRESS_RE.search(line)
        if progress:  # "NNN/TTT kB (NN%), 0/1 tablespace": the total is pg's estimate
            self._progress.set_total(int(progress.group(2)) * 1024)
            return
        log.info("%s: %s", self.server.name, line)
        self.lines.append(line)
        self._on_line(line)
        match = _END_RE.search(line)
        if match:
            self.end_lsn = parse_lsn(match.group(1))

    def join(self) -> None:
        self._thread.join(timeout=30)


class _Watching:
    """pg_basebackup's stdout as the compressor's source: every byte seen by the watcher."""

    def __init__(self, pipe: IO[bytes], watcher: TarWatcher, progress: Progress) -> None:
        self._pipe, self._watcher, self._progress = pipe, watcher, progress

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        data = self._pipe.read(_READ if size is None or size < 0 else size)
        if data:
            self._watcher.feed(data)
            self._progress.add(len(data))
        return data


class _Checked:
    """The compressed stream as the store reads it; at its end, ``check()`` must pass."""

    def __init__(self, pipe: IO[bytes], check: Callable[[], None]) -> None:
        self._pipe, self._check = pipe, check
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._pipe.read(size)
        if not data:
            self._check()  # raises: the upload is aborted, never completed
        self.size += len(data)
        return data

    def close(self) -> None:
        self._pipe.close()


class TarTarget(NamedTuple):
    """Where a backup's tars go: a bucket in barman-cloud's layout (:func:`bucket_target`),
    or a local ``base/<id>/data/`` in Barman's (:func:`walvault.backup.tarbackup.
    local_target`)."""

    storage: Storage
    #: the key of each tar: "data" or a tablespace oid -> its key in ``storage``
    key: Callable[[str], str]
    #: the backup's place, for messages and backup.info's errors
    where: str
    #: keeps the manifest where that layout has it (before backup.info is written)
    keep_manifest: Callable[[str], None]


def bucket_target(server: ServerConfig, backup_id: str, encrypted: bool) -> TarTarget:
    """``<server>/base/<id>/data.tar[.ext][.gpg]`` ... in the bucket, the manifest under
    ``walvault-meta/`` (:class:`~walvault.backup.cloudstore.CloudBackups`)."""
    cloud = CloudBackups(server)
    codec = backup_compression(server)
    return TarTarget(
        cloud.storage,
        lambda what: cloud.tar_key(backup_id, what, codec, encrypted=encrypted),
        cloud.url(backup_id),
        lambda text: cloud.write_manifest(backup_id, text),
    )


def upload_tar(
    server: ServerConfig,
    storage: Storage,
    key: str,
    source: IO[bytes],
    watcher: TarWatcher,
    progress: Progress,
    final_check: Callable[[], None],
    on_failure: Callable[[], None],
    encrypt: Encrypt | None = None,
) -> int:
    """Compress (then, with ``encrypt``, encrypt) the tar read from ``source`` into the
    object ``key`` of ``storage``; return the stored size.

    The upload is completed only if, at the end of ``source``, the compressor finished,
    ``final_check()`` passed and the watcher saw the whole archive; otherwise it is aborted
    and :class:`CopyFailed` raised (``on_failure()`` runs first: stop the producer).
    """
    codec = backup_compression(server)
    read_end, write_end = os.pipe()
    failure: list[BaseException] = []

    def compress() -> None:
        try:
            with open(write_end, "wb", buffering=_READ) as out:
                watched = _Watching(source, watcher, progress)
                level = server.compression_level
                if encrypt is None:
                    compress_stream(codec, level, watched, out)  # type: ignore[arg-type]
                else:
                    with encrypting(encrypt.gpg, encrypt.recipient, out) as sink:
                        compress_stream(codec, level, watched, sink)  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the reading side
            failure.append(exc)

    def check() -> None:
        worker.join()
        if failure:
            exc = failure[0]
            if isinstance(exc, WalvaultError):
                raise CopyFailed(exc.message)
            raise CopyFailed(f"compressing the tar stream failed: {exc}")
        final_check()
        try:
            watcher.finish()
        except TarError as exc:
            raise CopyFailed(f"pg_basebackup's output: {exc.message}") from None

    worker = threading.Thread(target=compress, name="backup-compress", daemon=True)
    worker.start()
    stream = _Checked(open(read_end, "rb", buffering=_READ), check)  # noqa: SIM115
    try:
        storage.put(key, stream)  # type: ignore[arg-type]
    except BaseException as exc:
        stream.close()  # a compressor blocked on the full pipe gets EPIPE and ends
        on_failure()
        worker.join(timeout=30)
        if isinstance(exc, CopyFailed):
            raise
        if isinstance(exc, WalvaultError):
            raise CopyFailed(f"writing {storage.url(key)} failed: {exc.message}") from None
        raise
    stream.close()
    return stream.size


def start_basebackup(command: BaseBackupCommand, **popen: Any) -> subprocess.Popen[bytes]:
    """pg_basebackup with its environment, no stdin, stderr piped, dying with walvault."""
    return subprocess.Popen(
        list(command.argv),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **command.env},
        **{"preexec_fn": die_with_parent, **popen},
    )


def stream_tar(
    server: ServerConfig,
    target: TarTarget,
    command: BaseBackupCommand,
    debug: Echo,
    progress: Progress,
    encrypt: Encrypt | None = None,
) -> tuple[TarWatcher, BaseBackupRun, int]:
    """Run pg_basebackup into the target's "data" tar; return what the watcher saw, how
    pg_basebackup ended and the stored size.  Raises :class:`CopyFailed`."""
    key = target.key("data")
    log.info("%s: running %s", server.name, command.shown())
    proc = start_basebackup(command, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    stderr = Stderr(server, proc.stderr, debug, progress)
    watcher = TarWatcher()

    def exited() -> None:
        code = proc.wait()
        stderr.join()
        if code != 0:
            raise CopyFailed(BaseBackupRun(code, tuple(stderr.lines), None).failure())

    def stop() -> None:
        stop_process(proc)
        stderr.join()

    stored = upload_tar(
        server, target.storage, key, proc.stdout, watcher, progress, exited, stop, encrypt
    )
    run = BaseBackupRun(proc.returncode or 0, tuple(stderr.lines), stderr.end_lsn)
    return watcher, run, stored


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate (then kill) ``proc`` if it still runs, and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def backup_position_texts(watcher: TarWatcher) -> tuple[str | None, str | None, bytes | None]:
    """(backup_label, backup_manifest or None, head of global/pg_control) from the stream."""
    label = watcher.members.get("backup_label")
    manifest = watcher.members.get("backup_manifest")
    control = watcher.members.get("global/pg_control")
    return (
        label.decode("utf-8", "replace") if label is not None else None,
        manifest.decode("utf-8", "replace") if manifest is not None else None,
        control,
    )


def cloud_info_fields(info: BackupInfo, codec: str | None, encrypted: bool = False) -> BackupInfo:
    """What barman-cloud records beside the positions: the tars' codec (and, as Barman's
    ``backup.info`` does for its encrypted tar backups, ``encryption=gpg``)."""
    extra = [(k, v) for k, v in info.extra if k not in ("compression", "encryption")]
    extra.append(("compression", str(codec)))
    extra.append(("encryption", "gpg" if encrypted else "None"))
    return info.with_(extra=tuple(extra))
