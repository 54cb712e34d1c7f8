"""WAL compression codecs (gzip, bzip2, xz, zstd, lz4) as bounded-memory streaming filters.

Each codec's module is imported when that codec is first used, so identifying a file or
reading an uncompressed one costs no codec imports (get-wal's start-up budget).
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, cast

from walvault.errors import WalvaultError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import IO, Protocol

    from _typeshed import ReadableBuffer, WriteableBuffer

    class _Compressor(Protocol):
        def compress(self, data: ReadableBuffer, /) -> bytes: ...
        def flush(self) -> bytes: ...

    class _Decoder(Protocol):
        eof: bool

        def feed(self, data: bytes) -> Iterator[bytes]: ...
        def leftover(self) -> bytes: ...

    class _NeedsInput(Protocol):
        @property
        def eof(self) -> bool: ...
        @property
        def needs_input(self) -> bool: ...
        @property
        def unused_data(self) -> bytes | None: ...
        def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


CHUNK_SIZE = 1 << 20
# Decoded pieces stay below glibc's mmap threshold (128 KiB): bigger ones are each mapped,
# faulted in page by page and unmapped again, which made decoding a 16 MiB zstd segment
# take ~14 ms instead of ~5 ms here.  zstd cannot cap the output of one call, so it is fed
# slices of input small enough for WAL's ~10-20x ratios instead.
_PIECE_SIZE = 64 << 10
_ZSTD_SLICE = 4 << 10

ALGORITHMS: tuple[str, ...] = ("gzip", "bzip2", "xz", "zstd", "lz4")
ALIASES: dict[str, str] = {"pygzip": "gzip", "pigz": "gzip", "pybzip2": "bzip2"}
# algorithm -> (low, medium, high, minimum, maximum), as Barman maps ``compression_level``.
# gzip differs on purpose: levels 1-3 are ISA-L's (igzip), 4-9 zlib-ng's, and "medium" is 2:
# on PostgreSQL WAL, ISA-L level 2 compresses ~7x faster than zlib-ng's level 6 (~20x faster
# than Python's gzip, Barman's) for files ~10 % larger. ``compression_level = 6`` is Barman's.
# zstd keeps Barman's 4: zstd's own default, 3, was only 5-7 % faster on real WAL (157
# against 146 segments/s on two cores, in memory) for files 0.5 % larger -- not worth
# archives that differ from Barman's for the same configuration.
LEVELS: dict[str, tuple[int, int, int, int, int]] = {
    "gzip": (1, 2, 9, 1, 9),
    "bzip2": (1, 5, 9, 1, 9),
    "xz": (1, 3, 5, 1, 9),
    "zstd": (1, 4, 9, -22, 22),
    "lz4": (0, 6, 10, 0, 16),
}
_NAMED_LEVELS = {"low": 0, "medium": 1, "high": 2}

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b\x08", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
)
MAGIC_MAX_LEN = max(len(magic) for magic, _ in _MAGICS)


class CompressionError(WalvaultError):
    """Compressed data is corrupt, truncated or not in the expected format (or a file
    changed size while it was being compressed)."""


def canonical_algorithm(name: str | None) -> str | None:
    """Map a configured compression name to its canonical algorithm; None means no compression."""
    if name is None:
        return None
    key = name.strip().lower()
    if key in ("", "none"):
        return None
    key = ALIASES.get(key, key)
    if key not in ALGORITHMS:
        accepted = ", ".join([*ALGORITHMS, *ALIASES, "none"])
        raise ValueError(f"unsupported compression {name!r}: accepted values are {accepted}")
    return key


def resolve_level(algorithm: str | None, level: str | int | None) -> int:
    """Map ``low|medium|high|<int>`` (None = medium) to a codec level clamped to its range."""
    algo = canonical_algorithm(algorithm)
    if algo is None:
        return 0
    low, medium, high, minimum, maximum = LEVELS[algo]
    if level is None:
        return medium
    if isinstance(level, str):
        text = level.strip().lower()
        if text in _NAMED_LEVELS:
            return (low, medium, high)[_NAMED_LEVELS[text]]
        try:
            level = int(text)
        except ValueError:
            raise ValueError(
                f"invalid compression level {level!r}: use low, medium, high or an integer"
            ) from None
    return max(minimum, min(maximum, level))


def identify(head: bytes) -> str | None:
    """Name the algorithm whose magic number starts ``head`` (None for anything else)."""
    for magic, algo in _MAGICS:
        if head.startswith(magic):
            return algo
    return None


def frame_checksummed(algorithm: str | None, head: bytes) -> bool:
    """Whether a stream of ``algorithm`` starting with ``head`` carries a content checksum that
    its decoder verifies.

    gzip (CRC-32), bzip2 (block and stream CRCs) and xz (a check of the content, CRC-64 by
    default) always do; zstd and lz4 only when the frame header says so (zstd's frame header
    descriptor bit 2, lz4's FLG bit 2): walvault writes them with it, Barman without.
    Uncompressed data never does.  Only the first frame of ``head`` is looked at.
    """
    if algorithm in ("gzip", "bzip2"):
        return True
    if algorithm == "xz":
        return len(head) > 7 and head[7] & 0x0F != 0  # stream flags: check type, 0 = none
    if algorithm in ("zstd", "lz4"):
        return len(head) > 4 and head[4] & 0x04 != 0
    return False


def identify_file(path: str | os.PathLike[str]) -> str | None:
    """Read the first bytes of the file at ``path`` and :func:`identify` them."""
    with open(path, "rb") as handle:
        return identify(handle.read(MAGIC_MAX_LEN))


class _Lz4Compressor:
    """Adapts lz4.frame's begin/compress/flush protocol to compress/flush."""

    def __init__(self, level: int) -> None:
        import lz4.frame

        # content_checksum: the frame ends with an XXH32 of the content, which every LZ4
        # decoder verifies; without it a flipped bit decodes into wrong WAL silently.
        self._ctx = lz4.frame.LZ4FrameCompressor(compression_level=level, content_checksum=True)
        self._header: bytes = self._ctx.begin()

    def compress(self, data: ReadableBuffer, /) -> bytes:
        out: bytes = self._ctx.compress(data)
        if self._header:
            out, self._header = self._header + out, b""
        return out

    def flush(self) -> bytes:
        out: bytes = self._ctx.flush()
        return self._header + out


ISAL_MAX_LEVEL = 3


def _gzip_compressor(level: int) -> _Compressor:
    """A gzip-container deflate stream: ISA-L for levels 1-3 (when installed), else zlib-ng."""
    if level <= ISAL_MAX_LEVEL:
        try:
            from isal import isal_zlib
        except ImportError:  # pragma: no cover - isal is a dependency; keep working without
            pass
        else:
            return isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
    from zlib_ng import zlib_ng

    return zlib_ng.compressobj(level, zlib_ng.DEFLATED, 31)


def _new_compressor(algo: str, level: int, size: int | None = None) -> _Compressor:
    """Create a fresh, unshared compressor (so concurrent threads never share state).

    ``size``, when known, is the exact number of bytes that will be fed (zstd uses it).
    """
    if algo == "gzip":
        obj: _Compressor = _gzip_compressor(level)
    elif algo == "bzip2":
        import bz2

        obj = bz2.BZ2Compressor(level)
    elif algo == "xz":
        import lzma

        obj = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=level)
    elif algo == "zstd":
        pledged = -1 if size is None else size  # -1: unknown
        # write_checksum: an XXH64 of the content closes the frame and the decoder checks it;
        # without it (python-zstandard's default, and Barman's files) most bit flips decode
        # into wrong WAL without an error.
        import zstandard

        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        obj = cast("_Compressor", compressor.compressobj(size=pledged))
    else:
        obj = _Lz4Compressor(level)
    return obj


