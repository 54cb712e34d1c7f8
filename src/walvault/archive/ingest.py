"""The per-file steps of archive-wal: inspect a staged file, compare twins, store its copy.

Nothing here decides the order of commits (see :mod:`walvault.archive.archiver`); each
function looks at or writes one file, and is safe to call from worker threads.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from walvault.archive import admission, errors_dir
from walvault.archive.admission import Content, read_content
from walvault.archive.encryption import (
    HEAD_LEN,
    DecryptingReader,
    DecryptionError,
    Encryptor,
    Gpg,
    encrypting,
    identify_encryption,
)
from walvault.archive.integrity import DIGEST_KEY, PLAIN_SIZE_KEY, DigestingReader, digest_stream
from walvault.compression import (
    MAGIC_MAX_LEN,
    CompressionError,
    compress_stream,
    identify,
    iter_decompressed,
)
from walvault.config import ServerConfig
from walvault.identity import write_identity
from walvault.storage.base import StorageError
from walvault.wal.header import LONG_HEADER_SIZE, WalHeader, parse_long_header
from walvault.wal.names import WalKind, classify

if TYPE_CHECKING:
    from walvault.archive.gpgkeys import Recipient
    from walvault.archive.walstore import ArchivedFile, WalArchive
    from walvault.storage.base import ObjectInfo, Reader, WriteBatch

_HEAD_BYTES = max(MAGIC_MAX_LEN, LONG_HEADER_SIZE)
_SNIFF_READ = 4096


class Verdict(enum.Enum):
    """What inspecting a staged file concluded."""

    ARCHIVE = "archive"
    FOREIGN = "foreign"
    INVALID = "invalid"
    UNKNOWN = "unknown"
    VANISHED = "vanished"


@dataclass(frozen=True)
class Staged:
    """A file waiting in streaming/ or incoming/, as seen by one ``lstat``."""

    name: str
    path: str
    size: int
    mtime: float
    compression: str | None  # applied by a client, recognised by its magic


@dataclass(frozen=True)
class Inspection:
    """The verdict on a staged file; ``problem`` explains FOREIGN and INVALID."""

    verdict: Verdict
    staged: Staged | None = None
    header: WalHeader | None = None
    problem: str = ""


class _ShortReads:
    """Caps each read, so a decoder asked for a header decodes only a little."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    def read(self, size: int = -1, /) -> bytes:
        limit = _SNIFF_READ if size < 0 else min(size, _SNIFF_READ)
        return self._handle.read(limit)


def decompressed_head(handle: BinaryIO, algorithm: str, size: int = LONG_HEADER_SIZE) -> bytes:
    """The first ``size`` bytes of the decompressed content (fewer if it is shorter)."""
    pieces = iter_decompressed(_ShortReads(handle), algorithm)  # type: ignore[arg-type]
    data = b""
    for piece in pieces:
        data += piece
        if len(data) >= size:
            break
    return data[:size]


_VERDICTS = {None: Verdict.ARCHIVE, errors_dir.FOREIGN: Verdict.FOREIGN}


def _content(handle: BinaryIO, kind: WalKind, head: bytes, staged: Staged, limit: int) -> Content:
    """What :func:`admission.judge` needs of a staged file, reading no more than that:
    the head and ``lstat`` size of a plain segment or headed ``.partial``, the decoded head
    of a compressed segment; everything (up to ``limit``) otherwise."""
    algorithm = staged.compression
    if algorithm is None and staged.size > limit:
        return Content(head[:LONG_HEADER_SIZE], staged.size, over=True)
    if kind is WalKind.SEGMENT and algorithm is not None:
        handle.seek(0)
        return Content(decompressed_head(handle, algorithm), None)
    plain_head = head[:LONG_HEADER_SIZE]
    if algorithm is None and (
        kind is WalKind.SEGMENT or (kind is WalKind.PARTIAL and any(plain_head))
    ):
        return Content(plain_head, staged.size)
    handle.seek(0)
    text = kind in (WalKind.HISTORY, WalKind.BACKUP)
    return read_content(iter_decompressed(handle, algorithm), limit, keep_text=text)


def inspect_staged(
    directory: str,
    name: str,
    *,
    system_identifier: int | None,
    segment_size: int | None = None,
) -> Inspection:
    """Look at one staged file: regular?, compressed?, and may it enter the archive?

    The rules are :mod:`walvault.archive.admission`'s, with the cluster's
    ``system_identifier`` and the archive's ``segment_size`` when they are known.
    """
    path = os.path.join(directory, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Inspection(Verdict.VANISHED)
    kind = classify(name)
    if kind is None or not stat.S_ISREG(st.st_mode):
        return Inspection(Verdict.UNKNOWN)
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below, after an optional decode)
    except FileNotFoundError:
        return Inspection(Verdict.VANISHED)
    with handle:
        head = handle.read(_HEAD_BYTES)
        staged = Staged(name, path, st.st_size, st.st_mtime, identify(head))
        limit = admission.content_limit(kind, segment_size)
        try:
            content = _content(handle, kind, head, staged, limit)
        except CompressionError as exc:
            return Inspection(Verdict.INVALID, staged, problem=str(exc))
    found = admission.judge(
        name, content, system_identifier=system_identifier, segment_size=segment_size
    )
    verdict = _VERDICTS.get(found.kind, Verdict.INVALID)
    return Inspection(verdict, staged, found.header, found.problem)


