"""get-wal's engine: find a WAL file of a server and stream it out, decompressing on the fly.

Lookup follows Barman's order (:func:`walvault.archive.layout.lookup_order`): the archive
(:class:`~walvault.archive.walstore.WalArchive`, a directory or a bucket), ``incoming/``,
``streaming/``, with ``-P`` the ``.partial`` copies, and the archive once more.  Each
candidate is *opened*, not tested for existence first: once open, the descriptor (or the
GET's stream) keeps the data readable even if archive-wal moves or removes the file, and a
candidate that vanished before the open is simply skipped.  Nothing is written into the
archive: data goes from the reader to the output (``copy_file_range``/``sendfile`` from a
local uncompressed file when nothing needs checking on the way, else through a decoder).

Every byte sent passes :class:`walvault.archive.integrity.PlainCheck` (header against the
name, the cluster's system identifier, the segment size, the digest recorded at archive
time) and the codec's own checksums; a file that fails is an :class:`IntegrityError` (exit
200: PostgreSQL stops the recovery), never "not found".  A ``.partial`` whose start is still
zeros is "not found": pg_receivewal zero-fills a new ``.partial`` to full size before it
writes WAL into it.  When a candidate's stored copy is plainly wrong (bad header, wrong size)
a later candidate may still serve the file, with a warning; if none does, the first problem
is the error.

An encrypted copy (an OpenPGP message: :mod:`walvault.archive.encryption`), whatever the
server's ``encryption`` says, is decrypted by gpg on the way, before decoding: the candidate's
reader becomes gpg's output, and everything after (codec, checks, senders) sees the
compressed plaintext.  A copy that cannot be decrypted (no passphrase command, a wrong
passphrase, no secret key, a damaged message) is a DecryptionError: exit 200, never "not
found", and never a later candidate instead.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

from walvault.archive.encryption import HEAD_LEN, identify_encryption
from walvault.archive.integrity import DIGEST_KEY, PLAIN_SIZE_KEY, IntegrityError, PlainCheck
from walvault.archive.layout import ARCHIVE, lookup_order
from walvault.compression import MAGIC_MAX_LEN, frame_checksummed, identify
from walvault.errors import ArchiveReadError, WalvaultError
from walvault.storage.base import StorageError
from walvault.wal.names import Segment, WalKind, classify, validate_wal_name
from walvault.wal.pagecheck import LONG_HEADER_SIZE, unpack_long_header

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

    from walvault.archive.walstore import WalArchive
    from walvault.config import ServerConfig
    from walvault.storage.base import Reader

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
    "verified_pieces",
]

SEND_CHUNK = 1 << 20
_HEAD_SIZE = max(LONG_HEADER_SIZE, MAGIC_MAX_LEN, 8, HEAD_LEN)  # 8: xz's stream flags
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
    """An open candidate: its reader, where it was found, how it is stored, its checks.

    ``fd`` is the local file's descriptor (-1 for a remote object, or an encrypted file,
    whose ``reader`` is gpg's output): kernel copies and ``pread`` use it.  ``head`` holds
    the first bytes (of the plaintext when ``encrypted``), already read from ``reader``;
    ``size`` is the stored size.
    """

    __slots__ = (
        "check",
        "compression",
        "encrypted",
        "fd",
        "head",
        "kind",
        "name",
        "path",
        "reader",
        "size",
    )

    def __init__(
        self,
        name: str,
        path: str,
        reader: Reader,
        size: int,
        compression: str | None,
        kind: WalKind,
        head: bytes,
        check: PlainCheck,
        encrypted: bool = False,
    ) -> None:
        self.name, self.path, self.reader, self.size = name, path, reader, size
        self.compression, self.kind, self.head = compression, kind, head
        self.check = check
        fileno = getattr(reader, "fileno", None)
        self.fd: int = fileno() if fileno is not None else -1
        self.encrypted = encrypted

    def __repr__(self) -> str:
        return f"FoundWal({self.name!r}, {self.path!r}, {self.compression})"

    @property
    def from_partial(self) -> bool:
        """True when a ``.partial`` file stands in for the requested segment."""
        return self.kind is WalKind.SEGMENT and self.path.endswith(".partial")

    def close(self) -> None:
        """Close the reader (idempotent)."""
        self.reader.close()
        self.fd = -1

    def __enter__(self) -> FoundWal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_local(path: str) -> Reader | None:
    """A reader of the local file ``path``, or None when there is no regular file there."""
    from walvault.storage.base import ObjectInfo
    from walvault.storage.posix import PosixReader

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise WalSendError(f"cannot open '{path}': {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return PosixReader(fd, ObjectInfo(path, st.st_size, st.st_mtime))


def _read_head(reader: Reader, fd: int) -> bytes:
    if fd >= 0:
        return os.pread(fd, _HEAD_SIZE, 0)
    head = b""
    while len(head) < _HEAD_SIZE and (chunk := reader.read(_HEAD_SIZE - len(head))):
        head += chunk
    return head


def _decrypting(server: ServerConfig, reader: Reader, head: bytes, where: str) -> Reader:
    """gpg's plaintext of the encrypted ``reader`` (see the module docstring)."""
    from walvault.archive.encryption import DecryptingReader, Gpg

    return DecryptingReader(Gpg.for_server(server), reader, head, where)