def _size_left(src: IO[bytes]) -> int | None:
    """Bytes left to read in ``src`` if it can tell (a file, memory), else None (a pipe)."""
    try:
        if not src.seekable():
            return None
        position = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(position)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return max(0, end - position)


def _pieces(src: IO[bytes], sized: bool) -> Iterator[ReadableBuffer]:
    """``src`` in pieces of at most ``CHUNK_SIZE`` bytes, until it ends.

    A file (``sized``) is read into one reused buffer, each piece being valid only until
    the next one is asked for: no allocation per piece.  Other sources (pipes, decoders)
    only promise ``read``.
    """
    readinto = getattr(src, "readinto", None) if sized else None
    if readinto is None:
        yield from iter(lambda: src.read(CHUNK_SIZE), b"")
        return
    view = memoryview(bytearray(CHUNK_SIZE))
    while count := readinto(view):
        yield view[:count]


def compress_stream(
    algorithm: str | None, level: str | int | None, src: IO[bytes], dst: IO[bytes]
) -> int:
    """Compress everything read from ``src`` into ``dst`` as one stream; return bytes written.

    Memory stays at about ``CHUNK_SIZE`` plus the codec's own state, whatever the size of
    the input.  On a 16 MiB WAL segment file, zstd's streaming is much faster than reading
    the segment whole and compressing it in one call: the copy into a fresh 16 MiB buffer
    costs more than the 7-10 % that one call saves.  When ``src`` is seekable (a file), its
    size is taken first and zstd records it in the frame header (as one-shot compression
    does); such a source must keep that size while it is read, else
    :class:`CompressionError` is raised.
    """
    algo = canonical_algorithm(algorithm)
    if algo is None:
        return _copy(src, dst)
    size = _size_left(src)
    comp = _new_compressor(algo, resolve_level(algo, level), size if algo == "zstd" else None)
    seen = written = 0
    for piece in _pieces(src, size is not None):
        seen += len(memoryview(piece))
        if size is not None and seen > size:
            break
        out = comp.compress(piece)
        if out:
            written += dst.write(out)
    if size is not None and seen != size:
        name = getattr(src, "name", "the source file")
        raise CompressionError(
            f"{name} changed size while being compressed ({size} bytes expected, {seen} read)"
        )
    return written + dst.write(comp.flush())


