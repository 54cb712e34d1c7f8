"""A tar-format backup with tablespaces: pg_basebackup's tars through a bounded spool.

Into object storage, or into a local tar-format backup (:mod:`walvault.backup.tarbackup`):
the ``target`` (:class:`walvault.backup.cloudbackup.TarTarget`) names the store and keys.

pg_basebackup writes only one tablespace to its standard output, so a cluster with
tablespaces is backed up with ``--format=tar --pgdata=<spool>``: pg_basebackup writes
``<oid>.tar`` for each tablespace and ``base.tar`` (plus ``backup_manifest``) into a local
spool directory, one archive after the other, and each tar is uploaded *while it is being
written* (``<oid>.tar[.ext]``, ``data.tar[.ext]`` in the bucket; ``base.tar[.ext]`` on local disk):

* a watcher thread finds each new tar in the spool and hands it to an upload (at most
  :data:`UPLOADS` at a time: the one being written and the one finishing);
* the upload reads the file as it grows (:class:`GrowingTar`) and punches holes behind what
  it has read (``fallocate(PUNCH_HOLE)``), so the spool holds only what is not uploaded yet;
  the file is done when its tar's end-of-archive blocks have been read and pg_basebackup
  has moved on (another tar appeared, or it exited);
* when the spool holds more than ``limit`` bytes (its files' allocated blocks), pg_basebackup
  is stopped (SIGSTOP) until the uploads bring it under half of that (SIGCONT): the local
  disk used stays near ``limit`` (default 256 MiB), whatever the size of the cluster.  So
  that a stopped pg_basebackup never outlives walvault, it gets SIGKILL, not SIGTERM, when
  walvault dies (a stopped process keeps a SIGTERM pending).

A filesystem that cannot punch holes (``EOPNOTSUPP``) fails the backup with one line.  The
spool is ``<backup_directory>/spool/<backup id>``, removed at the end, failure or not (and
by cron's cleaning of an abandoned backup).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from walvault.backup.cloudbackup import (
    CopyFailed,
    Stderr,
    TarTarget,
    start_basebackup,
    stop_process,
    upload_tar,
)
from walvault.backup.pgbasebackup import BaseBackupCommand, BaseBackupRun
from walvault.backup.progress import Progress
from walvault.backup.tarstream import TarWatcher
from walvault.config import ServerConfig

if TYPE_CHECKING:
    from walvault.archive.ingest import Encrypt

Echo = Callable[[str], None]
DEFAULT_LIMIT = 256 << 20
UPLOADS = 2
_POLL = 0.02
_READ = 1 << 20
_PUNCH = 1 << 20
_TAR = re.compile(r"(base|[1-9][0-9]{0,9})\.tar")
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
PR_SET_PDEATHSIG = 1


def spool_directory(server: ServerConfig, backup_id: str) -> str:
    """``<backup_directory>/spool/<backup id>``."""
    return os.path.join(server.backup_directory, "spool", backup_id)


def _die_hard_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_libc: ctypes.CDLL | None = None


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the blocks of ``[offset, offset + length)`` of ``fd`` (the file keeps its size)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, mode, offset, length) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


class GrowingTar:
    """One tar in the spool, read as pg_basebackup writes it (see the module docstring)."""

    def __init__(self, path: str, moved_on: Callable[[str], bool]) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self._moved_on = moved_on
        self._position = 0
        self._punched = 0

    def read(self, size: int = -1) -> bytes:
        want = _READ if size is None or size < 0 else size
        while True:
            data = os.pread(self._fd, want, self._position)
            if data:
                self._position += len(data)
                self._release()
                return data
            if self._moved_on(self.path):
                tail = os.pread(self._fd, want, self._position)  # written just before
                if not tail:
                    return b""
                continue
            time.sleep(_POLL)

    def _release(self) -> None:
        end = self._position // _PUNCH * _PUNCH
        if end > self._punched:
            try:
                punch_hole(self._fd, self._punched, end - self._punched)
            except OSError as exc:
                raise CopyFailed(
                    f"cannot free what was uploaded of {self.path} ({exc.strerror}): the "
                    "spool's filesystem must support fallocate(PUNCH_HOLE) (ext4, xfs, "
                    "btrfs, tmpfs)"
                ) from None
            self._punched = end

    def close(self) -> None:
        os.close(self._fd)


class _Spool:
    """The spool directory, pg_basebackup's process, and the back-pressure between them."""

    def __init__(self, directory: str, proc: subprocess.Popen[bytes], limit: int) -> None:
        self.directory, self.proc, self.limit = directory, proc, limit
        self.seen: list[str] = []
        self.stopped = False
        self._lock = threading.Lock()

    def new_tars(self) -> list[str]:
        """Tars that appeared since the last call, in the order they were noticed."""
        found = []
        for name in sorted(os.listdir(self.directory)):
            if _TAR.fullmatch(name) and name not in self.seen:
                self.seen.append(name)
                found.append(name)
        return found

    def moved_on(self, path: str) -> bool:
        """pg_basebackup is done with ``path``: another tar came after it, or it exited."""
        name = os.path.basename(path)
        if self.proc.poll() is not None:
            return True
        others = [n for n in os.listdir(self.directory) if _TAR.fullmatch(n) and n != name]
        return any(n not in self.seen or self.seen.index(n) > self.seen.index(name) for n in others)

    def used(self) -> int:
        total = 0
        for name in os.listdir(self.directory):
            try:
                total += os.stat(os.path.join(self.directory, name)).st_blocks * 512
            except FileNotFoundError:
                continue
        return total

    def regulate(self) -> None:
        """Stop pg_basebackup above ``limit`` bytes spooled, continue it below half."""
        if self.proc.poll() is not None:
            return
        used = self.used()
        with self._lock:
            if not self.stopped and used > self.limit:
                self.proc.send_signal(signal.SIGSTOP)
                self.stopped = True
            elif self.stopped and used < self.limit // 2:
                self.proc.send_signal(signal.SIGCONT)
                self.stopped = False

    def release(self) -> None:
        with self._lock:
            if self.stopped and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
            self.stopped = False


