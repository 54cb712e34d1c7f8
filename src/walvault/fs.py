"""Durable, atomic file operations: the only code that writes into the archive.

Crash-safety contract
---------------------
* A file appears under its final name only by ``rename`` of a fully written temporary
  file from the same directory, so readers never see a partial file.  Temporary files are
  named ``.<basename>.<pid>.<random>.tmp``: dot-prefixed, so archive scanners skip them.
* A *durable* write fsyncs the temporary file's data **before** the rename and the
  directory **after** it.  Only once both are done may the caller delete the source of
  that data (a WAL file in an incoming directory, a spool file, ...).  Deleting earlier
  can lose the only copy if the machine crashes.
* :func:`durable_write_from` (and its wrappers) are durable when they return, unless
  ``sync=False`` (atomic but not durable: for files the caller may lose, like a restored
  WAL handed to PostgreSQL).  Given ``batch=``, the write is *deferred*: the temporary file
  is written now but fsynced, renamed into place and its directory fsynced only in
  :meth:`SyncBatch.flush`, once per unique directory.  Sources of a batch may be deleted
  after ``flush()`` returns, never before.
* :func:`append_lines_durably` appends and fsyncs once; a crash may leave a torn last
  line, which readers of the catalogue must ignore.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from walvault.locks import pid_alive

StrPath = str | os.PathLike[str]
COPY_CHUNK = 1 << 20
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}
_TEMP_RE = re.compile(r"^\.(?P<base>.+)\.(?P<pid>\d+)\.(?P<rand>[0-9a-f]{8})\.tmp$")


def fsync_file(path: StrPath) -> None:
    """Flush the data and metadata of the file at ``path`` to stable storage."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        _name_the_path(exc, path)
        raise
    finally:
        os.close(fd)


def fsync_dir(path: StrPath) -> None:
    """Make directory entries (creations, renames, unlinks) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems cannot fsync a directory: nothing more to do
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            _name_the_path(exc, path)
            raise
    finally:
        os.close(fd)


def _name_the_path(exc: OSError, path: StrPath) -> None:
    """Give an error of a descriptor-level call (write, fsync: no file name) the path it was
    about, so the one-line error a user sees says which file (e.g. a full disk, ENOSPC)."""
    if exc.filename is None:
        exc.filename = os.fspath(path)


def temp_path_for(dst: StrPath) -> Path:
    """Return a fresh temporary name beside ``dst`` (see the module docstring)."""
    target = Path(dst)
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _write_temp(
    dst: Path, writer: Callable[[BinaryIO], object], mode: int, mtime: float | None, sync: bool
) -> tuple[Path, int]:
    """Create and fill a temporary file beside ``dst``; remove it again on any failure."""
    tmp = temp_path_for(dst)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb", buffering=COPY_CHUNK) as handle:
            os.fchmod(fd, mode)  # exact mode, whatever the umask
            writer(handle)
            handle.flush()
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            if sync:
                os.fsync(fd)
            size = os.fstat(fd).st_size
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            _name_the_path(exc, dst)
        raise
    return tmp, size


def durable_write_from(
    dst: StrPath,
    writer: Callable[[BinaryIO], object],
    *,
    sync: bool = True,
    mtime: float | None = None,
    mode: int = 0o600,
    batch: SyncBatch | None = None,
) -> int:
    """Atomically (re)place ``dst`` with what ``writer`` writes; return the file size.

    Durable on return unless ``sync=False``; with ``batch`` (which overrides ``sync``) it
    is committed (made visible and durable) by ``batch.flush()`` instead.  The temporary
    file is removed on any error.
    """
    target = Path(dst)
    tmp, size = _write_temp(target, writer, mode, mtime, sync and batch is None)
    if batch is not None:
        batch.add_pending(tmp, target)
        return size
    try:
        os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync:
        fsync_dir(target.parent)
    return size


def _copy_fd(src_fd: int, dst_fd: int) -> None:
    """Copy the rest of a file between descriptors, in the kernel when it allows."""
    try:
        while os.copy_file_range(src_fd, dst_fd, 1 << 30):
            pass
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY:
            raise
    # Plain reads finish the job after a refusal, or if the kernel call stopped early.
    with open(src_fd, "rb", closefd=False) as src, open(dst_fd, "wb", closefd=False) as dst:
        shutil.copyfileobj(src, dst, COPY_CHUNK)


def durable_copy(
    src: StrPath,
    dst: StrPath,
    *,
    sync: bool = True,
    preserve_mtime: bool = False,
    mode: int = 0o600,
    batch: SyncBatch | None = None,
) -> int:
    """Copy ``src`` to ``dst`` with the guarantees of :func:`durable_write_from`."""
    with open(src, "rb") as source:
        mtime = os.fstat(source.fileno()).st_mtime if preserve_mtime else None

        def writer(handle: BinaryIO) -> None:
            handle.flush()
            _copy_fd(source.fileno(), handle.fileno())

        return durable_write_from(dst, writer, sync=sync, mtime=mtime, mode=mode, batch=batch)


def durable_replace_bytes(dst: StrPath, data: bytes, *, mode: int = 0o600) -> int:
    """Durably replace a small file (identity.json, gap records, ...) with ``data``."""
    return durable_write_from(dst, lambda handle: handle.write(data), mode=mode)


def append_lines_durably(path: StrPath, lines: Iterable[str], *, mode: int = 0o600) -> None:
    """Append ``lines`` (newline added where missing) and fsync once; callers hold a lock."""
    data = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if not data:
        return
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    created = False
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        fd, created = os.open(path, flags | os.O_CREAT, mode), True
    try:
        view = memoryview(data.encode("utf-8"))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        _name_the_path(exc, path)
        raise
    finally:
        os.close(fd)
    if created:
        fsync_dir(Path(path).parent)


def remove_durably(path: StrPath, *, missing_ok: bool = False) -> bool:
    """Unlink ``path`` and fsync its directory; return whether a file was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise
        return False
    fsync_dir(Path(path).parent)
    return True