def _copy(src: IO[bytes], dst: IO[bytes]) -> int:
    written = 0
    while chunk := src.read(CHUNK_SIZE):
        written += dst.write(chunk)
    return written


class _LimitedDecoder:
    """bz2/lzma/lz4 decompressors: ``decompress(data, max_length)`` with ``needs_input``."""

    def __init__(self, obj: _NeedsInput) -> None:
        self._obj = obj
        self.eof = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        out = self._obj.decompress(data, _PIECE_SIZE)
        while True:
            if out:
                yield out
            self.eof = self._obj.eof
            if self.eof or self._obj.needs_input:
                return
            out = self._obj.decompress(b"", _PIECE_SIZE)

    def leftover(self) -> bytes:
        return bytes(self._obj.unused_data or b"")  # lz4 reports None when there is none


class _ZlibDecoder:
    """zlib-ng gzip decompressor: ``max_length`` with ``unconsumed_tail``."""

    def __init__(self) -> None:
        from zlib_ng import zlib_ng

        self._obj = zlib_ng.decompressobj(31)
        self.eof = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            out: bytes = self._obj.decompress(data, _PIECE_SIZE)
            data = self._obj.unconsumed_tail
            if out:
                yield out
            self.eof = self._obj.eof
            if self.eof or (not data and len(out) < _PIECE_SIZE):
                return

    def leftover(self) -> bytes:
        return bytes(self._obj.unused_data)


class _ZstdDecoder:
    """zstandard decompressobj: uncapped output, so input is fed in small slices."""

    def __init__(self) -> None:
        import zstandard

        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self.eof = False
        self._rest = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        for start in range(0, len(data), _ZSTD_SLICE):
            out: bytes = self._obj.decompress(view[start : start + _ZSTD_SLICE])
            if out:
                yield out
            if self._obj.eof:
                self.eof = True
                self._rest = bytes(self._obj.unused_data) + bytes(view[start + _ZSTD_SLICE :])
                return

    def leftover(self) -> bytes:
        return self._rest


def _bz2_decoder() -> _Decoder:
    import bz2

    return _LimitedDecoder(bz2.BZ2Decompressor())


