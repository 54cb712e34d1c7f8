"""The per-file steps of archive-wal: inspect a staged file, compare twins, write its copy.

Nothing here decides the order of commits (see :mod:`walvault.archive.archiver`); each
function looks at or writes one file, and is safe to call from worker threads.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from walvault.archive import admission, errors_dir
from walvault.archive.admission import Content, read_content
from walvault.archive.compression import (
    MAGIC_MAX_LEN,
    CompressionError,
    compress_stream,
    identify,
    identify_file,
    iter_decompressed,
)
from walvault.archive.layout import archived_path, newest_archived_segment
from walvault.config import ServerConfig
from walvault.fs import SyncBatch, durable_write_from
from walvault.identity import write_identity
from walvault.wal.header import LONG_HEADER_SIZE, WalHeader, parse_long_header
from walvault.wal.names import WalKind, classify

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
    name = newest_archived_segment(server)
    if name is None:
        return None
    try:
        with open(archived_path(server, name), "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            algorithm = identify(head)
            if algorithm is not None:
                handle.seek(0)
                head = decompressed_head(handle, algorithm)
        return parse_long_header(head).segment_size
    except (OSError, ValueError, CompressionError):
        return None


class UnreadableArchive(Exception):
    """The archived twin of a file cannot be decoded (its magic lies, or it is corrupt)."""


def _pieces(path: str, algorithm: str | None, archived: bool) -> Generator[bytes, None, None]:
    with open(path, "rb") as handle:
        try:
            yield from iter_decompressed(handle, algorithm)
        except CompressionError as exc:
            if archived:
                raise UnreadableArchive(f"{path}: {exc}") from exc
            raise


def same_content(archived: str, staged: Staged) -> bool:
    """Whether the archived twin and the staged file hold the same (decompressed) bytes.

    Compared piece by piece while decoding, without temporary files.  A staged file that
    does not decode is different; an archived one that does not raises UnreadableArchive.
    """
    archived_algo = identify_file(archived)
    plain = archived_algo is None and staged.compression is None
    if plain and os.path.getsize(archived) != staged.size:
        return False
    left = _pieces(archived, archived_algo, True)
    right = _pieces(staged.path, staged.compression, False)
    try:
        return _equal_streams(left, right)
    except CompressionError:
        return False
    finally:
        left.close()
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


def write_archived(
    staged: Staged,
    dst: str,
    algorithm: str | None,
    level: str | int | None,
    batch: SyncBatch,
) -> int:
    """Write ``staged`` (compressed with ``algorithm``, or copied) to a temporary file
    beside ``dst``, fsynced here so the sync overlaps other work; ``batch.flush()`` renames
    it into place.  The source mtime is kept.  Returns the size written.
    """
    with open(staged.path, "rb") as source:

        def writer(handle: BinaryIO) -> None:
            compress_stream(algorithm, level, source, handle)
            handle.flush()
            # the mtime first: changed after the fsync, it would leave the inode dirty
            # and make the batch's fsync of this file wait for a journal commit
            os.utime(handle.fileno(), (staged.mtime, staged.mtime))
            os.fsync(handle.fileno())

        return durable_write_from(dst, writer, batch=batch)


def record_identity(server: ServerConfig, header: WalHeader) -> bool:
    """Write ``identity.json`` (Barman's format) from a segment header; False if the
    PostgreSQL version cannot be told from the header's magic."""
    if header.pg_version is None:
        return False
    write_identity(server, header.system_identifier, header.pg_version)
    return True
