"""get-wal's engine: find a WAL file of a server and stream it out, decompressing on the fly.

Lookup follows :func:`walvault.archive.layout.lookup_paths`.  Each candidate is *opened*
(not tested for existence first): once open, the descriptor keeps the data readable even
if archive-wal moves or removes the file, and a candidate that vanished before the open
is simply skipped.  Nothing is written into the archive: data goes from the descriptor to
the output (``sendfile`` when no codec is involved, else through a streaming decoder).

An uncompressed segment (or a ``.partial`` standing in for one) is only sent when its long
page header is valid and the file is exactly one segment long: PostgreSQL refuses a short
file with a FATAL error, and pg_receivewal's ``.partial`` files are zero-filled to full
size before any WAL is written into them.
"""

from __future__ import annotations

import errno
import os
import stat

from walvault.archive.compression import MAGIC_MAX_LEN, identify
from walvault.archive.layout import lookup_paths
from walvault.errors import WalvaultError
from walvault.wal.names import Segment, WalKind, classify, validate_wal_name
from walvault.wal.pagecheck import LONG_HEADER_SIZE, unpack_long_header, whole_segment_problem

# mypy reads this name as typing.TYPE_CHECKING: the restore client imports this module once
# per WAL segment and must not pay ~6 ms for typing (and the re it imports).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

    from walvault.config import ServerConfig

    Warn = Callable[[str], None]

__all__ = [
    "FoundWal",
    "WalNotFound",
    "WalSendError",
    "open_wal",
    "peek",
    "send",
    "send_fd",
]

SEND_CHUNK = 1 << 20
_HEAD_SIZE = max(LONG_HEADER_SIZE, MAGIC_MAX_LEN)
_NO_SENDFILE = {
    errno.EINVAL,
    errno.ENOSYS,
    errno.EOPNOTSUPP,
    errno.EBADF,
    errno.EXDEV,
    errno.EPERM,
}


class WalNotFound(WalvaultError):
    """No candidate holds the requested file (exit 1: "end of recovery" for PostgreSQL)."""

    exit_code = 1
    means_not_found = True  # the only exit 1 of get-wal (see cli.main._exit_code)


class WalSendError(WalvaultError):
    """The file exists but could not be read, decoded or written out (exit 2)."""

    exit_code = 2


