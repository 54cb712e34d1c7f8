"""What every byte leaving the archive is checked against before it reaches PostgreSQL.

One checker, :class:`PlainCheck`, is fed the *decoded* content of a file as it streams out
(get-wal, the restore client in local mode, the prefetcher), whatever store or codec it came
from, and raises :class:`IntegrityError` as soon as something is wrong and at the end:

* a segment (or a ``.partial`` standing in for one) must start with a long page header that
  matches its name -- page address and timeline (a valid segment stored under another name is
  refused), the system identifier of the cluster the archive belongs to (``identity.json``),
  a segment size that is a power of two -- and be exactly that size long;
* when a digest of the plain content was recorded at archive time, the content must match it
  (xxh3-128: ~0.5 ms per 16 MiB, against ~10 ms for SHA-256 here);
* a segment with neither a recorded digest nor a checksum in its compressed frames (Barman's
  uncompressed, zstd or lz4 files, which carry no integrity data of their own) has its WAL
  record chain walked before it is handed out (:func:`walvault.wal.records.walk_segment`:
  every page header, record length, ``xl_prev`` link and CRC-32C): a flipped bit breaks a
  record's CRC.  What a single segment cannot prove -- the bytes continuing a record from
  the previous segment, and the start of the record cut by its end -- is left to
  PostgreSQL's own reader and to ``walvault verify``, which walks the chain across
  segments.  This costs ~15-250 ms per 16 MiB segment, on such files only.

The decoders verify the frames' own checksums (gzip, bzip2, xz always; zstd and lz4 frames
written by walvault carry one); a mismatch surfaces as a decoding error before the last
piece.  Every refusal here means "the archive holds something wrong", never "no such file":
restore_command exits so that PostgreSQL stops instead of ending recovery.

xxhash is imported when a digest is to be checked or made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from walvault.errors import ArchiveReadError
from walvault.wal.pagecheck import LONG_HEADER_SIZE, header_problems, unpack_long_header

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import BinaryIO

    from xxhash import xxh3_128

#: The digest algorithm recorded with archived files, as written in metadata: ``<algo>:<hex>``.
DIGEST_ALGORITHM = "xxh3-128"
#: Metadata keys (object metadata on S3, the sidecar of the posix store).
DIGEST_KEY = "walvault-digest"
PLAIN_SIZE_KEY = "walvault-plain-size"


class IntegrityError(ArchiveReadError):
    """An archived file is not what its name promises (wrong, corrupt or foreign content)."""


def new_hasher() -> xxh3_128:
    """A fresh hasher of the digest algorithm (``update``/``hexdigest``)."""
    import xxhash

    return xxhash.xxh3_128()


def digest_text(hasher: xxh3_128) -> str:
    """``xxh3-128:<32 hex digits>`` of what ``hasher`` was fed."""
    return f"{DIGEST_ALGORITHM}:{hasher.hexdigest()}"


def digest_of(data: bytes) -> str:
    """The digest text of ``data`` (tests, small files)."""
    hasher = new_hasher()
    hasher.update(data)
    return digest_text(hasher)


class PlainCheck:
    """Checks one file's decoded content, piece by piece (see the module docstring).

    ``name`` is the requested WAL name (a segment name when a ``.partial`` stands in for
    it), ``where`` names the stored copy in messages.  ``segment``: the content must be one
    whole segment (a segment, or a ``.partial`` standing in for one); ``partial``: a
    ``.partial`` served as itself, whose header is checked unless it is still zeros.
    ``system_identifier`` is the cluster's
    (None when the archive has not recorded one yet); ``digest`` the recorded
    ``xxh3-128:...`` text, if any; ``checksummed`` whether the stored frames carry their own
    content checksum.
    """

    __slots__ = (
        "_hasher",
        "_head",
        "_kept",
        "_size",
        "checksummed",
        "digest",
        "name",
        "partial",
        "plain_size",
        "segment",
        "segment_size",
        "system_identifier",
        "where",
    )

    def __init__(
        self,
        name: str,
        where: str,
        *,
        segment: bool = False,
        partial: bool = False,
        system_identifier: int | None = None,
        digest: str | None = None,
        plain_size: int | None = None,
        checksummed: bool = False,
    ) -> None:
        self.name, self.where = name, where
        self.segment, self.partial = segment, partial
        self.system_identifier = system_identifier
        self.digest, self.plain_size, self.checksummed = digest, plain_size, checksummed
        self.segment_size: int | None = None
        self._head = b""
        self._size = 0
        self._hasher: xxh3_128 | None = None
        # nothing else protects this segment: keep it to walk its records at the end
        self._kept: bytearray | None = (
            bytearray() if segment and digest is None and not checksummed else None
        )
        if digest is not None:
            if not digest.startswith(DIGEST_ALGORITHM + ":"):
                raise IntegrityError(
                    f"{where}: recorded digest {digest[:40]!r} is not {DIGEST_ALGORITHM}"
                )
            self._hasher = new_hasher()

    @property
    def protected(self) -> bool:
        """True when the content is covered by a digest or by the frames' own checksums."""
        return self.digest is not None or self.checksummed

    def _fail(self, why: str) -> IntegrityError:
        return IntegrityError(f"archived copy of '{self.name}' at {self.where} is unusable: {why}")

    def feed(self, piece: bytes | bytearray | memoryview) -> None:
        """Account for the next piece of decoded content (raises on a bad header at once)."""
        if self._hasher is not None:
            self._hasher.update(piece)
        if self._kept is not None:
            self._kept += piece
        if len(self._head) < LONG_HEADER_SIZE:
            self._head += bytes(piece[: LONG_HEADER_SIZE - len(self._head)])
            if len(self._head) >= LONG_HEADER_SIZE and self._headed():
                self._check_header()
        self._size += len(piece)
        if self.segment_size is not None and self._size > self.segment_size:
            raise self._fail(f"longer than the segment size {self.segment_size}")

    def _headed(self) -> bool:
        """Whether the content must start with a long page header for the name."""
        if self.segment:
            return True
        return self.partial and any(self._head)

    def _check_header(self) -> None:
        try:
            fields = unpack_long_header(self._head)
        except ValueError as exc:
            raise self._fail(str(exc)) from None
        problems = header_problems(fields, self.name, system_identifier=self.system_identifier)
        if problems:
            raise self._fail("; ".join(problems))
        self.segment_size = fields[6]

    def finish(self) -> int:
        """After the last piece: size and digest; returns the plain size."""
        if self.segment:
            if self.segment_size is None:
                self._check_header()  # too short for a header: says why
            if self._size != self.segment_size:
                raise self._fail(f"{self._size} bytes, the segment size is {self.segment_size}")
        if self.plain_size is not None and self._size != self.plain_size:
            raise self._fail(f"{self._size} bytes, {self.plain_size} were archived")
        if self._hasher is not None:
            got = digest_text(self._hasher)
            if got != self.digest:
                raise self._fail(f"content digest {got} does not match the recorded {self.digest}")
        if self._kept is not None and self.segment_size is not None:
            self._walk(self._kept, self.segment_size)
        return self._size

    def _walk(self, data: bytearray, segment_size: int) -> None:
        """The record chain of an otherwise unprotected segment (see the module docstring)."""
        from walvault.wal.records import walk_segment

        walked = walk_segment(
            data,
            self.name[:24],
            segment_size=segment_size,
            system_identifier=self.system_identifier,
            partial=self.where.endswith(".partial"),
        )
        if walked.problems:
            raise self._fail(f"its WAL records are damaged: {walked.problems[0]}")

    @property
    def walks_records(self) -> bool:
        """True when the content must be read whole to walk its records (no kernel copy)."""
        return self._kept is not None


