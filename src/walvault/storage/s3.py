"""The S3 driver: :class:`S3Storage`, the storage contract on any S3-compatible store.

Built on obstore (Python bindings of Rust's ``object_store``), imported on first use only:
importing this module costs nothing beyond the standard library, and ``import obstore``
(~25-45 ms) happens when the first request is made.  Where the store is and how to reach it
(URL, endpoint, region, credentials, timeouts, encryption) is :mod:`.s3config`; its module
docstring lists the options and the credential chain.

How each operation maps to requests (what a user pays for, in AWS's request classes):

* ``put``: objects up to ``multipart_threshold`` (64 MiB) are ONE PUT, held in memory, with
  ``If-None-Match: *`` when create-only (S3 answers 412 if the key exists: atomic, nothing
  overwritten) and ``x-amz-checksum-sha256`` of the body, which S3 verifies before storing.
  The SHA-256 of the stored bytes also goes into the object's metadata
  (``x-amz-meta-walvault-storage-sha256``), so readers can verify what they get back (S3
  does not return its own checksum on a plain GET).  Bigger objects, and file-likes of
  unknown length that grow past the threshold, are multipart uploads (1 initiate + one PUT
  per 16 MiB part, 4 in flight, each part with its own SHA-256 checksum + 1 complete):
  memory stays near part size x concurrency.  obstore cannot make a multipart upload
  conditional, so a create-only multipart upload HEADs the key first and is not atomic
  against a concurrent writer of the same key (``Features.max_atomic_size``); it carries no
  whole-object digest either (per-part checksums only).  An interrupted multipart upload
  can leave invisible parts: give the bucket a lifecycle rule "abort incomplete multipart
  uploads after 1 day".
* ``open``: ONE GET, streamed (``read`` hands out pieces of the body as it arrives), the
  object's size and metadata known from the response headers before the first byte.  A
  missing key is that GET's 404 ``NoSuchKey``, never a LIST.  Any other 404 (no such bucket,
  a web server that is not S3 at the endpoint) is a :class:`StorageError`, never "missing":
  a restore_command must not end a recovery because of a typo in the bucket name.
* ``head``: ONE HEAD (size, metadata).  A HEAD 404 carries no body, so the first one per
  driver instance is followed by one LIST of at most one key to tell "no such key" from
  "no such bucket".
* ``list``: ListObjectsV2, 1,000 keys per request, fetched as the caller iterates, in key
  order (S3 lists general-purpose buckets in UTF-8 binary order).  A prefix that does not
  end in ``/`` is still a plain string prefix (``wals/0000000100000001`` finds ``...01.gz``):
  the listing starts just before it with ``start-after`` and stops after the last match.
* ``delete``: DeleteObjects, ``cloud_delete_batch_size`` (1,000) keys per request.
* ``abort_incomplete``: ListMultipartUploads of the prefix (1,000 per page) and one
  AbortMultipartUpload per upload found.  obstore has no API for either, so these two go
  through boto3 (:mod:`walvault.storage.s3uploads`, which alone imports it).
* ``read_range``: one ranged GET (``Range: bytes=start-end``): parallel downloads.

Every request has bounded timeouts (connect, no-progress, whole request) and is retried by
obstore with exponential back-off and jitter on 5xx, connection errors and (for GET, HEAD,
LIST) timeouts, within ``aws_retries`` and ``aws_retry_timeout``.  What still fails raises
:class:`StorageError` with one line: the operation, the ``s3://`` URL of the key, the reason
(status and S3 error code, or "connection refused", "timed out"...) and the retries made;
never credentials, never obstore's multi-line debug dump.

A create-only PUT whose response was lost and which obstore retried finds its own first
attempt: :class:`ObjectExists`.  Callers that may retry (the archive) compare the content on
ObjectExists, which makes that case a success.

moto (the test server) accepts any signature and does not verify ``x-amz-checksum-*``: the
unit tests check against a recording HTTP server that the checksum and metadata headers are
sent, and that a reader refuses bytes that do not match the recorded digest.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from walvault.storage.base import (
    DRIVER_METADATA_PREFIX,
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
from walvault.storage.s3config import MIN_PART_SIZE, S3Location, S3Settings, parse_s3_url

if TYPE_CHECKING:
    from obstore.store import S3Store

#: metadata key of the SHA-256 (hex) of the stored bytes, written by single PUTs
DIGEST_KEY = f"{DRIVER_METADATA_PREFIX}sha256"
#: attributes obstore returns that are HTTP headers, not user metadata
_STANDARD_ATTRIBUTES = frozenset(
    {
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-type",
        "cache-control",
        "storage-class",
    }
)
#: the size of the pieces a GET's body is handed over in
_STREAM_CHUNK = 1 << 20
_LIST_PAGE = 1000


class S3Storage:
    """The storage contract on one ``s3://bucket/prefix`` (see the module docstring)."""

    def __init__(self, location: S3Location | str, settings: S3Settings) -> None:
        self.location = parse_s3_url(location) if isinstance(location, str) else location
        self.settings = settings
        if settings.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.features = Features(
            name="s3",
            atomic_create=True,
            metadata=True,
            write_checksums=settings.checksum_algorithm is not None,
            local=False,
            max_atomic_size=settings.multipart_threshold,
        )
        self._store: S3Store | None = None
        self._lock = threading.Lock()
        self._bucket_seen = False

    @classmethod
    def from_options(
        cls, url: str, options: Mapping[str, object], environ: Mapping[str, str] | None = None
    ) -> S3Storage:
        """A driver for ``url`` configured by ``options`` (see :mod:`.s3config`)."""
        return cls(parse_s3_url(url), S3Settings.from_options(options, environ))

    def url(self, key: str = "") -> str:
        return self.location.key_url(key)

    def __repr__(self) -> str:
        return f"S3Storage({self.location.url!r}, endpoint={self.settings.endpoint!r})"

    # ------------------------------------------------------------ the client

    def _client(self) -> S3Store:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from obstore.store import S3Store

                    from walvault.storage.s3config import obstore_arguments

                    try:
                        self._store = S3Store(**obstore_arguments(self.location, self.settings))
                    except Exception as exc:  # obstore: ValueError or its BaseError
                        raise StorageError(
                            f"cannot set up S3 access to {self.url()}: {self.reason(exc)}"
                        ) from None
        return self._store

    def _fail(self, op: str, key: str, exc: BaseException) -> StorageError:
        """The one-line error for ``exc`` raised by obstore while doing ``op`` on ``key``
        (counted as a failed request of ``op``'s first word)."""
        import obstore.exceptions as oe

        count(op, ok=False)

        where = self.url(key)
        if isinstance(exc, oe.AlreadyExistsError | oe.PreconditionError) and op == "PUT":
            return ObjectExists(f"{where} already exists: not overwritten")
        return StorageError(f"S3 {op} {where} failed: {self.reason(exc)}")

    def reason(self, exc: BaseException) -> str:
        """``exc`` in words for an error line, the endpoint explained, secrets masked."""
        reason = describe_failure(str(exc), self.settings.endpoint)
        for secret in self.settings.secrets():
            reason = reason.replace(secret, "*****")
        return reason

    # ------------------------------------------------------------ writes

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
        create_only: bool = True,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` (``mtime`` cannot be set on S3 and is ignored)."""
        import obstore

        check_key(key)
        meta = check_metadata(metadata)
        store = self._client()
        threshold = self.settings.multipart_threshold
        head, rest = _first_bytes(data, threshold)
        if rest is None:  # small enough for one PUT
            attributes: dict[str, str] = {**meta, DIGEST_KEY: hashlib.sha256(head).hexdigest()}
            try:
                obstore.put(
                    store,
                    key,
                    head,
                    attributes=attributes,
                    mode="create" if create_only else "overwrite",
                    use_multipart=False,
                )
            except Exception as exc:
                raise self._fail("PUT", key, exc) from None
            count("PUT")
            return ObjectInfo(key, len(head), time.time(), meta)
        if create_only and self.head(key) is not None:
            raise ObjectExists(f"{self.url(key)} already exists: not overwritten")
        counter = _Counter()
        parts = counter.count(_parts(head, rest, self.settings.part_size))
        try:
            obstore.put(
                store,
                key,
                parts,
                attributes=dict(meta),
                use_multipart=True,
                chunk_size=self.settings.part_size,
                max_concurrency=self.settings.upload_concurrency,
            )
        except Exception as exc:
            raise self._fail("PUT (multipart)", key, exc) from None
        count("PUT")
        return ObjectInfo(key, counter.total, time.time(), meta)

    def delete(self, keys: Iterable[str]) -> None:
        import obstore

        checked = [check_key(key) for key in keys]  # every key before the first request
        store = self._client()
        size = self.settings.delete_batch_size
        for start in range(0, len(checked), size):
            batch = checked[start : start + size]
            try:
                obstore.delete(store, batch)
            except Exception as exc:
                what = batch[0] if len(batch) == 1 else f"{batch[0]} (+{len(batch) - 1} keys)"
                raise self._fail("DELETE", what, exc) from None
            count("DELETE")

    def abort_incomplete(self, prefix: str) -> int:
        """Abort every incomplete multipart upload under ``prefix``; return how many
        (boto3's, :mod:`walvault.storage.s3uploads`)."""
        from walvault.storage.s3uploads import abort_incomplete_uploads

        return abort_incomplete_uploads(self, prefix)

    # ------------------------------------------------------------ reads

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` .. ``end - 1`` of ``key`` (one ranged GET)."""
        import obstore

        check_key(key)
        try:
            data = bytes(obstore.get_range(self._client(), key, start=start, end=end))
        except FileNotFoundError as exc:
            count("GET", ok=False)
            raise StorageError(f"S3 GET (range) {self.url(key)} failed: no such key") from exc
        except Exception as exc:
            raise self._fail("GET (range)", key, exc) from None
        count("GET")
        return data

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

    def open(self, key: str) -> S3Reader | None:
        import obstore

        check_key(key)
        store = self._client()
        try:
            result = obstore.get(store, key)
        except FileNotFoundError as exc:
            self._check_not_found(key, str(exc), body_expected=True)
            count("GET")  # answered: no such key
            return None
        except Exception as exc:
            raise self._fail("GET", key, exc) from None
        count("GET")
        info, digest = _info(key, result.meta, result.attributes)
        return S3Reader(self, info, digest, result.stream(min_chunk_size=_STREAM_CHUNK))

    def head(self, key: str) -> ObjectInfo | None:
        import obstore

        check_key(key)
        store = self._client()
        try:
            result = obstore.get(store, key, options={"head": True})
        except FileNotFoundError as exc:
            self._check_not_found(key, str(exc), body_expected=False)
            count("HEAD")  # answered: no such key
            return None
        except Exception as exc:
            raise self._fail("HEAD", key, exc) from None
        count("HEAD")
        return _info(key, result.meta, result.attributes)[0]

    def _check_not_found(self, key: str, text: str, *, body_expected: bool) -> None:
        """Raise unless a 404 means "no such key" (see the module docstring)."""
        code = _xml_field(text, "Code")
        if code == "NoSuchKey":
            self._bucket_seen = True
            return
        if code is not None or body_expected:
            reason = describe_failure(text, self.settings.endpoint)
            raise StorageError(f"S3 GET {self.url(key)} failed: {reason}")
        if not self._bucket_seen:  # a HEAD: no body to tell a key from a bucket
            import obstore

            try:  # a listing that matches nothing: cheap, and NoSuchBucket if there is none
                obstore.list_with_delimiter(self._client(), "walvault-bucket-check")
            except Exception as exc:
                raise self._fail("HEAD", key, exc) from None
            self._bucket_seen = True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        self._client()  # configuration errors now, not at the first next()
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        import obstore

        parent, offset = _list_start(prefix)
        try:
            try:
                stream = obstore.list(self._client(), parent, offset=offset, chunk_size=_LIST_PAGE)
            except ValueError:  # an offset obstore does not take as a path: from the parent
                stream = obstore.list(self._client(), parent, chunk_size=_LIST_PAGE)
            for page in stream:
                count("LIST")
                for meta in page:
                    path = meta["path"]
                    if path.startswith(prefix):
                        yield ObjectInfo(path, meta["size"], meta["last_modified"].timestamp())
                    elif path > prefix:
                        return  # key order: nothing after this can match
        except StorageError:
            raise
        except Exception as exc:
            raise self._fail("LIST", prefix, exc) from None


def count(op: str, *, ok: bool = True) -> None:
    """One request for ``walvault serve``'s ``walvault_storage_requests_total``."""
    from walvault.counters import count_request

    count_request("s3", op.split()[0].lower(), ok=ok)


