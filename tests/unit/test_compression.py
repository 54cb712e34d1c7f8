"""Tests for walvault.compression: names, levels, magic, streaming round trips."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from walvault import compression as comp

ALGOS = comp.ALGORITHMS


def wal_like(size: int, seed: int = 1) -> bytes:
    """Compressible bytes with some randomness, loosely shaped like WAL pages."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += b"\x10\xd1\x07\x00" + rng.randbytes(12) + b"row-data " * rng.randint(1, 40)
        out += bytes(rng.randint(0, 300))
    return bytes(out[:size])


STANDARD_DECODERS = {
    "gzip": gzip.decompress,
    "bzip2": bz2.decompress,
    "xz": lzma.decompress,
    "zstd": lambda d: zstandard.ZstdDecompressor().decompress(d, max_output_size=64 << 20),
    "lz4": lz4.frame.decompress,
}
STANDARD_ENCODERS = {
    "gzip": lambda d: gzip.compress(d, 6),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda d: zstandard.ZstdCompressor(level=3).compress(d),
    "lz4": lz4.frame.compress,
}


class Trickle(io.RawIOBase):
    """A non-seekable source that returns at most ``step`` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int = 100_000) -> None:
        super().__init__()
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._step if size < 0 else min(size, self._step)
        piece = self._data[self._pos : self._pos + size]
        self._pos += len(piece)
        return piece


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("pygzip", "gzip"),
        ("pigz", "gzip"),
        ("bzip2", "bzip2"),
        ("pybzip2", "bzip2"),
        ("xz", "xz"),
        ("zstd", "zstd"),
        (" lz4 ", "lz4"),
        ("none", None),
        ("", None),
        (None, None),
    ],
)
def test_canonical_algorithm(name: str | None, expected: str | None) -> None:
    assert comp.canonical_algorithm(name) == expected


@pytest.mark.parametrize("name", ["snappy", "custom", "gz", "zlib"])
def test_unknown_algorithm_lists_accepted_values(name: str) -> None:
    with pytest.raises(ValueError, match=name) as info:
        comp.canonical_algorithm(name)
    for accepted in ("gzip", "bzip2", "xz", "zstd", "lz4", "pygzip", "pigz", "none"):
        assert accepted in str(info.value)


@pytest.mark.parametrize(
    ("algo", "low", "medium", "high", "lowest", "highest"),
    [
        ("gzip", 1, 2, 9, 1, 9),
        ("pigz", 1, 2, 9, 1, 9),
        ("bzip2", 1, 5, 9, 1, 9),
        ("xz", 1, 3, 5, 1, 9),
        ("zstd", 1, 4, 9, -22, 22),
        ("lz4", 0, 6, 10, 0, 16),
    ],
)
def test_resolve_level(
    algo: str, low: int, medium: int, high: int, lowest: int, highest: int
) -> None:
    assert comp.resolve_level(algo, "low") == low
    assert comp.resolve_level(algo, "Medium") == medium
    assert comp.resolve_level(algo, "high") == high
    assert comp.resolve_level(algo, None) == medium
    assert comp.resolve_level(algo, -1000) == lowest
    assert comp.resolve_level(algo, 1000) == highest
    assert comp.resolve_level(algo, "7") == min(7, highest)


def test_resolve_level_rejects_words_and_ignores_none() -> None:
    with pytest.raises(ValueError, match="fast"):
        comp.resolve_level("gzip", "fast")
    assert comp.resolve_level(None, "high") == 0
    assert comp.resolve_level("zstd", 0) == 0


@pytest.mark.parametrize("algo", ALGOS)
def test_identify_compressed_output(algo: str) -> None:
    assert comp.identify(comp.compress_bytes(algo, b"x" * 100)) == algo


def test_identify_rejects_wal_and_short_input(tmp_path: os.PathLike[str]) -> None:
    assert comp.MAGIC_MAX_LEN == 6
    assert comp.identify(b"\x10\xd1\x07\x00\x01\x00\x00\x00") is None  # PG15 WAL page
    assert comp.identify(b"\x1f\x8b") is None
    assert comp.identify(b"") is None
    path = os.path.join(tmp_path, "seg")
    with open(path, "wb") as handle:
        handle.write(comp.compress_bytes("xz", b"abc"))
    assert comp.identify_file(path) == "xz"


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("size", [0, 1, 4096, 3 * comp.CHUNK_SIZE + 17])
def test_round_trip_matches_standard_tools(algo: str, size: int) -> None:
    data = wal_like(size)
    src, dst = io.BytesIO(data), io.BytesIO()
    written = comp.compress_stream(algo, "medium", src, dst)
    packed = dst.getvalue()
    assert written == len(packed)
    assert STANDARD_DECODERS[algo](packed) == data
    out = io.BytesIO()
    assert comp.decompress_stream(algo, io.BytesIO(packed), out) == len(data)
    assert out.getvalue() == data


@pytest.mark.parametrize("algo", ALGOS)
def test_reads_archives_written_by_other_tools(algo: str) -> None:
    data = wal_like(2 * comp.CHUNK_SIZE + 5)
    assert comp.decompress_bytes(algo, STANDARD_ENCODERS[algo](data)) == data


@pytest.mark.parametrize("algo", ALGOS)
def test_pipe_like_source_and_every_level(algo: str) -> None:
    data = wal_like(comp.CHUNK_SIZE + 1000, seed=7)
    for level in ("low", "high"):
        out = io.BytesIO()
        comp.compress_stream(algo, level, Trickle(data), out)  # type: ignore[arg-type]
        assert comp.decompress_bytes(algo, out.getvalue()) == data
        back = io.BytesIO()
        comp.decompress_stream(algo, Trickle(out.getvalue(), 333), back)  # type: ignore[arg-type]
        assert back.getvalue() == data


def _compress_file(algo: str, path: Path, skip: int = 0) -> bytes:
    out = io.BytesIO()
    with open(path, "rb") as handle:
        handle.read(skip)
        written = comp.compress_stream(algo, "medium", handle, out)
        assert handle.read() == b""  # everything was consumed
    assert written == len(out.getvalue())
    return out.getvalue()


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("size", [0, 1, 8191, comp.CHUNK_SIZE, comp.CHUNK_SIZE + 1])
def test_round_trip_from_a_file(tmp_path: Path, algo: str, size: int) -> None:
    data = wal_like(size, seed=size)
    path = tmp_path / "segment"
    path.write_bytes(data)
    packed = _compress_file(algo, path)
    assert STANDARD_DECODERS[algo](packed) == data
    assert comp.decompress_bytes(algo, packed) == data


@pytest.mark.parametrize("size", [0, 100, 16 << 20])
def test_zstd_from_a_file_records_its_size(tmp_path: Path, size: int) -> None:
    """Empty, short and exactly one 16 MiB segment: standard frames that say their size."""
    data = wal_like(size, seed=3)
    path = tmp_path / "segment"
    path.write_bytes(data)
    packed = _compress_file("zstd", path)
    assert zstandard.get_frame_parameters(packed).content_size == size
    assert STANDARD_DECODERS["zstd"](packed) == data
    assert comp.decompress_bytes("zstd", packed) == data
    tail = _compress_file("zstd", path, skip=size // 3)  # from where the reader stands
    assert zstandard.get_frame_parameters(tail).content_size == size - size // 3
    assert comp.decompress_bytes("zstd", tail) == data[size // 3 :]


class _Sink(io.RawIOBase):
    """A writable that only counts what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:
        self.size += len(data)
        return len(data)


