"""An in-memory store (a dict): the :class:`~walvault.storage.base.Storage` contract without
a disk or a network, for the unit tests of the layers above the drivers.

It keeps the contract's semantics, not its durability: create-only puts are atomic (one
lock), metadata is kept and checked like S3's, listings come in key order one page at a time
(``page_size``) from a snapshot taken when the page is fetched, and readers hand out the
object in pieces.  ``requests`` counts the operations, so a test can assert that a lookup is
one GET and never a listing.  Nothing is shared between instances.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO

from walvault.storage.base import (
    Features,
    ImmediateBatch,
    ObjectExists,
    ObjectInfo,
    StorageError,
    check_key,
    check_metadata,
    check_prefix,
    put_local_file,
)

#: bytes a file-like given to put() is read in
_READ_CHUNK = 1 << 20


class MemoryReader:
    """A reader over an immutable bytes value (what the object was when it was opened)."""

    def __init__(self, info: ObjectInfo, data: bytes) -> None:
        self._info = info
        self._data = data
        self._pos = 0
        self._closed = False

    @property
    def info(self) -> ObjectInfo:
        return self._info

    def read(self, size: int = -1, /) -> bytes:
        if self._closed:
            raise StorageError(f"read of {self._info.key!r} after close")
        end = len(self._data) if size is None or size < 0 else self._pos + size
        piece = self._data[self._pos : end]
        self._pos += len(piece)
        return piece

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> MemoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryStorage:
    """A dict of ``key -> (bytes, ObjectInfo)``; ``name`` only shows in :meth:`url`."""

    features = Features(
        name="memory", atomic_create=True, metadata=True, write_checksums=False, local=False
    )

    def __init__(self, name: str = "test", *, page_size: int = 1000) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.name = name
        self.page_size = page_size
        self.requests: Counter[str] = Counter()
        self._objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self._keys: list[str] = []  # sorted
        self._lock = threading.Lock()

    def url(self, key: str = "") -> str:
        return f"memory://{self.name}/{key}"

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
        create_only: bool = True,
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        body = _read_all(data)
        info = ObjectInfo(key, len(body), time.time() if mtime is None else mtime, meta)
        with self._lock:
            self.requests["put"] += 1
            if key in self._objects:
                if create_only:
                    raise ObjectExists(f"{self.url(key)} already exists: not overwritten")
            else:
                bisect.insort(self._keys, key)
            self._objects[key] = (body, info)
        return info

    def put_file(
        self,
        key: str,
        path: str,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> ObjectInfo:
        return put_local_file(self, key, path, metadata=metadata, mtime=mtime)

    def batch(self) -> ImmediateBatch:
        """Every put is durable on its own: a batch writes at once (see ImmediateBatch)."""
        return ImmediateBatch(self)

    def abort_incomplete(self, prefix: str) -> int:
        """Every write is whole or absent in memory: nothing is ever left over."""
        check_prefix(prefix)
        return 0

    def open(self, key: str) -> MemoryReader | None:
        check_key(key)
        with self._lock:
            self.requests["get"] += 1
            entry = self._objects.get(key)
        return None if entry is None else MemoryReader(entry[1], entry[0])

    def head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        with self._lock:
            self.requests["head"] += 1
            entry = self._objects.get(key)
        return None if entry is None else entry[1]

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        return self._pages(prefix)

    def _pages(self, prefix: str) -> Iterator[ObjectInfo]:
        after: str | None = None
        while True:
            with self._lock:
                self.requests["list"] += 1
                start = (
                    bisect.bisect_left(self._keys, prefix)
                    if after is None
                    else bisect.bisect_right(self._keys, after)
                )
                page = [
                    self._objects[key][1]
                    for key in self._keys[start : start + self.page_size]
                    if key.startswith(prefix)
                ]
            yield from page
            if len(page) < self.page_size:
                return
            after = page[-1].key

    def delete(self, keys: Iterable[str]) -> None:
        checked = [check_key(key) for key in keys]  # all of them before deleting any
        for start in range(0, len(checked), 1000):
            self._delete_batch(checked[start : start + 1000])

    def _delete_batch(self, keys: Sequence[str]) -> None:
        with self._lock:
            self.requests["delete"] += 1
            for key in keys:
                if self._objects.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]


def _read_all(data: bytes | BinaryIO) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    parts: list[bytes] = []
    while piece := data.read(_READ_CHUNK):
        parts.append(piece)
    return b"".join(parts)