class S3Reader:
    """The body of one GET, read front to back, checked against size and digest at the end."""

    def __init__(
        self, storage: S3Storage, info: ObjectInfo, digest: str | None, stream: Iterator[bytes]
    ) -> None:
        self._storage = storage
        self._info = info
        self._digest = digest
        self._stream: Iterator[bytes] | None = iter(stream)
        self._hash = hashlib.sha256() if digest is not None else None
        self._buffer = bytearray()
        self._received = 0
        self._closed = False

    @property
    def info(self) -> ObjectInfo:
        return self._info

    def read(self, size: int = -1, /) -> bytes:
        if self._closed:
            raise StorageError(f"read of {self._storage.url(self._info.key)} after close")
        want = None if size is None or size < 0 else size
        while self._stream is not None and (want is None or len(self._buffer) < want):
            self._pull()
        if want is None or want >= len(self._buffer):
            piece = bytes(self._buffer)
            self._buffer.clear()
        else:
            piece = bytes(self._buffer[:want])
            del self._buffer[:want]
        return piece

    def _pull(self) -> None:
        assert self._stream is not None
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._stream = None
            self._verify()
            return
        except Exception as exc:
            self._stream = None
            raise self._storage._fail("GET (body)", self._info.key, exc) from None
        self._received += len(chunk)
        if self._hash is not None:
            self._hash.update(chunk)
        self._buffer += chunk

    def _verify(self) -> None:
        where = self._storage.url(self._info.key)
        if self._received != self._info.size:
            raise StorageError(
                f"S3 GET {where}: got {self._received} bytes of {self._info.size}: truncated"
            )
        if self._hash is not None and self._hash.hexdigest() != self._digest:
            raise StorageError(
                f"S3 GET {where}: the SHA-256 of the bytes read differs from the one recorded "
                "at upload: corrupt object or transfer"
            )

    def close(self) -> None:
        self._closed = True
        self._stream = None
        self._buffer.clear()

    def __enter__(self) -> S3Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- pure helpers


