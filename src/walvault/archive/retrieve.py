"""get-wal's engine: find a WAL file of a server and stream it out, decompressing on the fly.

Lookup follows :func:`walvault.archive.layout.lookup_paths`.  Each candidate is *opened*
(not tested for existence first): once open, the descriptor keeps the data readable even
if archive-wal moves or removes the file, and a candidate that vanished before the open
is simply skipped.  Nothing is written into the archive: data goes from the descriptor to
the output (``sendfile`` when no codec is involved, else through a streaming decoder).

Every byte sent passes :class:`walvault.archive.integrity.PlainCheck` (header against the
name, the cluster's system identifier, the segment size, a recorded digest) and the codec's
own checksums; a file that fails is an :class:`IntegrityError` (exit 200: PostgreSQL stops
the recovery), never "not found".  A ``.partial`` whose start is still zeros is "not found":
pg_receivewal zero-fills a new ``.partial`` to full size before it writes WAL into it.  When
a candidate's stored copy is plainly wrong (bad header, wrong size) a later candidate may
still serve the file, with a warning; if none does, the first problem is the error.
"""

from __future__ import annotations

import errno
import os
import stat

from walvault.archive.compression import MAGIC_MAX_LEN, frame_checksummed, identify
from walvault.archive.integrity import IntegrityError, PlainCheck
from walvault.archive.layout import lookup_paths
from walvault.errors import ArchiveReadError, WalvaultError
from walvault.wal.names import Segment, WalKind, classify, validate_wal_name
from walvault.wal.pagecheck import LONG_HEADER_SIZE, unpack_long_header

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
    "IntegrityError",
    "WalNotFound",
    "WalSendError",
    "open_wal",
    "peek",
    "send",
    "send_fd",
]

SEND_CHUNK = 1 << 20
_HEAD_SIZE = max(LONG_HEADER_SIZE, MAGIC_MAX_LEN, 8)  # 8: xz's stream flags
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


class WalSendError(ArchiveReadError):
    """The file exists but could not be read or decoded (exit 200: never "not found")."""


class FoundWal:
    """An open candidate: the descriptor, where it was found and how it is stored."""

    __slots__ = ("check", "compression", "fd", "head", "kind", "name", "path", "size")

    def __init__(
        self,
        name: str,
        path: str,
        fd: int,
        size: int,
        compression: str | None,
        kind: WalKind,
        head: bytes,
        check: PlainCheck,
    ) -> None:
        self.name, self.path, self.fd, self.size = name, path, fd, size
        self.compression, self.kind, self.head = compression, kind, head
        self.check = check

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


def _unwritten_partial(path: str, head: bytes) -> bool:
    """A ``.partial`` pg_receivewal has created but not written WAL into yet."""
    return path.endswith(".partial") and not any(head[:LONG_HEADER_SIZE])


def _open_candidate(
    path: str, name: str, kind: WalKind, system_identifier: int | None
) -> FoundWal | None:
    """Open ``path`` as a copy of ``name``: None when it is absent, not a regular file, or an
    unwritten ``.partial``; IntegrityError when an uncompressed copy is plainly wrong."""
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
        if compression is None and kind is WalKind.SEGMENT and _unwritten_partial(path, head):
            os.close(fd)
            return None
        check = PlainCheck(
            name,
            path,
            segment=kind is WalKind.SEGMENT,
            partial=kind is WalKind.PARTIAL,
            system_identifier=system_identifier,
            checksummed=frame_checksummed(compression, head),
        )
        found = FoundWal(name, path, fd, info.st_size, compression, kind, head, check)
        if compression is None and kind is WalKind.SEGMENT:
            _precheck_plain(found)
    except BaseException:
        os.close(fd)
        raise
    return found


def _precheck_plain(found: FoundWal) -> None:
    """An uncompressed segment's header and size, before anything is sent."""
    probe = PlainCheck(
        found.name, found.path, segment=True, system_identifier=found.check.system_identifier
    )
    probe.feed(found.head[:LONG_HEADER_SIZE])
    if probe.segment_size != found.size:
        raise IntegrityError(
            f"archived copy of '{found.name}' at {found.path} is unusable: {found.size} bytes, "
            f"the segment size is {probe.segment_size}"
        )


def _system_identifier(server: ServerConfig) -> int | None:
    """The cluster the archive belongs to (``identity.json``), None before the first contact."""
    from walvault.identity import stored_system_identifier

    return stored_system_identifier(server)