def _xz_decoder() -> _Decoder:
    import lzma

    return _LimitedDecoder(lzma.LZMADecompressor(format=lzma.FORMAT_XZ))


def _lz4_decoder() -> _Decoder:
    import lz4.frame

    return _LimitedDecoder(lz4.frame.LZ4FrameDecompressor())


_DECODERS: dict[str, Callable[[], _Decoder]] = {
    "gzip": _ZlibDecoder,
    "bzip2": _bz2_decoder,
    "xz": _xz_decoder,
    "zstd": _ZstdDecoder,
    "lz4": _lz4_decoder,
}
_COMMON_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, RuntimeError, ValueError)


def _codec_errors(algo: str) -> tuple[type[Exception], ...]:
    """The exceptions the ``algo`` decoder raises on bad input."""
    if algo == "gzip":
        from zlib_ng import zlib_ng

        error: type[Exception] = zlib_ng.error  # type: ignore[assignment] # stub: an instance
        return (error, *_COMMON_ERRORS)
    if algo == "xz":
        import lzma

        return (lzma.LZMAError, *_COMMON_ERRORS)
    if algo == "zstd":
        import zstandard

        return (zstandard.ZstdError, *_COMMON_ERRORS)
    return _COMMON_ERRORS


def iter_decompressed(src: IO[bytes], algorithm: str | None) -> Iterator[bytes]:
    """Yield the decompressed content of ``src`` piece by piece.

    Decoded pieces are at most 64 KiB, except with zstd, whose pieces are what one 4 KiB
    slice of input expands to (at most a WAL segment in practice); uncompressed input comes
    in ``CHUNK_SIZE`` pieces.
    Concatenated streams are accepted (NUL padding between them is skipped, as gzip does);
    an empty, truncated or corrupt input raises :class:`CompressionError`.
    """
    algo = canonical_algorithm(algorithm)
    if algo is None:
        while chunk := src.read(CHUNK_SIZE):
            yield chunk
        return
    errors = _codec_errors(algo)
    decoder: _Decoder | None = None
    streams = 0
    while data := src.read(CHUNK_SIZE):
        while data:
            if decoder is None:
                data = data.lstrip(b"\0") if streams else data
                if not data:
                    break
                decoder = _DECODERS[algo]()
                streams += 1
            try:
                yield from decoder.feed(data)
            except errors as exc:
                raise CompressionError(f"corrupt {algo} data: {exc}") from exc
            data = b""
            if decoder.eof:
                data, decoder = decoder.leftover(), None
    if decoder is not None or not streams:
        raise CompressionError(f"truncated {algo} data: the compressed stream is incomplete")


def decompress_stream(algorithm: str | None, src: IO[bytes], dst: IO[bytes]) -> int:
    """Decompress ``src`` into ``dst``; return the number of decompressed bytes written."""
    return sum(dst.write(piece) for piece in iter_decompressed(src, algorithm))


class _IterReader(io.RawIOBase):
    """A raw, read-only file over an iterator of byte pieces."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        super().__init__()
        self._pieces = pieces
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        while not self._view:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._view = memoryview(piece)
        target = memoryview(buffer).cast("B")
        size = min(len(target), len(self._view))
        target[:size] = self._view[:size]
        self._view = self._view[size:]
        return size


def open_decompressed(algorithm: str | None, src: IO[bytes]) -> io.BufferedReader:
    """Return a buffered reader yielding the decompressed content of ``src``."""
    return io.BufferedReader(_IterReader(iter_decompressed(src, algorithm)), CHUNK_SIZE)


def compress_bytes(algorithm: str | None, data: bytes, level: str | int | None = None) -> bytes:
    """Compress ``data`` in memory (a convenience for tests and small payloads)."""
    out = io.BytesIO()
    compress_stream(algorithm, level, io.BytesIO(data), out)
    return out.getvalue()


def decompress_bytes(algorithm: str | None, data: bytes) -> bytes:
    """Decompress ``data`` in memory (a convenience for tests and small payloads)."""
    return b"".join(iter_decompressed(io.BytesIO(data), algorithm))