class FoundWal:
    """An open candidate: the descriptor, where it was found and how it is stored."""

    __slots__ = ("compression", "fd", "head", "kind", "name", "path", "size")

    def __init__(
        self,
        name: str,
        path: str,
        fd: int,
        size: int,
        compression: str | None,
        kind: WalKind,
        head: bytes,
    ) -> None:
        self.name, self.path, self.fd, self.size = name, path, fd, size
        self.compression, self.kind, self.head = compression, kind, head

    def __repr__(self) -> str:
        return f"FoundWal({self.name!r}, {self.path!r}, fd={self.fd}, {self.compression})"

    @property
    def from_partial(self) -> bool:
        """True when a ``.partial`` file stands in for the requested segment."""
        return self.kind is WalKind.SEGMENT and self.path.endswith(".partial")

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FoundWal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_candidate(path: str, name: str, kind: WalKind, warn: Warn | None) -> FoundWal | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise WalSendError(f"cannot open '{path}': {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        head = os.pread(fd, _HEAD_SIZE, 0)
        compression = identify(head)
        if compression is None and kind is WalKind.SEGMENT:
            problem = whole_segment_problem(head, info.st_size)
            if problem is not None:
                if warn is not None and not path.endswith(".partial"):
                    warn(f"skipping '{path}': {problem}")
                os.close(fd)
                return None
    except BaseException:
        os.close(fd)
        raise
    return FoundWal(name, path, fd, info.st_size, compression, kind, head)


def open_wal(
    server: ServerConfig, name: str, *, partial: bool = False, warn: Warn | None = None
) -> FoundWal:
    """Open the first usable candidate for ``name``; raise WalNotFound when there is none.

    ``name`` is validated before any path is built (InvalidWalName, exit 3).
    """
    kind = classify(validate_wal_name(name))
    assert kind is not None
    for path in lookup_paths(server, name, partial=partial):
        found = _open_candidate(path, name, kind, warn)
        if found is not None:
            return found
    raise WalNotFound(f"WAL file '{name}' not found in server '{server.name}'")


def _write_all(out_fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(out_fd, view) :]


def _copy_raw(in_fd: int, out_fd: int, count: int) -> int:
    """Copy ``count`` bytes from offset 0 of ``in_fd`` to ``out_fd``; return bytes copied.

    In the kernel when it can: ``copy_file_range`` to a regular file (a reflink where the
    filesystem shares extents, which PostgreSQL may later overwrite safely), ``sendfile``
    to a pipe or socket; plain reads and writes otherwise.
    """
    regular = stat.S_ISREG(os.fstat(out_fd).st_mode)
    start = os.lseek(out_fd, 0, os.SEEK_CUR) if regular else 0
    offset = 0
    try:
        while offset < count:
            if regular:
                done = os.copy_file_range(in_fd, out_fd, count - offset, offset, start + offset)
            else:
                done = os.sendfile(out_fd, in_fd, offset, count - offset)
            if done == 0:
                break
            offset += done
    except OSError as exc:
        if exc.errno not in _NO_SENDFILE or (offset and not regular):
            raise
    if regular:
        os.lseek(out_fd, start + offset, os.SEEK_SET)
    while offset < count:
        chunk = os.pread(in_fd, min(SEND_CHUNK, count - offset), offset)
        if not chunk:
            break
        _write_all(out_fd, chunk)
        offset += len(chunk)
    return offset


def _checked_segment(pieces: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Pass decoded pieces through, checking the total against the header's segment size."""
    head = b""
    total = 0
    for piece in pieces:
        if len(head) < LONG_HEADER_SIZE:
            head += piece[: LONG_HEADER_SIZE - len(head)]
        total += len(piece)
        yield piece
    problem = whole_segment_problem(head, total)
    if problem is not None:
        raise WalSendError(f"archived copy of '{name}' is not a valid segment: {problem}")


def _reader(fd: int) -> BinaryIO:
    os.lseek(fd, 0, os.SEEK_SET)
    return open(fd, "rb", buffering=0, closefd=False)


def send_fd(
    found: FoundWal,
    out_fd: int,
    *,
    compression: str | None = None,
    keep_compression: bool = False,
) -> int:
    """Write ``found`` to ``out_fd`` (decompressed unless asked otherwise); return bytes written.

    ``compression`` (gzip, bzip2) recompresses the output; ``keep_compression`` sends the
    stored bytes as they are.  Errors reading or decoding raise WalSendError; errors
    writing ``out_fd`` are left as OSError for the caller.
    """
    stored = found.compression
    if keep_compression or stored == compression:
        sent = _copy_raw(found.fd, out_fd, found.size)
        if sent != found.size:
            raise WalSendError(f"'{found.path}' shrank while being sent")
        return sent
    from walvault.archive import compression as codecs

    try:
        with _reader(found.fd) as src, open(out_fd, "wb", closefd=False) as dst:
            if compression is not None:
                plain = codecs.open_decompressed(stored, src)
                return codecs.compress_stream(compression, None, plain, dst)
            pieces = codecs.iter_decompressed(src, stored)
            if found.kind is WalKind.SEGMENT:
                pieces = _checked_segment(pieces, found.name)
            written = 0
            for piece in pieces:
                written += dst.write(piece)
            return written
    except codecs.CompressionError as exc:
        raise WalSendError(f"cannot decompress '{found.path}': {exc}") from None


def send(
    found: FoundWal,
    out: BinaryIO,
    *,
    compression: str | None = None,
    keep_compression: bool = False,
) -> int:
    """Like :func:`send_fd` for a binary file object (flushed before and after)."""
    out.flush()
    written = send_fd(
        found, out.fileno(), compression=compression, keep_compression=keep_compression
    )
    out.flush()
    return written


def segment_size_of(found: FoundWal) -> int | None:
    """The segment size in ``found``'s long page header (decoding its start if needed)."""
    head = found.head
    if found.compression is not None:
        from walvault.archive import compression as codecs

        try:
            with _reader(found.fd) as src:
                head = b""
                for piece in codecs.iter_decompressed(src, found.compression):
                    head += piece
                    if len(head) >= LONG_HEADER_SIZE:
                        break
        except codecs.CompressionError:
            return None
    try:
        return unpack_long_header(head)[6]  # xlp_seg_size
    except ValueError:
        return None


def peek(server: ServerConfig, name: str, count: int) -> list[str]:
    """Up to ``count`` available names from ``name`` on: the name itself, then its successors.

    Only complete files count (no ``.partial``).  Successors follow the segment size read
    from the first file's header, so log-file boundaries are crossed correctly for any
    size (``...FF`` is the last segment of a log id with 16 MiB, ``...FFF`` with 1 MiB).
    History and backup-label names only ever list themselves.
    """
    kind = classify(validate_wal_name(name))
    names: list[str] = []
    seg_size: int | None = None
    current = name
    while len(names) < count:
        try:
            found = open_wal(server, current)
        except WalNotFound:
            break
        with found:
            if seg_size is None and kind is WalKind.SEGMENT:
                seg_size = segment_size_of(found)
        names.append(current)
        if seg_size is None:
            break
        try:
            current = Segment.from_name(current).next(seg_size).name
        except ValueError:
            break
    return names