def _info(
    key: str, meta: Mapping[str, Any], attributes: Mapping[str, str]
) -> tuple[ObjectInfo, str | None]:
    """ObjectInfo of a GET/HEAD answer, and the recorded digest (None when absent)."""
    user: dict[str, str] = {}
    digest: str | None = None
    for name, value in attributes.items():
        lowered = name.lower()
        if lowered == DIGEST_KEY:
            digest = value.lower()
        elif lowered not in _STANDARD_ATTRIBUTES and not lowered.startswith(DRIVER_METADATA_PREFIX):
            user[lowered] = value
    info = ObjectInfo(key, int(meta["size"]), meta["last_modified"].timestamp(), user)
    return info, digest


def _first_bytes(data: bytes | BinaryIO, limit: int) -> tuple[bytes, Any]:
    """``(head, rest)``: all of ``data`` and None if it is at most ``limit`` bytes long;
    else its first bytes and what remains (a memoryview, or the file to read on)."""
    if isinstance(data, bytes):
        return (data, None) if len(data) <= limit else (b"", memoryview(data))
    if isinstance(data, bytearray | memoryview):
        view = memoryview(data).cast("B")
        return (bytes(view), None) if len(view) <= limit else (b"", view)
    buffer = bytearray()
    while len(buffer) <= limit:
        piece = data.read(limit + 1 - len(buffer))
        if not piece:
            return bytes(buffer), None
        buffer += piece
    return bytes(buffer), data