def _found(
    reader: Reader,
    where: str,
    name: str,
    kind: WalKind,
    system_identifier: int | None,
    compression_hint: str | None = None,
    server: ServerConfig | None = None,
) -> FoundWal | None:
    """Wrap an open candidate; None for an unwritten ``.partial``; IntegrityError when an
    uncompressed copy is plainly wrong (checked before anything is sent).  An encrypted
    candidate is decrypted with ``server``'s gpg settings; on any failure the caller closes
    ``reader`` (a decrypting reader made here is closed here)."""
    fileno = getattr(reader, "fileno", None)
    head = _read_head(reader, fileno() if fileno is not None else -1)
    stored = reader
    encrypted = identify_encryption(head) is not None
    if encrypted:
        if server is None:
            raise WalSendError(f"'{where}' is encrypted and cannot be decrypted here")
        reader = _decrypting(server, stored, head, where)
        try:
            head = _read_head(reader, -1)
        except BaseException:
            _detach(reader)
            raise
    try:
        return _wrap(reader, stored, where, name, kind, system_identifier, compression_hint, head)
    except BaseException:
        if reader is not stored:
            _detach(reader)
        raise


def _detach(decrypting: Reader) -> None:
    """Stop gpg of a decrypting reader; its stored reader stays for the caller to close."""
    from walvault.archive.encryption import DecryptingReader

    assert isinstance(decrypting, DecryptingReader)
    decrypting.stop()


def _wrap(
    reader: Reader,
    stored: Reader,
    where: str,
    name: str,
    kind: WalKind,
    system_identifier: int | None,
    compression_hint: str | None,
    head: bytes,
) -> FoundWal | None:
    encrypted = reader is not stored
    compression = identify(head)
    if compression_hint is not None and compression != compression_hint:
        raise IntegrityError(
            f"archived copy of '{name}' at {where} is unusable: its key says {compression_hint} "
            f"but its content is {compression or 'not compressed'}"
        )
    if (
        compression is None
        and kind is WalKind.SEGMENT
        and not encrypted
        and _unwritten_partial(where, head)
    ):
        return None
    metadata = reader.info.metadata
    plain_size = metadata.get(PLAIN_SIZE_KEY)
    check = PlainCheck(
        name,
        where,
        segment=kind is WalKind.SEGMENT,
        partial=kind is WalKind.PARTIAL,
        system_identifier=system_identifier,
        digest=metadata.get(DIGEST_KEY),
        plain_size=int(plain_size) if plain_size and plain_size.isdigit() else None,
        # an OpenPGP message is integrity-protected: gpg checks it to the end
        checksummed=encrypted or frame_checksummed(compression, head),
    )
    found = FoundWal(
        name, where, reader, reader.info.size, compression, kind, head, check, encrypted
    )
    if compression is None and kind is WalKind.SEGMENT:
        _precheck_plain(found)
    return found