def archived_segment_size(server: ServerConfig) -> int | None:
    """The segment size of the archive, from the header of its newest segment (None when
    there is none, or it cannot be read)."""
    from walvault.archive.walstore import WalArchive

    archive = WalArchive(server)
    try:
        name = archive.newest_segment()
        twin = archive.find(name) if name is not None else None
        if twin is None:
            return None
        recorded = twin.info.metadata.get(PLAIN_SIZE_KEY, "")
        if recorded.isdigit() and _is_segment_size(int(recorded)):
            return int(recorded)  # admission checked it was one whole segment
        pieces = archived_pieces(archive, twin)
        head = b""
        try:
            for piece in pieces:
                head += piece
                if len(head) >= LONG_HEADER_SIZE:
                    break
        finally:
            pieces.close()
        return parse_long_header(head).segment_size
    except (OSError, ValueError, UnreadableArchive, StorageError):
        return None


def _is_segment_size(size: int) -> bool:
    """A WAL segment size PostgreSQL allows: a power of two from 1 MiB to 1 GiB."""
    return (1 << 20) <= size <= (1 << 30) and size & (size - 1) == 0


class UnreadableArchive(Exception):
    """The archived twin of a file cannot be read or decoded (its magic lies, or it is corrupt)."""


class Vanished(FileNotFoundError):
    """The archived twin was removed while it was being compared (retention, a purge)."""


def _staged_pieces(staged: Staged) -> Generator[bytes, None, None]:
    with open(staged.path, "rb") as handle:
        yield from iter_decompressed(handle, staged.compression)


class _HeadFirst:
    """A reader whose first bytes were already read: gives them back first."""

    def __init__(self, head: bytes, reader: Reader) -> None:
        self._head: bytes | None = head
        self._reader = reader

    def read(self, size: int = -1, /) -> bytes:
        if self._head is not None:
            data, self._head = self._head, None
            return data
        return self._reader.read(size)


_ENCRYPTED_HEAD = max(MAGIC_MAX_LEN, HEAD_LEN)


def _read_up_to(reader: Reader, size: int) -> bytes:
    head = b""
    while len(head) < size and (chunk := reader.read(size - len(head))):
        head += chunk
    return head


def _decoded(reader: Reader, where: str, gpg: Gpg | None) -> Generator[bytes, None, None]:
    """The decoded content of ``reader`` -- decrypted first when it is encrypted and
    ``gpg`` says how (:mod:`walvault.archive.encryption`)."""
    with reader:
        head = _read_up_to(reader, _ENCRYPTED_HEAD)
        source: Reader = reader
        try:
            if identify_encryption(head) is not None:
                if gpg is None:
                    raise UnreadableArchive(f"{where} is encrypted")
                source = DecryptingReader(gpg, reader, head, where)
                head = _read_up_to(source, _ENCRYPTED_HEAD)
            yield from iter_decompressed(_HeadFirst(head, source), identify(head))  # type: ignore[arg-type]
        except (CompressionError, StorageError, DecryptionError) as exc:
            raise UnreadableArchive(f"{where}: {exc}") from exc
        finally:
            if source is not reader:
                assert isinstance(source, DecryptingReader)
                source.stop()


def archived_pieces(archive: WalArchive, twin: ArchivedFile) -> Generator[bytes, None, None]:
    """The decoded content of an archived file, decrypted if need be (UnreadableArchive if
    it cannot be, e.g. encrypted without encryption_passphrase_command)."""
    where = archive.storage.url(twin.key)
    try:
        reader = archive.storage.open(twin.key)
    except StorageError as exc:
        raise UnreadableArchive(str(exc)) from exc
    if reader is None:
        raise Vanished(f"{where} vanished")
    yield from _decoded(reader, where, Gpg.for_server(archive.server))


def file_pieces(path: str) -> Generator[bytes, None, None]:
    """The decoded content of a local file (incoming/, errors/); UnreadableArchive when it
    does not decode, FileNotFoundError when it is gone."""
    from walvault.storage.base import ObjectInfo
    from walvault.storage.posix import PosixReader

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    yield from _decoded(PosixReader(fd, ObjectInfo(path, 0, 0.0)), path, None)


def same_content(existing: Iterator[bytes], staged: Staged) -> bool:
    """Whether ``existing`` (decoded pieces of a copy: :func:`archived_pieces`,
    :func:`file_pieces`) and the staged file hold the same (decompressed) bytes.

    Compared piece by piece while decoding, without temporary files.  A staged file that
    does not decode is different; an existing copy that does not raises UnreadableArchive.
    """
    left = existing
    right = _staged_pieces(staged)
    try:
        return _equal_streams(left, right)
    except CompressionError:
        return False
    finally:
        close = getattr(left, "close", None)
        if close is not None:
            close()
        right.close()