def durable_move(
    src: StrPath, dst: StrPath, *, batch: SyncBatch | None = None, sync_data: bool = True
) -> None:
    """Move ``src`` onto ``dst`` durably: fsync its data, rename, fsync both directories.

    The directory fsyncs happen now, or in ``batch.flush()`` when a batch is given.  Across
    filesystems the file is durably copied (mode and mtime kept) and only then removed.  The
    caller makes sure ``dst`` does not exist (a rename replaces it).  ``sync_data=False``
    skips the data fsync (for entries that may not be regular files, such as a FIFO).
    """
    source, target = Path(src), Path(dst)
    if sync_data:
        fsync_file(source)
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        mode = stat.S_IMODE(os.stat(source).st_mode)
        durable_copy(source, target, preserve_mtime=True, mode=mode)
        os.unlink(source)
    for directory in dict.fromkeys((target.parent, source.parent)):
        if batch is not None:
            batch.add_dir(directory)
        else:
            fsync_dir(directory)


def remove_files(paths: Iterable[StrPath]) -> int:
    """Unlink ``paths`` (missing ones are fine), then fsync each directory once; return count."""
    removed = 0
    dirs: dict[Path, None] = {}
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed += 1
        dirs[Path(path).parent] = None
    for directory in dirs:
        fsync_dir(directory)
    return removed