def _unwritten_partial(path: str, head: bytes) -> bool:
    """A ``.partial`` pg_receivewal has created but not written WAL into yet."""
    return path.endswith(".partial") and not any(head[:LONG_HEADER_SIZE])


def _precheck_plain(found: FoundWal) -> None:
    """An uncompressed segment's header and size, before anything is sent."""
    probe = PlainCheck(
        found.name, found.path, segment=True, system_identifier=found.check.system_identifier
    )
    probe.feed(found.head[:LONG_HEADER_SIZE])
    if found.encrypted:
        return  # the plaintext's size is known at its end (PlainCheck.finish)
    if probe.segment_size != found.size:
        raise IntegrityError(
            f"archived copy of '{found.name}' at {found.path} is unusable: {found.size} bytes, "
            f"the segment size is {probe.segment_size}"
        )


def _system_identifier(server: ServerConfig) -> int | None:
    """The cluster the archive belongs to (``identity.json``), None before the first contact."""
    from walvault.identity import stored_system_identifier

    return stored_system_identifier(server)


def _candidate(
    server: ServerConfig, archive: WalArchive, place: str, wanted: str
) -> tuple[str, Reader, str | None] | None:
    """Open ``wanted`` at one place of the lookup order: (where, reader, codec of its key)."""
    if place == ARCHIVE:
        try:
            opened = archive.open(wanted)
        except StorageError as exc:
            raise WalSendError(str(exc)) from None
        if opened is None:
            return None
        stored, reader = opened
        hint = stored.compression if archive.cloud else None
        return archive.storage.url(stored.key), reader, hint
    path = os.path.join(place, wanted)
    local = _open_local(path)
    return (path, local, None) if local is not None else None


def open_wal(
    server: ServerConfig,
    name: str,
    *,
    partial: bool = False,
    warn: Warn | None = None,
    archive: WalArchive | None = None,
) -> FoundWal:
    """Open the first usable candidate for ``name``; raise WalNotFound when there is none.

    ``name`` is validated before any path is built (InvalidWalName, exit 3).  A candidate
    that is plainly wrong is skipped with a warning when a later one is usable; when none
    is, its IntegrityError is raised instead of WalNotFound.  A store that fails to answer
    is a WalSendError: never "not found".
    """
    kind = classify(validate_wal_name(name))
    assert kind is not None
    if archive is None:
        from walvault.archive.walstore import WalArchive

        archive = WalArchive(server)
    headed = kind in (WalKind.SEGMENT, WalKind.PARTIAL)
    sysid = _system_identifier(server) if headed else None
    problem: IntegrityError | None = None
    for place, wanted in lookup_order(server, name, partial=partial):
        opened = _candidate(server, archive, place, wanted)
        if opened is None:
            continue
        where, reader, hint = opened
        try:
            found = _found(reader, where, name, kind, sysid, hint, server)
        except IntegrityError as exc:
            reader.close()
            problem = problem or exc
            continue
        except BaseException:
            reader.close()
            raise
        if found is None:
            reader.close()
            continue
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


def _raw_pieces(found: FoundWal) -> Iterator[bytes]:
    """The stored bytes of ``found``, from its start, in ``SEND_CHUNK`` pieces."""
    offset = 0
    try:
        if found.fd >= 0:
            while chunk := os.pread(found.fd, SEND_CHUNK, offset):
                offset += len(chunk)
                yield chunk
        else:
            if found.head:
                offset += len(found.head)
                yield found.head
            while chunk := found.reader.read(SEND_CHUNK):
                offset += len(chunk)
                yield chunk
    except StorageError as exc:
        raise WalSendError(str(exc)) from None
    except OSError as exc:
        raise WalSendError(f"cannot read '{found.path}': {exc.strerror}") from None
    if offset != found.size and not found.encrypted:
        raise WalSendError(f"'{found.path}' changed size while being sent")


