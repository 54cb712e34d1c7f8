"""The storage interface: what the archive asks of any store, a directory or a bucket.

Modelled on pgBackRest's storage drivers: one small set of operations, and each driver
*declares* what it guarantees (:class:`Features`) instead of the callers assuming it.

Keys are ``/``-separated paths relative to the store's root (``pg/wals/0000000100000000/
000000010000000000000001.zst``), checked by :func:`check_key`.  A store never sees ``..``,
an absolute path or an empty component.

Operations:

* :meth:`Storage.put` -- a create-only write by default: it fails with
  :class:`ObjectExists` if the key exists, and once it returns the object is durable (posix:
  temporary file, fsync, link into place, fsync of the directory; S3: the PUT was
  acknowledged).  ``metadata`` (short ASCII ``key -> value`` pairs) is kept with the
  object where the driver has ``Features.metadata``.
* :meth:`Storage.open` -- a streaming read, ``None`` when there is no such object.  The
  reader knows the object's :class:`ObjectInfo` (size, metadata) before the first byte.
* :meth:`Storage.head` -- exists and size (and metadata), without reading.
* :meth:`Storage.list` -- every object under a prefix, in key order, fetched page by page
  as the caller iterates (never the whole listing in memory).
* :meth:`Storage.delete` -- many keys at once (S3: batches of at most 1,000); keys that do
  not exist are not an error.
* :meth:`Storage.put_file` -- :meth:`Storage.put` of a local file; the posix driver links
  it into place instead of copying when it can (the source stays: the caller removes it once
  everything that depends on the copy is durable).
* :meth:`Storage.batch` -- many puts made durable together: the posix driver writes and
  fsyncs each file when it is given, then makes them all visible and fsyncs each directory
  once at :meth:`WriteBatch.commit`; where every put is durable on its own (S3), a batch
  puts at once and ``commit`` has nothing left to do.  Objects of a batch are visible only
  after ``commit`` on posix, at once on S3: callers must not depend on either.

* :meth:`Storage.abort_incomplete` -- remove the invisible leftovers of writes that never
  finished under a prefix (S3: abort its incomplete multipart uploads, whose parts are
  billed until aborted; posix: the temporary files of dead writers); returns how many.  The
  caller makes sure no live writer is working under that prefix.

Metadata keys are lower-case (S3 folds them; HTTP headers are case-insensitive) and checked
by :func:`check_metadata`; keys starting with :data:`DRIVER_METADATA_PREFIX` belong to the
drivers (S3: the SHA-256 of the stored bytes, verified on read) and are refused from callers
and hidden from them.

A reader verifies what it can before it reports the end of the object: the size the store
announced and, where the driver recorded one at write time, the digest of the stored
bytes.  A mismatch is a :class:`StorageError` from the ``read`` that reaches the end, so a
caller that reads to ``b""`` has either every byte as written or an exception.

Every failure of the store itself (unreachable, refused, timed out after the driver's
bounded retries, a checksum that does not match) raises :class:`StorageError` with one line
naming the store and the key.  Drivers import their client library lazily: nothing here
imports anything beyond the standard library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import BinaryIO, NamedTuple, Protocol

from walvault.errors import WalvaultError

#: Characters a key may contain (WAL names, backup ids, server names and our own files).
KEY_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/@+=")
MAX_KEY_LENGTH = 1024

#: Metadata keys: lower-case letters, digits and '-', starting with a letter or digit.
METADATA_KEY_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
MAX_METADATA_KEY_LENGTH = 64
#: S3 allows 2 KiB of user metadata (keys and values) per object; a driver may add its own
#: keys, so callers get a little less.
MAX_METADATA_BYTES = 1536
#: Keys with this prefix are a driver's own (see the module docstring).
DRIVER_METADATA_PREFIX = "walvault-storage-"


class StorageError(WalvaultError):
    """The store could not do what was asked (after the driver's own retries)."""


class ObjectExists(StorageError):
    """A create-only write found an object under its key (nothing was overwritten)."""


class InvalidKey(StorageError, ValueError):
    """A key that no store may be asked for (``..``, absolute, empty part, odd characters)."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid relative object key, else raise :class:`InvalidKey`."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"invalid storage key {key!r}: empty or longer than {MAX_KEY_LENGTH}")
    if not KEY_CHARACTERS.issuperset(key):
        raise InvalidKey(f"invalid storage key {key!r}: only letters, digits and ._-/@+= allowed")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey(f"invalid storage key {key!r}: empty, '.' or '..' path component")
    return key


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of ``metadata`` if every key and value may be stored, else :class:`InvalidKey`.

    Keys: lower-case letters, digits and ``-`` (at most 64, not starting with ``-`` nor with
    :data:`DRIVER_METADATA_PREFIX`); values: printable ASCII; all of it at most
    :data:`MAX_METADATA_BYTES`.
    """
    checked: dict[str, str] = {}
    total = 0
    for key, value in (metadata or {}).items():
        if (
            not isinstance(key, str)
            or not key
            or len(key) > MAX_METADATA_KEY_LENGTH
            or key.startswith("-")
            or not METADATA_KEY_CHARACTERS.issuperset(key)
        ):
            raise InvalidKey(
                f"invalid metadata key {key!r}: accepted: lower-case letters, digits and '-' "
                f"(at most {MAX_METADATA_KEY_LENGTH}, not starting with '-')"
            )
        if key.startswith(DRIVER_METADATA_PREFIX):
            raise InvalidKey(
                f"invalid metadata key {key!r}: keys starting with {DRIVER_METADATA_PREFIX!r} "
                "are reserved for the storage drivers"
            )
        if not isinstance(value, str) or not all(" " <= c <= "~" for c in value):
            raise InvalidKey(f"invalid metadata value for {key!r}: accepted: printable ASCII")
        total += len(key) + len(value)
        checked[key] = value
    if total > MAX_METADATA_BYTES:
        raise InvalidKey(
            f"metadata of {total} bytes is too large: at most {MAX_METADATA_BYTES} bytes "
            "of keys and values"
        )
    return checked


def check_prefix(prefix: str) -> str:
    """A listing prefix: "" (everything) or a valid key, optionally ending in ``/``."""
    if prefix == "":
        return prefix
    check_key(prefix.removesuffix("/"))
    return prefix


_NO_METADATA: Mapping[str, str] = MappingProxyType({})


class Features(NamedTuple):
    """What a driver guarantees; callers branch on these, never on the driver's type.
    (NamedTuples, not dataclasses, here: dataclasses' import of ``inspect`` costs every
    get-wal ~5 ms.)"""

    #: short driver name for messages and metrics: "posix", "s3", "memory"
    name: str
    #: :meth:`Storage.put` with ``create_only`` is atomic: two writers of one key cannot
    #: both succeed, and nothing is ever overwritten (S3: ``If-None-Match: *``).
    atomic_create: bool
    #: metadata given to :meth:`Storage.put` comes back from :meth:`Storage.open` / head.
    metadata: bool
    #: the driver sends a checksum of the bytes with each write that the store verifies
    #: (S3 ``x-amz-checksum-sha256``); False where only our own end-to-end digests protect.
    write_checksums: bool
    #: the store is this host's filesystem (renames are possible, listing is cheap).
    local: bool
    #: create-only puts are atomic up to this many bytes; above it the driver checks that
    #: the key is free and then writes, so a concurrent writer of the same key could slip in
    #: between (S3: single PUTs with ``If-None-Match: *`` up to the multipart threshold,
    #: multipart uploads above it).  None: atomic at any size.
    max_atomic_size: int | None = None


class ObjectInfo(NamedTuple):
    """One object: its key, stored size in bytes, modification time and metadata.

    ``mtime`` is seconds since the epoch (S3: LastModified).  ``metadata`` is empty when the
    driver has none, and may be empty in listings (S3 does not list metadata).
    """

    key: str
    size: int
    mtime: float
    metadata: Mapping[str, str] = _NO_METADATA


class Reader(Protocol):
    """An open object: a binary file-like, read front to back."""

    @property
    def info(self) -> ObjectInfo:
        """The object being read (known before the first byte)."""
        ...

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all that is left with -1); b"" at the end."""
        ...

    def close(self) -> None:
        """Release the descriptor or connection (idempotent)."""
        ...

    def __enter__(self) -> Reader: ...

    def __exit__(self, *exc: object) -> None: ...


class Storage(Protocol):
    """A store of objects (see the module docstring for the contract of each operation)."""

    features: Features

    def url(self, key: str = "") -> str:
        """Where ``key`` lives, for messages: ``/var/lib/walvault/pg/wals/...`` or
        ``s3://bucket/prefix/...`` (never with credentials)."""
        ...

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
        create_only: bool = True,
    ) -> ObjectInfo:
        """Store ``data`` (bytes, or a binary file read to its end) under ``key``, durably.

        With ``create_only`` (the default) an existing object is never replaced:
        :class:`ObjectExists`.  ``mtime`` is kept where the store can set it (posix).
        Returns the stored object's info.
        """
        ...

    def open(self, key: str) -> Reader | None:
        """A streaming reader of ``key``, or None when there is no such object."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """``key``'s info without reading it, or None when there is no such object."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order, lazily paginated."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Remove ``keys`` (absent ones are ignored), in batches."""
        ...

    def put_file(
        self,
        key: str,
        path: str,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> ObjectInfo:
        """Create-only :meth:`put` of the local file at ``path`` (which is left in place)."""
        ...

    def batch(self) -> WriteBatch:
        """A group of create-only writes committed together (see the module docstring)."""
        ...

    def abort_incomplete(self, prefix: str) -> int:
        """Remove what unfinished writes left under ``prefix``; return how many (see the
        module docstring)."""
        ...


class WriteBatch(Protocol):
    """Create-only writes made durable together by :meth:`commit`.

    ``put``/``put_file`` may be called from several threads.  ``commit`` returns, per key
    that could not be made visible, the error (``ObjectExists`` when another writer created
    it meanwhile); the others are durable.  ``discard`` drops what is not yet visible.
    """

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> ObjectInfo:
        """Write ``data`` for ``key`` (visible and durable at the latest after commit)."""
        ...

    def put_file(
        self,
        key: str,
        path: str,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> ObjectInfo:
        """Like :meth:`put` for the local file at ``path`` (left in place)."""
        ...

    def put_written(
        self,
        key: str,
        write: Callable[[BinaryIO], Mapping[str, str] | None],
        *,
        mtime: float | None = None,
    ) -> ObjectInfo:
        """Like :meth:`put` with the content written by ``write`` into a binary file (a
        compressor streams into it); ``write`` returns the metadata to keep, which may
        depend on what it wrote (a digest of the plain content)."""
        ...

    def commit(self) -> dict[str, StorageError]:
        """Make every write durable and visible; return the keys that failed, with why."""
        ...

    def discard(self) -> None:
        """Forget the writes that are not visible yet (their temporary data is removed)."""
        ...


#: Content written through :meth:`ImmediateBatch.put_written` stays in memory up to this
#: size, then goes to an unlinked temporary file (a compressed WAL segment is ~1-2 MiB).
SPOOL_IN_MEMORY = 64 << 20


class ImmediateBatch:
    """A :class:`WriteBatch` for stores whose every put is durable on its own (S3, memory):
    each write is made at once, create-only; ``commit`` only reports what failed."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._failures: dict[str, StorageError] = {}

    def _guard(self, key: str, work: Callable[[], ObjectInfo]) -> ObjectInfo:
        try:
            return work()
        except ObjectExists as exc:
            self._failures[key] = exc
            raise

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> ObjectInfo:
        return self._guard(key, lambda: self.storage.put(key, data, metadata=metadata, mtime=mtime))

    def put_file(
        self,
        key: str,
        path: str,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> ObjectInfo:
        return self._guard(
            key, lambda: self.storage.put_file(key, path, metadata=metadata, mtime=mtime)
        )

    def put_written(
        self,
        key: str,
        write: Callable[[BinaryIO], Mapping[str, str] | None],
        *,
        mtime: float | None = None,
    ) -> ObjectInfo:
        import tempfile

        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
            metadata = write(spool)  # type: ignore[arg-type]
            spool.seek(0)
            return self.put(key, spool, metadata=metadata, mtime=mtime)  # type: ignore[arg-type]

    def commit(self) -> dict[str, StorageError]:
        failures, self._failures = self._failures, {}
        return failures

    def discard(self) -> None:
        self._failures.clear()


def put_local_file(
    storage: Storage,
    key: str,
    path: str,
    *,
    metadata: Mapping[str, str] | None = None,
    mtime: float | None = None,
) -> ObjectInfo:
    """:meth:`Storage.put_file` for drivers with nothing better than reading the file."""
    with open(path, "rb") as handle:
        return storage.put(key, handle, metadata=metadata, mtime=mtime)