@pytest.mark.parametrize("algo", ["zstd", "gzip", "lz4"])
def test_compressing_a_file_holds_one_chunk_not_the_file(tmp_path: Path, algo: str) -> None:
    path = tmp_path / "segment"
    path.write_bytes(wal_like(16 << 20, seed=5))
    sink = _Sink()
    tracemalloc.start()
    try:
        with open(path, "rb") as src:
            written = comp.compress_stream(algo, "medium", src, sink)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == sink.size > 0
    assert peak < 3 * comp.CHUNK_SIZE, peak


class _Changing(io.FileIO):
    """A file that grows or shrinks on disk once its first piece has been read."""

    def __init__(self, path: Path, delta: int) -> None:
        super().__init__(path, "rb")
        self._path, self._delta = path, delta

    def readinto(self, buffer: Any, /) -> int | None:
        count = super().readinto(buffer)
        if self._delta:
            size = self._path.stat().st_size
            os.truncate(self._path, size + self._delta)
            self._delta = 0
        return count


@pytest.mark.parametrize("algo", ["zstd", "gzip"])
@pytest.mark.parametrize("delta", [-1000, 1000])
def test_a_file_that_changes_size_is_refused(tmp_path: Path, algo: str, delta: int) -> None:
    path = tmp_path / "segment"
    path.write_bytes(wal_like(3 * comp.CHUNK_SIZE))
    with _Changing(path, delta) as src, pytest.raises(comp.CompressionError, match="size"):
        comp.compress_stream(algo, "medium", src, io.BytesIO())


def test_zstd_medium_is_barmans_level_4_with_a_content_checksum() -> None:
    assert comp.resolve_level("zstd", "medium") == comp.resolve_level("zstd", None) == 4
    assert comp.resolve_level("zstd", 4) == comp.resolve_level("zstd", "4") == 4
    data = wal_like(300_000)
    packed = comp.compress_bytes("zstd", data, 4)
    assert packed == zstandard.ZstdCompressor(level=4, write_checksum=True).compress(data)
    barmans = zstandard.ZstdCompressor(level=4).compress(data)  # Barman writes no checksum
    assert comp.decompress_bytes("zstd", barmans) == data
    assert comp.frame_checksummed("zstd", packed) and not comp.frame_checksummed("zstd", barmans)


def test_lz4_frames_carry_a_content_checksum() -> None:
    import lz4.frame

    data = wal_like(300_000)
    packed = comp.compress_bytes("lz4", data)
    assert comp.frame_checksummed("lz4", packed)
    assert not comp.frame_checksummed("lz4", lz4.frame.compress(data))  # Barman's
    assert comp.decompress_bytes("lz4", lz4.frame.compress(data)) == data