def open_wal(
    server: ServerConfig, name: str, *, partial: bool = False, warn: Warn | None = None
) -> FoundWal:
    """Open the first usable candidate for ``name``; raise WalNotFound when there is none.

    ``name`` is validated before any path is built (InvalidWalName, exit 3).  A candidate
    that is plainly wrong is skipped with a warning when a later one is usable; when none
    is, its IntegrityError is raised instead of WalNotFound.
    """
    kind = classify(validate_wal_name(name))
    assert kind is not None
    headed = kind in (WalKind.SEGMENT, WalKind.PARTIAL)
    sysid = _system_identifier(server) if headed else None
    problem: IntegrityError | None = None
    for path in lookup_paths(server, name, partial=partial):
        try:
            found = _open_candidate(path, name, kind, sysid)
        except IntegrityError as exc:
            problem = problem or exc
            continue
        if found is not None:
            if problem is not None and warn is not None:
                warn(f"{problem.message}; serving {found.path} instead")
            return found
    if problem is not None:
        raise problem
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


def _reader(fd: int) -> BinaryIO:
    os.lseek(fd, 0, os.SEEK_SET)
    return open(fd, "rb", buffering=0, closefd=False)


def _raw_pieces(found: FoundWal) -> Iterator[bytes]:
    """The stored bytes of ``found``, from its start, in ``SEND_CHUNK`` pieces."""
    offset = 0
    while chunk := os.pread(found.fd, SEND_CHUNK, offset):
        offset += len(chunk)
        yield chunk
    if offset != found.size:
        raise WalSendError(f"'{found.path}' changed size while being sent")


def verified_pieces(found: FoundWal) -> Iterator[bytes]:
    """The decoded content of ``found``, each piece checked before it is yielded; the
    whole file (size, digest) is checked before the iterator ends.

    The only way to read an archived file's content: every sender goes through it.
    """
    from walvault.archive import compression as codecs

    check = found.check
    try:
        with _reader(found.fd) as src:
            pieces = (
                codecs.iter_decompressed(src, found.compression)
                if found.compression is not None
                else _raw_pieces(found)
            )
            for piece in pieces:
                check.feed(piece)
                yield piece
    except codecs.CompressionError as exc:
        raise WalSendError(f"cannot decompress '{found.path}': {exc}") from None
    check.finish()


def _tee_verified(found: FoundWal, out_fd: int) -> int:
    """Send the stored bytes as they are while decoding them for the checks."""
    from walvault.archive import compression as codecs

    written = 0
    stored = _raw_pieces(found)

    class _Source:
        def read(self, size: int = -1, /) -> bytes:
            nonlocal written
            chunk = next(stored, b"")
            if chunk:
                _write_all(out_fd, chunk)
                written += len(chunk)
            return chunk

    try:
        for piece in codecs.iter_decompressed(_Source(), found.compression):  # type: ignore[arg-type]
            found.check.feed(piece)
    except codecs.CompressionError as exc:
        raise WalSendError(f"cannot decompress '{found.path}': {exc}") from None
    for chunk in stored:  # bytes after the last frame: the decoder would have refused them
        _write_all(out_fd, chunk)
        written += len(chunk)
    found.check.finish()
    return written


def send_fd(
    found: FoundWal,
    out_fd: int,
    *,
    compression: str | None = None,
    keep_compression: bool = False,
) -> int:
    """Write ``found`` to ``out_fd`` (decompressed unless asked otherwise); return bytes written.

    ``compression`` (gzip, bzip2) recompresses the output; ``keep_compression`` sends the
    stored bytes as they are (still decoded on the side, for the checks).  Whatever the
    mode, the content is verified (:func:`verified_pieces`): on an IntegrityError or
    WalSendError the caller must discard what was written.  Errors writing ``out_fd`` are
    left as OSError for the caller.
    """
    stored = found.compression
    if stored is None and compression is None and found.check.digest is None:
        # Header and size were checked at open; nothing more to check on the way.
        sent = _copy_raw(found.fd, out_fd, found.size)
        if sent != found.size:
            raise WalSendError(f"'{found.path}' shrank while being sent")
        return sent
    if stored is not None and (keep_compression or stored == compression):
        return _tee_verified(found, out_fd)
    from walvault.archive import compression as codecs

    with open(out_fd, "wb", closefd=False) as dst:
        plain = verified_pieces(found)
        if compression is not None:
            return codecs.compress_stream(compression, None, _IterSource(plain), dst)  # type: ignore[arg-type]
        written = 0
        for piece in plain:
            written += dst.write(piece)
        return written


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


class _IterSource:
    """A ``read``-only file over an iterator of pieces (for recompressing on the fly)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._rest = b""

    def read(self, size: int = -1, /) -> bytes:
        if not self._rest:
            self._rest = next(self._pieces, b"")
        if size < 0 or size >= len(self._rest):
            chunk, self._rest = self._rest, b""
        else:
            chunk, self._rest = self._rest[:size], self._rest[size:]
        return chunk


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
        except (WalNotFound, ArchiveReadError):
            break  # a peek is advisory: a bad copy is refused when it is fetched
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
