"""The posix driver: objects are files under a root directory, durable the way fs.py makes them.

Layout: key ``a/b/c`` is the file ``<root>/a/b/c``.  Dot files and dot directories are other
writers' temporary files and are never listed.

Durability (pgBackRest's posix driver declares the same): a write goes to a temporary dot
file in the key's directory, which is fsynced; it becomes visible by an atomic no-replace
``link`` (never ``rename``, which would silently replace an object another writer just
created), and the directory is fsynced before the write counts as done.  A batch fsyncs each
file when it is written (in the caller's thread, so several threads overlap their syncs) and
each directory once at commit.  ``put_file`` links the source file itself when it lives on
the same filesystem (no copy; the source is left for the caller to remove), else copies it.

Metadata (``Features.metadata``) lives beside the objects, never among them: with
``meta_dir`` set, the metadata of the objects of directory ``a/b`` is one small file,
``<meta_dir>/a%b`` (``_`` for the root), one line per object::

    <basename>\\t<key>=<value>\\t<key>=<value>...

(keys and values as :func:`walvault.storage.base.check_metadata` allows: no tab, no newline)

Each line also records the inode of the file it describes (``walvault-storage-inode``, hidden
from callers), and only a line for the file's own inode counts: lines are appended and
fsynced before the objects they describe become visible (a visible object never lacks its
metadata), so the line of a writer that then lost a create-only race, or crashed, describes
an inode that is not the object's and is ignored; among matching lines the last wins; a torn
last line (a crash mid-append) is ignored.  Deleting objects rewrites the
file without their lines.  Without ``meta_dir`` metadata is not kept (Features says so).

Reading imports only the standard library (the restore client reads through this driver);
writing uses walvault.fs, the one place of durable file operations, imported when needed.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from typing import TYPE_CHECKING

from walvault.storage.base import (
    DRIVER_METADATA_PREFIX,
    Features,
    InvalidKey,
    ObjectExists,
    ObjectInfo,
    StorageError,
    check_key,
    check_metadata,
    check_prefix,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from typing import BinaryIO

_CHUNK = 1 << 20
_INODE = f"{DRIVER_METADATA_PREFIX}inode"
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV)


def _reason(exc: OSError) -> str:
    """``<reason> (<ERRNO>)`` as walvault writes OS errors (errors.describe_os_error)."""
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc}" + (f" ({name})" if name else "")


def _unlink_quietly(path: str) -> None:
    """Remove a temporary file if it is there (contextlib would cost readers an import)."""
    try:  # noqa: SIM105
        os.unlink(path)
    except OSError:
        pass


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _format_meta(base: str, metadata: Mapping[str, str]) -> str:
    return base + "".join(f"\t{k}={v}" for k, v in sorted(metadata.items()))


def _parse_meta_line(line: str) -> tuple[str, dict[str, str]] | None:
    parts = line.split("\t")
    values: dict[str, str] = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq or not key or not value:
            return None
        values[key] = value
    return parts[0], values


class PosixReader:
    """An open object: a file descriptor read front to back (``fileno`` for kernel copies)."""

    def __init__(self, fd: int, info: ObjectInfo) -> None:
        self._fd = fd
        self._info = info

    @property
    def info(self) -> ObjectInfo:
        return self._info

    def fileno(self) -> int:
        """The descriptor (for pread, sendfile, copy_file_range)."""
        return self._fd

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            pieces = []
            while chunk := os.read(self._fd, _CHUNK):
                pieces.append(chunk)
            return b"".join(pieces)
        return os.read(self._fd, size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PosixReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PosixStorage:
    """Objects under ``root`` (see the module docstring)."""

    def __init__(self, root: str, *, meta_dir: str | None = None) -> None:
        self.root = os.path.abspath(root)
        self.meta_dir = os.path.abspath(meta_dir) if meta_dir else None
        self.features = Features(
            name="posix",
            atomic_create=True,
            metadata=self.meta_dir is not None,
            write_checksums=False,
            local=True,
        )

    def __repr__(self) -> str:
        return f"PosixStorage({self.root!r}, meta_dir={self.meta_dir!r})"

    # ---------------------------------------------------------------- naming

    def path(self, key: str) -> str:
        """The file of ``key`` (validated)."""
        return os.path.join(self.root, check_key(key))

    def url(self, key: str = "") -> str:
        return self.path(key) if key else self.root

    def _meta_file(self, key: str) -> tuple[str, str] | None:
        """(metadata file, base name) for ``key``, or None without a meta_dir."""
        if self.meta_dir is None:
            return None
        parent, _, base = key.rpartition("/")
        return os.path.join(self.meta_dir, parent.replace("/", "%") or "_"), base

    # ---------------------------------------------------------------- reading

    def _metadata(self, key: str, inode: int) -> dict[str, str]:
        where = self._meta_file(key)
        if where is None:
            return {}
        meta_path, base = where
        try:
            with open(meta_path, encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StorageError(f"cannot read metadata file {meta_path}: {_reason(exc)}") from None
        found: dict[str, str] = {}
        prefix = base + "\t"
        mine = f"\t{_INODE}={inode}"
        lines = text.split("\n")
        for line in lines[:-1]:  # the text after the last newline is torn (or empty)
            if line.startswith(prefix) and (mine + "\t" in line or line.endswith(mine)):
                parsed = _parse_meta_line(line)
                if parsed is None:
                    raise StorageError(f"{meta_path}: malformed metadata line for {base!r}")
                found = parsed[1]
        found.pop(_INODE, None)
        return found

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(key, st.st_size, st.st_mtime, self._metadata(key, st.st_ino))

    def open(self, key: str) -> PosixReader | None:
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {_reason(exc)}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            return PosixReader(fd, self._info(key, st))
        except BaseException:
            os.close(fd)
            raise

    def head(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot look at {path}: {_reason(exc)}") from None
        return self._info(key, st) if stat.S_ISREG(st.st_mode) else None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order; metadata is not read (as on S3)."""
        check_prefix(prefix)
        directory, _, _ = prefix.rpartition("/")
        start = os.path.join(self.root, directory) if directory else self.root
        yield from self._walk(start, directory + "/" if directory else "", prefix)

    def _walk(self, path: str, key_prefix: str, want: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(path) as scan:
                entries = [e for e in scan if not e.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot list {path}: {_reason(exc)}") from None
        # Sorting "name/" for directories keeps the walk in the order of whole keys.
        marked = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            marked.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
        for sort_name, entry, is_dir in sorted(marked, key=lambda item: item[0]):
            key = key_prefix + sort_name
            if is_dir:
                if key.startswith(want) or want.startswith(key):
                    yield from self._walk(entry.path, key, want)
                continue
            if not key.startswith(want):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                try:
                    check_key(key)
                except InvalidKey:
                    continue  # not a name any writer of ours makes
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    # ---------------------------------------------------------------- writing

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
        create_only: bool = True,
    ) -> ObjectInfo:
        batch = PosixBatch(self, replace=not create_only)
        info = batch.put(key, data, metadata=metadata, mtime=mtime)
        failures = batch.commit()
        if key in failures:
            raise failures[key]
        return info

    def put_file(
        self,
        key: str,
        path: str,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> ObjectInfo:
        batch = PosixBatch(self)
        info = batch.put_file(key, path, metadata=metadata, mtime=mtime)
        failures = batch.commit()
        if key in failures:
            raise failures[key]
        return info

    def batch(self) -> PosixBatch:
        return PosixBatch(self)

    def abort_incomplete(self, prefix: str) -> int:
        """Remove dead writers' temporary files in the directories under ``prefix``."""
        from walvault.fs import cleanup_stale_temps

        check_prefix(prefix)
        start = os.path.join(self.root, prefix.rstrip("/")) if prefix else self.root
        removed = 0
        if os.path.isdir(start):  # a directory prefix (the only kind callers use here)
            for directory, _dirs, _files in os.walk(start):
                removed += len(cleanup_stale_temps(directory, older_than=0))
        return removed

    # ---------------------------------------------------------------- deleting

    def delete(self, keys: Iterable[str]) -> None:
        dirs: dict[str, None] = {}
        by_meta: dict[str, set[str]] = {}
        for key in keys:
            path = self.path(key)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(f"cannot remove {path}: {_reason(exc)}") from None
            dirs[os.path.dirname(path)] = None
            where = self._meta_file(key)
            if where is not None:
                by_meta.setdefault(where[0], set()).add(where[1])
        from walvault import fs

        for directory in dirs:
            if os.path.isdir(directory):
                fs.fsync_dir(directory)
        for meta_path, bases in by_meta.items():
            self._drop_meta(meta_path, bases)
        self._prune(dirs)

    def _drop_meta(self, meta_path: str, bases: set[str]) -> None:
        try:
            with open(meta_path, encoding="ascii", errors="replace") as handle:
                lines = handle.read().split("\n")[:-1]
        except FileNotFoundError:
            return
        kept = [line for line in lines if line.split("\t", 1)[0] not in bases]
        if len(kept) == len(lines):
            return
        from walvault import fs

        if not kept:
            fs.remove_durably(meta_path, missing_ok=True)
        else:
            fs.durable_replace_bytes(meta_path, "".join(f"{line}\n" for line in kept).encode())

    def _prune(self, dirs: Iterable[str]) -> None:
        """Remove directories left empty by a delete (up to, not including, the root)."""
        for directory in sorted(dirs, key=len, reverse=True):
            current = directory
            while current != self.root and current.startswith(self.root + os.sep):
                try:
                    os.rmdir(current)
                except OSError:
                    break
                parent = os.path.dirname(current)
                from walvault import fs

                fs.fsync_dir(parent)
                current = parent


class _Pending:
    __slots__ = ("dst", "info", "inode", "key", "metadata", "src", "temporary")

    def __init__(
        self,
        key: str,
        dst: str,
        src: str,
        temporary: bool,
        metadata: Mapping[str, str] | None,
        info: ObjectInfo,
        inode: int,
    ) -> None:
        self.key, self.dst, self.src, self.temporary = key, dst, src, temporary
        self.metadata, self.info, self.inode = metadata, info, inode


class PosixBatch:
    """Writes of one :class:`PosixStorage` committed together (see the module docstring)."""

    def __init__(self, store: PosixStorage, *, replace: bool = False) -> None:
        self.store = store
        self.replace = replace
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._devices: dict[str, int] = {}  # directory made ready -> its st_dev

    def _add(self, pending: _Pending) -> ObjectInfo:
        with self._lock:
            self._pending.append(pending)
        return pending.info

    def _prepare(self, key: str, metadata: Mapping[str, str] | None) -> tuple[str, str]:
        check_metadata(metadata)
        from walvault import fs

        dst = self.store.path(key)
        directory = os.path.dirname(dst)
        if directory not in self._devices:
            try:
                fs.ensure_dir(directory)
                self._devices[directory] = os.stat(directory).st_dev
            except OSError as exc:
                raise StorageError(f"cannot create {directory}: {_reason(exc)}") from None
        return dst, directory

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> ObjectInfo:
        from walvault import fs

        dst, _ = self._prepare(key, metadata)
        tmp = str(fs.temp_path_for(dst))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if isinstance(data, bytes | bytearray | memoryview):
                    _write_all(fd, data)
                else:
                    while chunk := data.read(_CHUNK):
                        _write_all(fd, chunk)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except BaseException as exc:
            _unlink_quietly(tmp)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {dst}: {_reason(exc)}") from None
            raise
        info = ObjectInfo(key, st.st_size, st.st_mtime, dict(metadata or {}))
        return self._add(_Pending(key, dst, tmp, True, metadata, info, st.st_ino))

    def put_written(
        self,
        key: str,
        write: Callable[[BinaryIO], Mapping[str, str] | None],
        *,
        mtime: float | None = None,
    ) -> ObjectInfo:
        from walvault import fs

        dst, _ = self._prepare(key, None)
        tmp = str(fs.temp_path_for(dst))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with open(fd, "wb", buffering=_CHUNK) as handle:
                metadata = check_metadata(write(handle))
                handle.flush()
                if mtime is not None:
                    # before the fsync: changed after it, the inode would be dirty again
                    os.utime(fd, (mtime, mtime))
                os.fsync(fd)
                st = os.fstat(fd)
        except BaseException as exc:
            _unlink_quietly(tmp)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {dst}: {_reason(exc)}") from None
            raise
        info = ObjectInfo(key, st.st_size, st.st_mtime, metadata)
        return self._add(_Pending(key, dst, tmp, True, metadata, info, st.st_ino))

    def put_file(
        self,
        key: str,
        path: str,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> ObjectInfo:
        dst, directory = self._prepare(key, metadata)
        try:
            st = os.stat(path)
            same_fs = st.st_dev == self._devices[directory]
            if same_fs and not self.replace:
                if mtime is not None and mtime != st.st_mtime:
                    os.utime(path, (mtime, mtime))
                    st = os.stat(path)
                from walvault import fs

                fs.fsync_file(path)
                info = ObjectInfo(key, st.st_size, st.st_mtime, dict(metadata or {}))
                return self._add(_Pending(key, dst, path, False, metadata, info, st.st_ino))
        except OSError as exc:
            raise StorageError(f"cannot store {path} as {dst}: {_reason(exc)}") from None
        with open(path, "rb") as source:
            return self.put(
                key, source, metadata=metadata, mtime=st.st_mtime if mtime is None else mtime
            )

    def _write_metadata(self, pending: list[_Pending]) -> None:
        lines: dict[str, list[str]] = {}
        for item in pending:
            where = self.store._meta_file(item.key) if item.metadata else None
            if where is not None and item.metadata:
                tagged = {**item.metadata, _INODE: str(item.inode)}
                lines.setdefault(where[0], []).append(_format_meta(where[1], tagged))
        if not lines:
            return
        from walvault import fs

        assert self.store.meta_dir is not None
        fs.ensure_dir(self.store.meta_dir)
        for meta_path, text in lines.items():
            if os.path.exists(meta_path):
                fs.truncate_torn_tail(meta_path)  # a crash mid-append left a torn line
            fs.append_lines_durably(meta_path, text)

    def commit(self) -> dict[str, StorageError]:
        with self._lock:
            pending, self._pending = self._pending, []
        failures: dict[str, StorageError] = {}
        if not pending:
            return failures
        try:
            self._write_metadata(pending)
        except OSError as exc:
            self._drop(pending)
            raise StorageError(f"cannot write metadata: {_reason(exc)}") from None
        dirs: dict[str, None] = {}
        for item in pending:
            try:
                self._make_visible(item)
            except ObjectExists as exc:
                failures[item.key] = exc
            except OSError as exc:
                failures[item.key] = StorageError(f"cannot store {item.dst}: {_reason(exc)}")
            else:
                dirs[os.path.dirname(item.dst)] = None
            if item.temporary:
                _unlink_quietly(item.src)
        from walvault import fs

        for directory in dirs:
            fs.fsync_dir(directory)
        return failures

    def _make_visible(self, item: _Pending) -> None:
        if self.replace and item.temporary:
            os.rename(item.src, item.dst)
            return
        try:
            os.link(item.src, item.dst)
        except FileExistsError:
            raise ObjectExists(f"{item.dst} already exists: not replaced") from None
        except OSError as exc:
            if exc.errno not in _NO_LINKS or not item.temporary:
                raise
            if os.path.lexists(item.dst):  # no hard links here: check, then rename
                raise ObjectExists(f"{item.dst} already exists: not replaced") from None
            os.rename(item.src, item.dst)

    def _drop(self, pending: list[_Pending]) -> None:
        for item in pending:
            if item.temporary:
                _unlink_quietly(item.src)

    def discard(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        self._drop(pending)
