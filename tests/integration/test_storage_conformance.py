"""The storage contract (walvault.storage.base), the same tests for every driver.

Drivers: ``memory`` (MemoryStorage), ``posix`` (PosixStorage in a temporary directory, its
metadata in a sidecar directory) and ``s3`` (S3Storage against moto's S3 server on loopback,
tests/s3harness.py).  A new driver joins by adding a branch to the ``storage``
fixture.  moto is lenient where AWS is not (any signature, no verification of
``x-amz-checksum-*``): those parts are covered by tests/unit/storage/test_s3_wire.py.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from s3harness import MotoServer, free_port, hanging_server, make_storage
from walvault.storage.base import InvalidKey, ObjectExists, Storage, StorageError
from walvault.storage.memory import MemoryStorage

DRIVERS = ("memory", "posix", "s3")


@pytest.fixture(params=DRIVERS)
def storage(request: pytest.FixtureRequest, tmp_path: Any) -> Storage:
    if request.param == "memory":
        return MemoryStorage(page_size=100)
    if request.param == "posix":
        from walvault.storage.posix import PosixStorage

        return PosixStorage(str(tmp_path / "store"), meta_dir=str(tmp_path / "meta"))
    s3: Storage = request.getfixturevalue("s3_storage")
    return s3


def _put_many(storage: Storage, keys: list[str], threads: int = 8) -> None:
    """Tiny objects, several writers at once (moto answers ~5 ms per PUT)."""
    chunks = [keys[i::threads] for i in range(threads)]
    errors: list[BaseException] = []

    def work(part: list[str]) -> None:
        try:
            for key in part:
                storage.put(key, key.encode())
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def _read(storage: Storage, key: str) -> bytes:
    reader = storage.open(key)
    assert reader is not None, key
    with reader:
        return reader.read()


# ---------------------------------------------------------------- writes


def test_put_bytes_and_file_round_trip(storage: Storage) -> None:
    info = storage.put("pg/wals/0000000100000000/000000010000000000000001", b"segment")
    assert (info.key, info.size) == ("pg/wals/0000000100000000/000000010000000000000001", 7)
    storage.put("pg/file", io.BytesIO(b"from a file"))
    storage.put("pg/empty", b"")
    assert _read(storage, "pg/wals/0000000100000000/000000010000000000000001") == b"segment"
    assert _read(storage, "pg/file") == b"from a file"
    assert _read(storage, "pg/empty") == b""


def test_create_only_refuses_an_existing_key_and_keeps_the_first_content(
    storage: Storage,
) -> None:
    storage.put("k", b"first", metadata={"version": "1"})
    with pytest.raises(ObjectExists) as caught:
        storage.put("k", b"second", metadata={"version": "2"})
    assert "k" in str(caught.value) and "\n" not in str(caught.value)
    reader = storage.open("k")
    assert reader is not None
    with reader:
        assert reader.info.metadata == {"version": "1"}
        assert reader.read() == b"first"


def test_overwrite_only_when_asked(storage: Storage) -> None:
    storage.put("k", b"first")
    storage.put("k", b"second, longer", create_only=False)
    assert _read(storage, "k") == b"second, longer"
    info = storage.head("k")
    assert info is not None and info.size == len(b"second, longer")


def test_concurrent_creates_of_one_key_exactly_one_wins(storage: Storage) -> None:
    writers = 8
    barrier = threading.Barrier(writers)
    won: list[int] = []
    refused: list[int] = []
    other: list[BaseException] = []

    def write(n: int) -> None:
        barrier.wait()
        try:
            storage.put("race", f"writer {n}".encode() * 1000, metadata={"writer": str(n)})
            won.append(n)
        except ObjectExists:
            refused.append(n)
        except BaseException as exc:
            other.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not other
    assert len(won) == 1 and len(refused) == writers - 1
    reader = storage.open("race")
    assert reader is not None
    with reader:
        assert reader.info.metadata == {"writer": str(won[0])}
        assert reader.read() == f"writer {won[0]}".encode() * 1000


# ---------------------------------------------------------------- reads


def test_streaming_read_of_a_multi_mib_object_in_pieces(storage: Storage) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    storage.put("big", data)
    reader = storage.open("big")
    assert reader is not None
    with reader:
        assert reader.info.size == len(data)  # known before the first byte
        pieces = []
        while piece := reader.read(65536):
            assert len(piece) <= 65536
            pieces.append(piece)
        assert reader.read(65536) == b""
    assert len(pieces) == -(-len(data) // 65536)
    assert b"".join(pieces) == data


def test_metadata_round_trip_through_open_and_head(storage: Storage) -> None:
    meta = {"walvault-sha256": "ab" * 32, "compression": "zstd", "system-id": "7412345678"}
    storage.put("m", b"x", metadata=meta)
    head = storage.head("m")
    assert head is not None and dict(head.metadata) == meta
    reader = storage.open("m")
    assert reader is not None
    with reader:
        assert dict(reader.info.metadata) == meta


def test_head_gives_size_and_time_without_reading(storage: Storage) -> None:
    before = time.time()
    storage.put("h", b"12345")
    info = storage.head("h")
    assert info is not None
    assert (info.key, info.size) == ("h", 5)
    assert before - 2 <= info.mtime <= time.time() + 2  # S3: LastModified, whole seconds


def test_missing_keys_are_none_and_deleting_them_is_fine(storage: Storage) -> None:
    storage.put("present", b"1")
    assert storage.open("absent") is None
    assert storage.head("absent") is None
    assert storage.open("present/below") is None
    storage.delete(["absent", "also/absent"])
    storage.delete([])
    assert storage.head("present") is not None


# ---------------------------------------------------------------- listing and deleting


def test_list_is_in_key_order(storage: Storage) -> None:
    # (no key that is both an object and a prefix, as "a/b" beside "a/b/c": posix cannot)
    keys = ["b", "a/b.gz", "a/b/c", "a/bc", "a/B", "a/b-1", "a/b_1", "0", "a/a"]
    _put_many(storage, keys, threads=2)
    listed = [info.key for info in storage.list()]
    assert listed == sorted(keys)
    sizes = {info.key: info.size for info in storage.list()}
    assert sizes == {k: len(k) for k in keys}


def test_prefix_is_a_plain_string_prefix_and_isolates(storage: Storage) -> None:
    keys = [
        "pg/wals/0000000100000000/000000010000000000000001",
        "pg/wals/0000000100000000/000000010000000000000001.zst",
        "pg/wals/0000000100000000/000000010000000000000002",
        "pg/wals/0000000100000001/000000010000000100000000",
        "pg/wals/00000002.history",
        "pg2/wals/0000000100000000/000000010000000000000001",
        "pga",
    ]
    _put_many(storage, keys, threads=2)

    def listed(prefix: str) -> list[str]:
        return [info.key for info in storage.list(prefix)]

    assert listed("") == sorted(keys)
    assert listed("pg/") == sorted(keys[:5])
    assert listed("pg") == sorted(keys)  # a string prefix: pg2/ and pga too
    assert listed("pg2/") == [keys[5]]
    assert listed("pg/wals/0000000100000000/") == keys[:3]
    assert listed("pg/wals/0000000100000000/000000010000000000000001") == keys[:2]
    assert listed("pg/wals/0000000100000000/00000001000000000000000") == keys[:3]
    assert listed("pg/wals/00000002") == [keys[4]]
    assert listed("pg/wals/0000000100000001") == [keys[3]]
    assert listed("pg/none") == []
    assert listed("zzz/") == []


def test_list_pages_past_1000_keys_and_delete_in_batches(storage: Storage) -> None:
    keys = [f"many/{n:05d}" for n in range(1100)]
    _put_many(storage, [*keys, "other/keep"])
    listing = storage.list("many/")
    first = next(listing)  # lazily: one page at a time as the caller iterates
    assert first.key == keys[0]
    assert [first.key, *(info.key for info in listing)] == keys
    storage.delete([*keys, "many/never-was"])
    assert list(storage.list("many/")) == []
    assert [info.key for info in storage.list()] == ["other/keep"]


# ---------------------------------------------------------------- refusals


BAD_KEYS = [
    "",
    "/abs",
    "a//b",
    "a/",
    "../x",
    "a/../b",
    "a/./b",
    ".",
    "a b",
    "a\nb",
    "é",
    "x" * 1025,
]


@pytest.fixture(params=["memory", "s3-nowhere"])
def unreachable(request: pytest.FixtureRequest) -> Storage:
    """A driver for which any request would fail: a refusal must come before one."""
    if request.param == "memory":
        return MemoryStorage()
    return make_storage("s3://nowhere-bucket/p", f"http://127.0.0.1:{free_port()}")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_refused_before_any_request(unreachable: Storage, key: str) -> None:
    operations: list[Callable[[], Any]] = [
        lambda: unreachable.put(key, b"x"),
        lambda: unreachable.open(key),
        lambda: unreachable.head(key),
        lambda: unreachable.delete(["fine", key]),
    ]
    if not key.endswith("/") and key:
        operations.append(lambda: list(unreachable.list(key)))
    for operation in operations:
        with pytest.raises(InvalidKey) as caught:
            operation()
        assert "\n" not in str(caught.value)
    if isinstance(unreachable, MemoryStorage):
        assert sum(unreachable.requests.values()) == 0


@pytest.mark.parametrize(
    "metadata",
    [
        {"Upper": "x"},
        {"with space": "x"},
        {"-lead": "x"},
        {"walvault-storage-sha256": "reserved for the driver"},
        {"k": "caf\u00e9"},
        {"k": "line\nbreak"},
        {"k": "x" * 2000},
    ],
)
def test_invalid_metadata_is_refused_before_any_request(
    unreachable: Storage, metadata: dict[str, str]
) -> None:
    with pytest.raises(InvalidKey):
        unreachable.put("fine", b"x", metadata=metadata)


# ---------------------------------------------------------------- S3 specifics


def test_s3_stream_of_unknown_length_goes_multipart_and_keeps_metadata(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    storage = make_storage(
        f"s3://{s3_bucket}", moto_server.endpoint, multipart_threshold=6 << 20, part_size=5 << 20
    )
    data = os.urandom(12 << 20)

    class Pipe(io.RawIOBase):  # a non-seekable stream that hands out odd-sized pieces
        def __init__(self) -> None:
            self.pos = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = min(len(buffer), 777_777, len(data) - self.pos)
            buffer[:n] = data[self.pos : self.pos + n]
            self.pos += n
            return n

    info = storage.put("base/20260101T000000/data.tar", Pipe(), metadata={"kind": "tar"})
    assert info.size == len(data)
    assert _read(storage, "base/20260101T000000/data.tar") == data
    head = storage.head("base/20260101T000000/data.tar")
    assert head is not None and head.metadata == {"kind": "tar"}
    with pytest.raises(ObjectExists):  # create-only above the threshold: HEAD first
        storage.put("base/20260101T000000/data.tar", data)
    assert storage.features.max_atomic_size == 6 << 20


def test_s3_a_missing_bucket_is_an_error_never_a_missing_key(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    storage = make_storage("s3://walvault-no-such-bucket/p", moto_server.endpoint)
    for operation in (
        lambda: storage.open("k"),
        lambda: storage.head("k"),
        lambda: list(storage.list()),
        lambda: storage.put("k", b"x"),
    ):
        with pytest.raises(StorageError) as caught:
            operation()
        assert "NoSuchBucket" in str(caught.value) and "\n" not in str(caught.value)


def test_s3_reader_refuses_bytes_that_differ_from_the_recorded_digest(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    import obstore
    from obstore.store import S3Store

    storage = make_storage(f"s3://{s3_bucket}", moto_server.endpoint)
    storage.put("seg", b"the bytes as archived")
    head = storage.head("seg")
    assert head is not None
    # another client replaces the body but keeps our digest (what a corrupting proxy or a
    # bad copy would do): the reader must notice at the end of the object
    raw = S3Store(
        s3_bucket,
        endpoint=moto_server.endpoint,
        region="us-east-1",
        access_key_id="k",
        secret_access_key="s",
        client_options={"allow_http": True},
    )
    digest = obstore.get(raw, "seg", options={"head": True}).attributes["walvault-storage-sha256"]
    raw.put("seg", b"the bytes as CORRUPTED", attributes={"walvault-storage-sha256": digest})
    reader = storage.open("seg")
    assert reader is not None
    with reader, pytest.raises(StorageError, match="SHA-256"):
        reader.read()


# ---------------------------------------------------------------- faults


def _one_line_failure(operation: Callable[[], Any], limit: float) -> str:
    start = time.monotonic()
    with pytest.raises(StorageError) as caught:
        operation()
    elapsed = time.monotonic() - start
    assert elapsed < limit, f"took {elapsed:.1f} s"
    message = str(caught.value)
    assert "\n" not in message and "Debug" not in message
    assert "walvault-test-secret" not in message
    return message


def _all_operations(storage: Storage) -> Iterator[tuple[str, Callable[[], Any]]]:
    yield "put", lambda: storage.put("wals/seg", b"x")
    yield "open", lambda: storage.open("wals/seg")
    yield "head", lambda: storage.head("wals/seg")
    yield "list", lambda: list(storage.list("wals/"))
    yield "delete", lambda: storage.delete(["wals/seg"])


def test_s3_store_that_is_down_fails_fast_with_one_line(tmp_path: Any) -> None:
    # moto of our own, stopped after a first write: the store went away
    server = MotoServer(tmp_path / "moto.log")
    server.start()
    try:
        bucket = server.create_bucket("gone")
        storage = make_storage(f"s3://{bucket}/p", server.endpoint)
        storage.put("wals/seg", b"x")
    finally:
        server.stop()
    for name, operation in _all_operations(storage):
        message = _one_line_failure(operation, limit=15)
        assert "s3://gone/p" in message, name
        assert "connection refused" in message, message


def test_s3_store_that_hangs_fails_in_bounded_time_with_one_line() -> None:
    with hanging_server() as hung:
        storage = make_storage(
            "s3://hung-bucket/p",
            hung.endpoint,
            aws_read_timeout="1",
            aws_request_timeout="2",
            aws_retries="1",
            aws_retry_timeout="3",
        )
        for name, operation in _all_operations(storage):
            message = _one_line_failure(operation, limit=12)
            assert "s3://hung-bucket/p" in message, name
            assert "timed out" in message, message


def test_s3_requests_are_counted_for_serves_metrics(s3_storage: Storage, tmp_path: Any) -> None:
    from walvault import counters

    counters.drain()
    s3_storage.put("count/a", b"x" * 10)
    with pytest.raises(ObjectExists):
        s3_storage.put("count/a", b"y")
    assert s3_storage.head("count/a") is not None
    assert s3_storage.head("count/none") is None  # answered: not an error
    reader = s3_storage.open("count/a")
    assert reader is not None
    reader.close()
    assert [o.key for o in s3_storage.list("count/")] == ["count/a"]
    s3_storage.delete(["count/a"])
    rows = {(d, op): (n, failed) for d, op, n, failed in counters.drain()}
    assert rows == {
        ("s3", "put"): (2, 1),
        ("s3", "head"): (2, 0),
        ("s3", "get"): (1, 0),
        ("s3", "list"): (1, 0),
        ("s3", "delete"): (1, 0),
    }, rows
    server = MotoServer(tmp_path / "moto-gone.log")  # a store that went away: errors counted
    server.start()
    bucket = server.create_bucket("gone-count")
    gone = make_storage(f"s3://{bucket}/p", server.endpoint, aws_retries="0")
    server.stop()
    with pytest.raises(StorageError):
        gone.put("wals/seg", b"x")
    assert counters.drain() == [["s3", "put", 1, 1]]