def _parts(head: bytes, rest: Any, part_size: int) -> Iterator[bytes | memoryview]:
    """The bytes of a multipart upload, in pieces of about ``part_size``."""
    if isinstance(rest, memoryview):
        for start in range(0, len(rest), part_size):
            yield rest[start : start + part_size]
        return
    view = memoryview(head)
    for start in range(0, len(view), part_size):
        yield view[start : start + part_size]
    while piece := rest.read(part_size):
        yield piece


class _Counter:
    """Counts the bytes going through an iterator."""

    def __init__(self) -> None:
        self.total = 0

    def count(self, pieces: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
        for piece in pieces:
            self.total += len(piece)
            yield piece


def _list_start(prefix: str) -> tuple[str | None, str | None]:
    """obstore's ``(prefix, offset)`` to list every key starting with ``prefix``.

    obstore's prefix is a whole path ("a/b" means "a/b/..."), so a prefix that does not end
    in '/' lists from its parent with ``start-after`` just before it.
    """
    if prefix == "" or prefix.endswith("/"):
        return (prefix.rstrip("/") or None), None
    parent = prefix.rpartition("/")[0] or None
    before = prefix[:-1] + chr(ord(prefix[-1]) - 1)
    parts = before.split("/")
    if any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] in (".", ".."):
        return parent, None
    return parent, before


