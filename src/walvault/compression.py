"""WAL compression codecs (gzip, bzip2, xz, zstd, lz4) as bounded-memory streaming filters.

Every fact about a codec is one row of :data:`CODECS` (its name and aliases, magic number,
barman-cloud's file extension, Barman's level mapping, whether a frame carries a content
checksum, how to make its compressor and decoder, the errors its decoder raises): a new
codec is one row.  This module is a leaf (it imports nothing of walvault but ``errors``), so
the configuration can name codecs without importing the archive.  Each codec's own library
is imported when that codec is first used, so identifying a file or reading an uncompressed
one costs no codec imports.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, NamedTuple, cast

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
    low, medium, high, minimum, maximum = CODECS[algo].levels
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
    for codec in CODECS.values():
        if head.startswith(codec.magic):
            return codec.name
    return None


def frame_checksummed(algorithm: str | None, head: bytes) -> bool:
    """Whether a stream of ``algorithm`` starting with ``head`` carries a content checksum that
    its decoder verifies.

    gzip (CRC-32), bzip2 (block and stream CRCs) and xz (a check of the content, CRC-64 by
    default) always do; zstd and lz4 only when the frame header says so (zstd's frame header
    descriptor bit 2, lz4's FLG bit 2): walvault writes them with it, Barman without.
    Uncompressed data never does.  Only the first frame of ``head`` is looked at.
    """
    codec = CODECS.get(algorithm) if algorithm else None
    return codec is not None and codec.checksummed(head)


def _always(_head: bytes) -> bool:
    return True


def _xz_checked(head: bytes) -> bool:
    return len(head) > 7 and head[7] & 0x0F != 0  # stream flags: check type, 0 = none


def _flag_bit_2(head: bytes) -> bool:
    return len(head) > 4 and head[4] & 0x04 != 0  # zstd's descriptor, lz4's FLG


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


def _gzip_compressor(level: int, _size: int | None = None) -> _Compressor:
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


def _bz2_compressor(level: int, _size: int | None) -> _Compressor:
    import bz2

    return bz2.BZ2Compressor(level)


def _xz_compressor(level: int, _size: int | None) -> _Compressor:
    import lzma

    return lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=level)


def _zstd_compressor(level: int, size: int | None) -> _Compressor:
    """``size``, when known, is the exact number of bytes that will be fed: the frame header
    records it, as one-shot compression does."""
    # write_checksum: an XXH64 of the content closes the frame and the decoder checks it;
    # without it (python-zstandard's default, and Barman's files) most bit flips decode
    # into wrong WAL without an error.
    import zstandard

    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    return cast("_Compressor", compressor.compressobj(size=-1 if size is None else size))


def _lz4_compressor(level: int, _size: int | None) -> _Compressor:
    return _Lz4Compressor(level)


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
    # a fresh, unshared compressor: concurrent threads never share state
    comp = CODECS[algo].compressor(resolve_level(algo, level), size)
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


_COMMON_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, RuntimeError, ValueError)


def _common_errors() -> tuple[type[Exception], ...]:
    return _COMMON_ERRORS


def _zlib_errors() -> tuple[type[Exception], ...]:
    from zlib_ng import zlib_ng

    error: type[Exception] = zlib_ng.error  # type: ignore[assignment] # stub: an instance
    return (error, *_COMMON_ERRORS)


def _lzma_errors() -> tuple[type[Exception], ...]:
    import lzma

    return (lzma.LZMAError, *_COMMON_ERRORS)


def _zstd_errors() -> tuple[type[Exception], ...]:
    import zstandard

    return (zstandard.ZstdError, *_COMMON_ERRORS)


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
    codec = CODECS[algo]
    errors = codec.errors()
    decoder: _Decoder | None = None
    streams = 0
    while data := src.read(CHUNK_SIZE):
        while data:
            if decoder is None:
                data = data.lstrip(b"\0") if streams else data
                if not data:
                    break
                decoder = codec.decoder()
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


class Codec(NamedTuple):
    """Everything walvault knows about one codec (a NamedTuple, not a dataclass: importing
    dataclasses costs get-wal ~5 ms of start-up, for its ``inspect``)."""

    name: str
    #: what a stream starts with (:func:`identify`)
    magic: bytes
    #: barman-cloud's file extension (objects, backup tars)
    extension: str
    #: (low, medium, high, minimum, maximum), as Barman maps ``compression_level``
    levels: tuple[int, int, int, int, int]
    #: whether a stream starting with these bytes carries a content checksum its decoder checks
    checksummed: Callable[[bytes], bool]
    #: (level, exact input size or None) -> a fresh compressor
    compressor: Callable[[int, int | None], _Compressor]
    decoder: Callable[[], _Decoder]
    #: the exceptions its decoder raises on bad input
    errors: Callable[[], tuple[type[Exception], ...]]
    #: other names Barman's configuration accepts for it
    aliases: tuple[str, ...] = ()


# gzip's levels differ from Barman's on purpose: 1-3 are ISA-L's (igzip), 4-9 zlib-ng's, and
# "medium" is 2: on PostgreSQL WAL, ISA-L level 2 compresses ~7x faster than zlib-ng's level 6
# (~20x faster than Python's gzip, Barman's) for files ~10 % larger. ``compression_level = 6``
# is Barman's.  zstd keeps Barman's 4: zstd's own default, 3, was only 5-7 % faster on real
# WAL (157 against 146 segments/s on two cores, in memory) for files 0.5 % larger -- not worth
# archives that differ from Barman's for the same configuration.  (barman-cloud's ``.snappy``
# is not a walvault codec: such files are refused, by extension.)
CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        Codec(
            name="gzip",
            magic=b"\x1f\x8b\x08",
            extension=".gz",
            levels=(1, 2, 9, 1, 9),
            checksummed=_always,
            compressor=_gzip_compressor,
            decoder=_ZlibDecoder,
            errors=_zlib_errors,
            aliases=("pygzip", "pigz"),
        ),
        Codec(
            name="bzip2",
            magic=b"BZh",
            extension=".bz2",
            levels=(1, 5, 9, 1, 9),
            checksummed=_always,
            compressor=_bz2_compressor,
            decoder=_bz2_decoder,
            errors=_common_errors,
            aliases=("pybzip2",),
        ),
        Codec(
            name="xz",
            magic=b"\xfd7zXZ\x00",
            extension=".xz",
            levels=(1, 3, 5, 1, 9),
            checksummed=_xz_checked,
            compressor=_xz_compressor,
            decoder=_xz_decoder,
            errors=_lzma_errors,
        ),
        Codec(
            name="zstd",
            magic=b"\x28\xb5\x2f\xfd",
            extension=".zst",
            levels=(1, 4, 9, -22, 22),
            checksummed=_flag_bit_2,
            compressor=_zstd_compressor,
            decoder=_ZstdDecoder,
            errors=_zstd_errors,
        ),
        Codec(
            name="lz4",
            magic=b"\x04\x22\x4d\x18",
            extension=".lz4",
            levels=(0, 6, 10, 0, 16),
            checksummed=_flag_bit_2,
            compressor=_lz4_compressor,
            decoder=_lz4_decoder,
            errors=_common_errors,
        ),
    )
}
ALGORITHMS: tuple[str, ...] = tuple(CODECS)
ALIASES: dict[str, str] = {alias: c.name for c in CODECS.values() for alias in c.aliases}
#: the extension of an archived file per codec (None: uncompressed, no extension)
EXTENSIONS: dict[str | None, str] = {None: "", **{c.name: c.extension for c in CODECS.values()}}
#: extension -> codec
BY_EXTENSION: dict[str, str] = {c.extension: c.name for c in CODECS.values()}
MAGIC_MAX_LEN = max(len(c.magic) for c in CODECS.values())
_NAMED_LEVELS = {"low": 0, "medium": 1, "high": 2}