def _equal_streams(left: Iterator[bytes], right: Iterator[bytes]) -> bool:
    a = b = memoryview(b"")
    while True:
        if not a:
            a = memoryview(next(left, b""))
        if not b:
            b = memoryview(next(right, b""))
        if not a or not b:
            return not a and not b
        n = min(len(a), len(b))
        if a[:n] != b[:n]:
            return False
        a, b = a[n:], b[n:]


class Encrypt:
    """How archive-wal encrypts: gpg and the key, resolved once per run."""

    __slots__ = ("gpg", "recipient")

    def __init__(self, gpg: Gpg, recipient: Recipient) -> None:
        self.gpg, self.recipient = gpg, recipient


def store_compressed(
    staged: Staged,
    key: str,
    algorithm: str | None,
    level: str | int | None,
    batch: WriteBatch,
    encrypt: Encrypt | None = None,
) -> ObjectInfo:
    """Compress the (uncompressed) ``staged`` file into ``key`` of the archive's batch --
    and encrypt the compressed stream when ``encrypt`` says to -- recording the digest of
    its plain content; the source mtime is kept.  Runs in a worker thread: compression,
    gpg and the data fsync overlap other files'.  ``algorithm`` None (only with ``encrypt``)
    encrypts the file as it is."""

    def write(handle: BinaryIO) -> dict[str, str]:
        with open(staged.path, "rb") as source:
            plain = DigestingReader(source)
            if encrypt is None:
                compress_stream(algorithm, level, plain, handle)  # type: ignore[arg-type]
            else:
                with encrypting(encrypt.gpg, encrypt.recipient, handle) as sink:
                    compress_stream(algorithm, level, plain, sink)  # type: ignore[arg-type]
        return plain.metadata()

    return batch.put_written(key, write, mtime=staged.mtime)


def store_as_is(
    staged: Staged, key: str, batch: WriteBatch, encrypt: Encrypt | None = None
) -> ObjectInfo:
    """Store ``staged`` unchanged (uncompressed, or compressed by the sending client) into
    ``key`` -- encrypted when ``encrypt`` says to -- recording the digest of its plain
    content: the file is decoded whole, so a corrupt compressed file is refused here
    (CompressionError) rather than served later."""
    metadata = digest_stream(_staged_pieces(staged))
    if encrypt is None:
        return batch.put_file(key, staged.path, metadata=metadata, mtime=staged.mtime)

    def write(handle: BinaryIO) -> dict[str, str]:
        with open(staged.path, "rb") as source:
            encryptor = Encryptor(encrypt.gpg, encrypt.recipient, handle, source.fileno())
            try:
                encryptor.finish()  # gpg reads the file itself
            except BaseException:
                encryptor.abort()
                raise
        return metadata

    return batch.put_written(key, write, mtime=staged.mtime)


def stored_format(archive: WalArchive, twin: ArchivedFile) -> tuple[bool, str | None, str | None]:
    """(still there, codec, encryption) of an archived file, told by its first bytes: an
    encrypted file's codec is not known without decrypting it (None, as Barman records)."""
    from walvault.compression import identify as identify_codec

    reader = archive.storage.open(twin.key)
    if reader is None:
        return False, None, None
    with reader:
        head = _read_up_to(reader, _ENCRYPTED_HEAD)
    encryption = identify_encryption(head)
    if encryption is not None:
        return True, None, encryption
    return True, identify_codec(head), None


def same_as_archived(archive: WalArchive, twin: ArchivedFile, staged: Staged) -> bool:
    """Whether the archived ``twin`` holds the content of ``staged``.

    An encrypted twin whose plain digest was recorded (walvault wrote it) is compared by that
    digest and size: no secret key needed, as on a host that only archives.  Any other is
    decoded -- decrypted if need be -- and compared piece by piece (:func:`same_content`);
    UnreadableArchive when it cannot be.
    """
    metadata = twin.info.metadata
    digest, size = metadata.get(DIGEST_KEY), metadata.get(PLAIN_SIZE_KEY)
    if digest and size and size.isdigit():
        present, _, encryption = stored_format(archive, twin)
        if not present:
            raise Vanished(f"{archive.storage.url(twin.key)} vanished")
        if encryption is not None:
            try:
                mine = digest_stream(_staged_pieces(staged))
            except CompressionError:
                return False
            return mine[DIGEST_KEY] == digest and mine[PLAIN_SIZE_KEY] == size
    return same_content(archived_pieces(archive, twin), staged)


def record_identity(server: ServerConfig, header: WalHeader) -> bool:
    """Write ``identity.json`` (Barman's format) from a segment header; False if the
    PostgreSQL version cannot be told from the header's magic."""
    if header.pg_version is None:
        return False
    write_identity(server, header.system_identifier, header.pg_version)
    return True