def truncate_torn_tail(path: StrPath, terminator: bytes = b"\n") -> int:
    """Cut a torn last record (after the last ``terminator``) off a file; return bytes cut.

    An append interrupted by a crash can leave a partial last line; appending after it would
    glue it to the next record.  Callers hold the lock that serialises appends.
    """
    with open(path, "r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return 0
        handle.seek(end - 1)
        if handle.read(1) == terminator:
            return 0
        pos = end
        keep = 0
        while pos > 0:
            step = min(COPY_CHUNK, pos)
            pos -= step
            handle.seek(pos)
            index = handle.read(step).rfind(terminator)
            if index >= 0:
                keep = pos + index + len(terminator)
                break
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return end - keep


def tree_size(path: StrPath) -> int:
    """The bytes of the regular files under ``path`` (symlinks not followed; files that
    vanish meanwhile count nothing)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def ensure_dir(path: StrPath, mode: int = 0o700) -> Path:
    """Create ``path`` and missing parents (``mode`` less umask), fsyncing each new entry."""
    target = Path(path)
    missing: list[Path] = []
    probe = target
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        fsync_dir(directory.parent)
    return target


def write_temp(
    dst: StrPath, writer: Callable[[BinaryIO], object], *, mtime: float | None = None
) -> tuple[Path, int]:
    """Write a temporary file beside ``dst`` (invisible, not yet fsynced); return it and
    its size.  The caller makes it live with :func:`commit_new` or unlinks it."""
    return _write_temp(Path(dst), writer, 0o600, mtime, False)


def commit_new(tmp: StrPath, dst: StrPath) -> bool:
    """Durably give the temporary file ``tmp`` the name ``dst`` unless ``dst`` exists.

    Data fsync, then an atomic no-replace link (``rename`` would silently replace a file
    another writer just landed), unlink of ``tmp`` and fsync of the directory.  Returns
    False, leaving ``tmp`` in place, when ``dst`` already exists.  Filesystems without
    hard links fall back to check-then-rename.
    """
    fsync_file(tmp)
    try:
        os.link(tmp, dst)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        if os.path.lexists(dst):
            return False
        os.rename(tmp, dst)
    else:
        os.unlink(tmp)
    fsync_dir(Path(dst).parent)
    return True


def cleanup_stale_temps(directory: StrPath, *, older_than: float = 3600.0) -> list[Path]:
    """Remove our temporary files left by crashed writers; return what was removed.

    A temp file goes when it is older than ``older_than`` seconds and the PID in its name
    is not alive here (the age is what protects writers on other hosts sharing the dir).
    """
    removed: list[Path] = []
    limit = time.time() - older_than
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _TEMP_RE.match(entry.name)
            if not match or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime > limit:
                    continue
                if pid_alive(int(match["pid"])):
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(Path(entry.path))
    return removed


class SyncBatch:
    """Group fsyncs: deferred writes, extra files and directories synced once in ``flush()``.

    Thread-safe for registration.  As a context manager it flushes on normal exit and
    discards uncommitted temporary files if the block raises.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[Path, Path]] = []
        self._files: dict[Path, None] = {}
        self._dirs: dict[Path, None] = {}

    def add_pending(self, tmp: Path, dst: Path) -> None:
        """Register a written temporary file to rename onto ``dst`` at flush time."""
        with self._lock:
            self._pending.append((tmp, dst))

    def add_file(self, path: StrPath) -> None:
        """Register an already written file whose data must be fsynced."""
        with self._lock:
            self._files[Path(path)] = None

    def add_dir(self, path: StrPath) -> None:
        """Register a directory whose entries must be made durable."""
        with self._lock:
            self._dirs[Path(path)] = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._files) + len(self._dirs)

    def flush(self) -> list[Path]:
        """Fsync data, rename deferred files into place, fsync each directory once.

        Returns the destinations committed.  On error, the renamed ones still get their
        directory fsynced and the others' temporary files are removed.
        """
        with self._lock:
            pending, self._pending = self._pending, []
            files, self._files = list(self._files), {}
            dirs, self._dirs = self._dirs, {}
        committed: list[Path] = []
        try:
            for path in [tmp for tmp, _ in pending] + files:
                fsync_file(path)
            for tmp, dst in pending:
                os.rename(tmp, dst)
                committed.append(dst)
                dirs[dst.parent] = None
        finally:
            for tmp, _ in pending[len(committed) :]:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            for directory in dirs:
                fsync_dir(directory)
        return committed

    def discard(self) -> None:
        """Drop everything registered, removing uncommitted temporary files."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._files.clear()
            self._dirs.clear()
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def __enter__(self) -> SyncBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
        else:
            self.discard()
