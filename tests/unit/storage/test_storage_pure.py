"""Pure parts of the storage layer: metadata rules, the memory driver's request counts, the
one-line reasons made from obstore's multi-line errors, and the list start for a prefix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from walvault.storage.base import InvalidKey, check_metadata
from walvault.storage.memory import MemoryStorage
from walvault.storage.s3 import _list_start, describe_failure

# shapes of real obstore 0.12 messages (trimmed), as seen against moto and dead/hung ports
REFUSED = """Generic S3 error: Error performing GET http://127.0.0.1:49963/bkt1/k in 288.9ms, \
after 2 retries, max_retries: 2, retry_timeout: 5s  - HTTP error: error sending request

Debug source:
Generic {
    inner: Http(
        HttpError {
            kind: Connect,
            source: Os { code: 111, kind: ConnectionRefused, message: "Connection refused" },
"""
TIMEOUT = """Generic S3 error: Error performing PUT http://127.0.0.1:50023/bkt1/k in 1.0018s - \
HTTP error: error sending request

Debug source:
    inner: Http(HttpError { kind: Timeout, source: reqwest::Error { source: TimedOut } })
"""
STATUS = """Generic S3 error: Error performing GET http://127.0.0.1:1/b/k in 3.2ms - Server \
returned non-2xx status code: 503 Service Unavailable: <?xml version="1.0"?>
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>

Debug source:
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (REFUSED, "connection refused, endpoint http://x:1 (after 2 retries, 0.3 s)"),
        (TIMEOUT, "timed out, endpoint http://x:1 (1.0 s)"),
        (STATUS, "HTTP 503 Service Unavailable, SlowDown: Please reduce your request rate."),
        ("", "unknown error, endpoint http://x:1"),
    ],
)
def test_describe_failure_makes_one_line(text: str, expected: str) -> None:
    assert describe_failure(text, "http://x:1") == expected


def test_describe_failure_names_aws_when_there_is_no_endpoint() -> None:
    assert describe_failure(REFUSED).startswith("connection refused, endpoint AWS S3")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", (None, None)),
        ("a/b/", ("a/b", None)),
        ("a/b1", ("a", "a/b0")),
        ("top", (None, "too")),
        ("a/b0", ("a", "a/b/")),
    ],
)
def test_list_start(prefix: str, expected: tuple[str | None, str | None]) -> None:
    assert _list_start(prefix) == expected


def test_check_metadata_accepts_and_copies() -> None:
    meta = {"walvault-sha256": "ab" * 32, "compression": "zstd"}
    checked = check_metadata(meta)
    assert checked == meta and checked is not meta
    assert check_metadata(None) == {}
    with pytest.raises(InvalidKey, match="reserved"):
        check_metadata({"walvault-storage-x": "1"})


def test_memory_open_of_a_missing_key_is_one_get() -> None:
    storage = MemoryStorage()
    assert storage.open("absent") is None
    assert dict(storage.requests) == {"get": 1}


def test_memory_listing_is_lazy_page_by_page() -> None:
    storage = MemoryStorage(page_size=10)
    for n in range(35):
        storage.put(f"k/{n:02d}", b"")
    listing = storage.list("k/")
    assert storage.requests["list"] == 0
    next(listing)
    assert storage.requests["list"] == 1
    assert len(list(listing)) == 34
    assert storage.requests["list"] == 4


def test_importing_the_storage_modules_does_not_import_obstore() -> None:
    code = (
        "import sys, walvault.storage.s3, walvault.storage.s3config, walvault.storage.memory; "
        "print('obstore' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