def _xml_field(text: str, name: str) -> str | None:
    match = re.search(rf"<{name}>([^<]{{0,300}})</{name}>", text)
    return match.group(1).strip() if match else None


_STATUS = re.compile(r"status code: (\d{3})( [A-Za-z ]+)?")
_RETRIES = re.compile(r"after (\d+) retries")
_ELAPSED = re.compile(r" in ([\d.]+)(ns|µs|us|ms|s)\b")
_TRANSPORT = (
    ("ConnectionRefused", "connection refused"),
    ("Connection refused", "connection refused"),
    ("kind: Timeout", "timed out"),
    ("TimedOut", "timed out"),
    ("dns error", "cannot resolve the host name"),
    ("failed to lookup address", "cannot resolve the host name"),
    ("certificate", "TLS certificate not accepted"),
    ("ConnectionReset", "connection reset"),
    ("connection closed", "connection closed by the server"),
    ("IncompleteMessage", "connection closed by the server"),
    ("kind: Decode", "connection broken while receiving"),
    ("kind: Body", "connection broken while receiving"),
    ("error sending request", "connection failed"),
)


def describe_failure(text: str, endpoint: str | None = None) -> str:
    """One line saying why an obstore request failed, from its (multi-line) message."""
    parts: list[str] = []
    status = _STATUS.search(text)
    if status:
        parts.append(f"HTTP {status.group(1)}{(status.group(2) or '').rstrip()}")
        code, message = _xml_field(text, "Code"), _xml_field(text, "Message")
        if code:
            parts.append(code + (f": {message}" if message else ""))
    else:
        for marker, reason in _TRANSPORT:
            if marker in text:
                parts.append(reason)
                break
        else:
            first = text.strip().splitlines()[0] if text.strip() else "unknown error"
            parts.append(first.split(" - ")[-1][:200])
        parts.append(f"endpoint {endpoint or 'AWS S3'}")
    retries = _RETRIES.search(text)
    elapsed = _ELAPSED.search(text)
    extra: list[str] = []
    if retries:
        extra.append(f"after {retries.group(1)} retries")
    seconds = _seconds(float(elapsed.group(1)), elapsed.group(2)) if elapsed else 0.0
    if retries or seconds >= 0.5:
        extra.append(f"{seconds:.1f} s")
    reason = ", ".join(parts)
    return f"{reason} ({', '.join(extra)})" if extra else reason


def _seconds(value: float, unit: str) -> float:
    return value * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