class _PieceSource:
    """A ``read``-only file over an iterator of pieces (for decoders and recompression)."""

    def __init__(self, pieces: Iterator[bytes], on_chunk: Callable[[bytes], None] | None = None):
        self._pieces = pieces
        self._rest = b""
        self._on_chunk = on_chunk

    def read(self, size: int = -1, /) -> bytes:
        if not self._rest:
            self._rest = next(self._pieces, b"")
            if self._rest and self._on_chunk is not None:
                self._on_chunk(self._rest)
        if size < 0 or size >= len(self._rest):
            chunk, self._rest = self._rest, b""
        else:
            chunk, self._rest = self._rest[:size], self._rest[size:]
        return chunk


def verified_pieces(found: FoundWal, tee: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
    """The decoded content of ``found``, each piece checked before it is yielded; the
    whole file (size, digest) is checked before the iterator ends.  ``tee`` is given every
    stored (undecoded) chunk as it is read.

    The only way to read an archived file's content: every sender goes through it.
    """
    from walvault import compression as codecs

    check = found.check
    stored = _raw_pieces(found)
    try:
        if found.compression is None:
            pieces: Iterator[bytes] = stored
            if tee is not None:
                pieces = _teed(stored, tee)
        else:
            source = _PieceSource(stored, tee)
            pieces = codecs.iter_decompressed(source, found.compression)  # type: ignore[arg-type]
        for piece in pieces:
            check.feed(piece)
            yield piece
        if found.compression is not None:
            for chunk in stored:  # after the last frame: the decoder would have refused them
                if tee is not None:
                    tee(chunk)
    except codecs.CompressionError as exc:
        raise WalSendError(f"cannot decompress '{found.path}': {exc}") from None
    check.finish()


def _teed(pieces: Iterator[bytes], tee: Callable[[bytes], None]) -> Iterator[bytes]:
    for piece in pieces:
        tee(piece)
        yield piece


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
    plain_copy = stored is None and compression is None and found.fd >= 0
    if plain_copy and found.check.digest is None and not found.check.walks_records:
        # A local uncompressed file: header and size were checked at open, nothing to
        # compute on the way (not a segment): the kernel copies it.
        sent = _copy_raw(found.fd, out_fd, found.size)
        if sent != found.size:
            raise WalSendError(f"'{found.path}' shrank while being sent")
        return sent
    if stored is not None and (keep_compression or stored == compression):
        written = 0

        def forward(chunk: bytes) -> None:
            nonlocal written
            _write_all(out_fd, chunk)
            written += len(chunk)

        for _ in verified_pieces(found, tee=forward):
            pass
        return written
    from walvault import compression as codecs

    with open(out_fd, "wb", closefd=False) as dst:
        plain = verified_pieces(found)
        if compression is not None:
            return codecs.compress_stream(compression, None, _PieceSource(plain), dst)  # type: ignore[arg-type]
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


def segment_size_of(found: FoundWal) -> int | None:
    """The segment size in ``found``'s long page header (decoding its start if needed)."""
    head = found.head
    if found.compression is not None:
        from walvault import compression as codecs

        try:
            head = b""
            source = _PieceSource(_raw_pieces(found))
            for piece in codecs.iter_decompressed(source, found.compression):  # type: ignore[arg-type]
                head += piece
                if len(head) >= LONG_HEADER_SIZE:
                    break
        except (codecs.CompressionError, WalSendError):
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
    from walvault.archive.walstore import WalArchive

    kind = classify(validate_wal_name(name))
    archive = WalArchive(server)
    names: list[str] = []
    seg_size: int | None = None
    current = name
    while len(names) < count:
        try:
            found = open_wal(server, current, archive=archive)
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