class DigestingReader:
    """A binary file that digests what is read through it (for archive-wal's compressors).

    Passes ``read``/``readinto`` and the size probing of
    :func:`walvault.compression.compress_stream` (``seekable``, ``tell``, ``seek``)
    through to ``handle``; :meth:`metadata` gives the digest and plain size once the whole
    file was read.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._hasher = new_hasher()
        self.size = 0
        self.name = getattr(handle, "name", "the source file")

    def read(self, size: int = -1, /) -> bytes:
        data = self._handle.read(size)
        self._hasher.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        count = self._handle.readinto(buffer)  # type: ignore[attr-defined]
        view = memoryview(buffer)[:count]
        self._hasher.update(view)
        self.size += count
        return int(count)

    def seekable(self) -> bool:
        return self._handle.seekable()

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = 0, /) -> int:
        if self.size:
            raise ValueError("cannot seek a digesting reader once it was read")
        return self._handle.seek(offset, whence)

    def metadata(self) -> dict[str, str]:
        """The archive's metadata of what was read (see walstore.file_metadata)."""
        return {DIGEST_KEY: digest_text(self._hasher), PLAIN_SIZE_KEY: str(self.size)}


def digest_stream(pieces: Iterable[bytes]) -> dict[str, str]:
    """The archive's metadata (digest, plain size) of content given piece by piece."""
    hasher = new_hasher()
    size = 0
    for piece in pieces:
        hasher.update(piece)
        size += len(piece)
    return {DIGEST_KEY: digest_text(hasher), PLAIN_SIZE_KEY: str(size)}