@pytest.mark.parametrize("algo", ALGOS)
def test_single_bit_flips_never_decode_into_other_content(algo: str) -> None:
    """Every codec walvault writes detects a flipped bit anywhere in its stream: decoding
    fails, or (a flip in a field the decoder ignores) still yields the original bytes."""
    data = wal_like(256 * 1024)
    packed = comp.compress_bytes(algo, data)
    assert comp.frame_checksummed(algo, packed)
    step = max(1, len(packed) // 40)
    for offset in range(0, len(packed), step):
        for bit in (0, 3, 7):
            broken = bytearray(packed)
            broken[offset] ^= 1 << bit
            try:
                out = comp.decompress_bytes(algo, bytes(broken))
            except comp.CompressionError:
                continue
            assert out == data, f"{algo}: flip at byte {offset} bit {bit} decoded to other data"


def test_frame_checksummed_reads_each_header() -> None:
    assert comp.frame_checksummed("gzip", b"") and comp.frame_checksummed("bzip2", b"")
    assert comp.frame_checksummed("xz", comp.compress_bytes("xz", b"x"))
    assert not comp.frame_checksummed(None, b"\0" * 40)
    assert not comp.frame_checksummed("zstd", b"\x28\xb5")


@pytest.mark.parametrize("algo", ALGOS)
def test_concatenated_streams_and_nul_padding(algo: str) -> None:
    one, two = comp.compress_bytes(algo, b"first " * 1000), comp.compress_bytes(algo, b"second")
    assert comp.decompress_bytes(algo, one + two) == b"first " * 1000 + b"second"
    assert comp.decompress_bytes(algo, one + bytes(4096)) == b"first " * 1000


@pytest.mark.parametrize("algo", ALGOS)
def test_truncated_corrupt_and_empty_inputs_raise(algo: str) -> None:
    packed = comp.compress_bytes(algo, wal_like(200_000))
    for bad in (packed[:-1], packed[: len(packed) // 2], packed[:4], b""):
        with pytest.raises(comp.CompressionError):
            comp.decompress_bytes(algo, bad)
    with pytest.raises(comp.CompressionError):
        comp.decompress_bytes(algo, packed + b"trailing garbage that is not a stream")
    with pytest.raises(comp.CompressionError):
        comp.decompress_bytes(algo, b"\x10\xd1\x07\x00" + bytes(100))


@pytest.mark.parametrize("algo", ["gzip", "bzip2", "xz", "lz4"])
def test_decompressed_pieces_are_bounded(algo: str) -> None:
    packed = comp.compress_bytes(algo, bytes(6 * comp.CHUNK_SIZE))
    pieces = list(comp.iter_decompressed(io.BytesIO(packed), algo))
    assert sum(map(len, pieces)) == 6 * comp.CHUNK_SIZE
    assert max(map(len, pieces)) <= comp.CHUNK_SIZE


@pytest.mark.parametrize("algo", [*ALGOS, None])
def test_open_decompressed_reader(algo: str | None) -> None:
    data = wal_like(comp.CHUNK_SIZE + 123)
    reader = comp.open_decompressed(algo, io.BytesIO(comp.compress_bytes(algo, data)))
    assert reader.read(10) == data[:10]
    assert reader.read(comp.CHUNK_SIZE) == data[10 : comp.CHUNK_SIZE + 10]
    assert reader.read() == data[comp.CHUNK_SIZE + 10 :]
    assert reader.read() == b""


def test_no_compression_is_a_plain_copy() -> None:
    data = wal_like(10_000)
    assert comp.compress_bytes(None, data) == data
    assert comp.compress_bytes("none", data, "high") == data
    assert comp.decompress_bytes(None, data) == data
    assert comp.decompress_bytes(None, b"") == b""


@pytest.mark.parametrize("algo", ALGOS)
def test_concurrent_threads_do_not_share_state(algo: str) -> None:
    inputs = [wal_like(comp.CHUNK_SIZE + 999, seed=i) for i in range(6)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        packed = list(pool.map(lambda d: comp.compress_bytes(algo, d), inputs))
        unpacked = list(pool.map(lambda p: comp.decompress_bytes(algo, p), packed))
    assert unpacked == inputs


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=5000), algo=st.sampled_from(ALGOS), level=st.integers(-5, 20))
def test_round_trip_property(data: bytes, algo: str, level: int) -> None:
    assert comp.decompress_bytes(algo, comp.compress_bytes(algo, data, level)) == data


def test_gzip_levels_use_isal_then_zlib_ng_and_stay_standard_gzip() -> None:
    """Levels 1-3 are ISA-L's, 4-9 zlib-ng's; every level is plain gzip that Python reads."""
    payload = (b"postgres wal record " * 4096) + bytes(range(256)) * 64
    outputs = {level: comp.compress_bytes("gzip", payload, level) for level in (1, 2, 6, 9)}
    for level, data in outputs.items():
        assert gzip.decompress(data) == payload, level
    assert comp.resolve_level("gzip", "medium") == 2
    assert comp.resolve_level("gzip", 6) == 6