def spool_tars(
    server: ServerConfig,
    backup_id: str,
    target: TarTarget,
    command: BaseBackupCommand,
    debug: Echo,
    progress: Progress,
    *,
    limit: int = DEFAULT_LIMIT,
    encrypt: Encrypt | None = None,
) -> tuple[TarWatcher, BaseBackupRun, int, str | None]:
    """Run pg_basebackup into the spool and store every tar into ``target`` as it is
    written; return the watcher of ``base.tar``, how pg_basebackup ended, the stored size
    and the manifest."""
    directory = spool_directory(server, backup_id)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, mode=0o700)
    argv = [a if a != "--pgdata=-" else f"--pgdata={directory}" for a in command.argv]
    proc = start_basebackup(
        BaseBackupCommand(tuple(argv), command.env),
        stdout=subprocess.DEVNULL,
        preexec_fn=_die_hard_with_parent,
    )
    assert proc.stderr is not None
    stderr = Stderr(server, proc.stderr, debug, progress)
    spool = _Spool(directory, proc, limit)
    watchers: dict[str, TarWatcher] = {}
    uploads: list[Future[int]] = []

    def upload(name: str) -> int:
        reader = GrowingTar(os.path.join(directory, name), spool.moved_on)
        watcher = watchers[name]
        what = "data" if name == "base.tar" else name[: -len(".tar")]
        try:
            return upload_tar(
                server,
                target.storage,
                target.key(what),
                reader,  # type: ignore[arg-type]
                watcher,
                progress,
                lambda: None,
                spool.release,
                encrypt,
            )
        finally:
            reader.close()
            os.unlink(reader.path)

    pool = ThreadPoolExecutor(max_workers=UPLOADS, thread_name_prefix="backup-upload")
    try:
        while True:
            exited = proc.poll() is not None  # before the scan: nothing can follow it
            for name in spool.new_tars():
                watchers[name] = TarWatcher()
                uploads.append(pool.submit(upload, name))
            for future in uploads:
                if future.done() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            if exited:
                break
            spool.regulate()
            time.sleep(_POLL)
        stored = sum(f.result() for f in uploads)
        code = proc.wait()
        stderr.join()
        if code != 0:
            raise CopyFailed(BaseBackupRun(code, tuple(stderr.lines), None).failure())
        if "base.tar" not in watchers:
            raise CopyFailed(f"pg_basebackup wrote no base.tar into {directory}")
        manifest_path = os.path.join(directory, "backup_manifest")
        manifest = None
        if os.path.exists(manifest_path):
            with open(manifest_path, encoding="utf-8", errors="replace") as handle:
                manifest = handle.read()
        run = BaseBackupRun(code, tuple(stderr.lines), stderr.end_lsn)
        return watchers["base.tar"], run, stored, manifest
    except BaseException:
        spool.release()
        stop_process(proc)  # the growing tars' readers then see it gone and end
        stderr.join()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(directory, ignore_errors=True)
