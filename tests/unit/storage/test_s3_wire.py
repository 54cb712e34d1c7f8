"""What S3Storage puts on the wire and how it reads answers, against a scripted S3 peer.

moto (the integration tests' S3) accepts any signature and never verifies
``x-amz-checksum-*``, and cannot be made to corrupt a body or answer 503.  This loopback
HTTP server records every request and answers from a script, so these tests can assert
the headers we rely on are sent (checksums, If-None-Match, metadata), that a body that does
not match its recorded digest is refused, and how each kind of failure is reported.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from s3harness import TEST_ENVIRON, make_storage
from walvault.storage.base import ObjectExists, StorageError
from walvault.storage.s3 import DIGEST_KEY, S3Storage


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Script = Callable[[Request], Answer | None]


class ScriptedS3:
    """A loopback HTTP/1.1 server: records requests, answers with ``script`` (or a default)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: Script = lambda request: None
        self.objects: dict[str, Answer] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                outer.requests.append(request)
                answer = outer.script(request) or outer.default(request)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in answer.headers:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def default(self, request: Request) -> Answer:
        path = request.path.split("?")[0]
        if request.method == "POST" and request.path.endswith("?uploads="):
            return Answer(body=_xml("InitiateMultipartUploadResult", "<UploadId>U1</UploadId>"))
        if request.method == "POST" and "uploadId=" in request.path:
            return Answer(body=_xml("CompleteMultipartUploadResult", '<ETag>"x-2"</ETag>'))
        if request.method == "POST" and "delete" in request.path:
            keys = re.findall(rb"<Key>([^<]*)</Key>", request.body)
            deleted = "".join(f"<Deleted><Key>{k.decode()}</Key></Deleted>" for k in keys)
            return Answer(body=_xml("DeleteResult", deleted))
        if request.method == "PUT":
            return Answer(headers={"ETag": '"e"'})
        if request.method == "GET" and "list-type=2" in request.path:
            return Answer(body=_xml("ListBucketResult", "<KeyCount>0</KeyCount>"))
        if request.method in ("GET", "HEAD") and path in self.objects:
            return self.objects[path]
        if request.method == "GET":
            return Answer(404, body=_error("NoSuchKey", "The specified key does not exist."))
        return Answer(404)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _xml(root: str, inner: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><{root}>{inner}</{root}>'.encode()


def _error(code: str, message: str) -> bytes:
    return _xml("Error", f"<Code>{code}</Code><Message>{message}</Message>")


def _object(body: bytes, **meta: str) -> Answer:
    headers = {
        "Last-Modified": "Sun, 06 Dec 2026 20:00:00 GMT",
        "ETag": '"abc"',
        "Content-Type": "application/octet-stream",
        **{f"x-amz-meta-{k}": v for k, v in meta.items()},
    }
    return Answer(headers=headers, body=body)


@pytest.fixture
def peer() -> Iterator[ScriptedS3]:
    server = ScriptedS3()
    try:
        yield server
    finally:
        server.close()


def storage_for(peer: ScriptedS3, **extra: object) -> S3Storage:
    storage: S3Storage = make_storage("s3://bkt/pfx", peer.endpoint, **extra)
    return storage


def b64sha256(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# ---------------------------------------------------------------- writes


def test_single_put_sends_its_checksum_the_create_condition_and_metadata(peer: ScriptedS3) -> None:
    storage = storage_for(peer)
    storage.put("pg/wals/seg", b"hello", metadata={"compression": "zstd"})
    (put,) = peer.requests
    assert (put.method, put.path, put.body) == ("PUT", "/bkt/pfx/pg/wals/seg", b"hello")
    assert put.headers["x-amz-checksum-sha256"] == b64sha256(b"hello")
    assert put.headers["if-none-match"] == "*"
    assert put.headers[f"x-amz-meta-{DIGEST_KEY}"] == hashlib.sha256(b"hello").hexdigest()
    assert put.headers["x-amz-meta-compression"] == "zstd"
    assert "walvault-test-secret" not in repr(put.headers)  # signed, never sent


def test_overwrite_put_has_no_condition(peer: ScriptedS3) -> None:
    storage_for(peer).put("k", b"x", create_only=False)
    assert "if-none-match" not in peer.requests[0].headers


def test_a_412_answer_is_object_exists(peer: ScriptedS3) -> None:
    peer.script = lambda r: Answer(412, body=_error("PreconditionFailed", "At least one"))
    with pytest.raises(ObjectExists, match="s3://bkt/pfx/k already exists"):
        storage_for(peer).put("k", b"x")


def test_multipart_upload_sends_a_checksum_with_every_part(peer: ScriptedS3) -> None:
    storage = storage_for(peer, multipart_threshold=6 << 20, part_size=5 << 20)
    data = os.urandom((11 << 20) + 5)
    storage.put("base/data.tar", data, metadata={"kind": "tar"})
    # create-only above the threshold: HEAD first (and, on its 404, the one bucket check)
    assert (peer.requests[0].method, peer.requests[0].path) == ("HEAD", "/bkt/pfx/base/data.tar")
    assert peer.requests[1].method == "GET" and "list-type=2" in peer.requests[1].path
    init = peer.requests[2]
    assert init.path.endswith("?uploads=")
    assert init.headers["x-amz-checksum-algorithm"] == "SHA256"
    assert init.headers["x-amz-meta-kind"] == "tar"
    parts = [r for r in peer.requests if r.method == "PUT"]
    assert len(parts) == 3
    assert b"".join(p.body for p in sorted(parts, key=lambda p: p.path)) == data
    for part in parts:
        assert part.headers["x-amz-checksum-sha256"] == b64sha256(part.body)
    assert peer.requests[-1].method == "POST" and "uploadId=U1" in peer.requests[-1].path


def test_delete_objects_go_in_batches_with_an_integrity_header(peer: ScriptedS3) -> None:
    storage = storage_for(peer, cloud_delete_batch_size="2")
    storage.delete(["a", "b", "c"])
    posts = [r for r in peer.requests if r.method == "POST"]
    assert len(posts) == 2
    for post in posts:
        assert "delete" in post.path
        # S3 refuses a DeleteObjects without Content-MD5 or an x-amz-checksum-*
        assert "content-md5" in post.headers or any(
            h.startswith("x-amz-checksum-") for h in post.headers
        )
    assert re.findall(rb"<Key>([^<]*)</Key>", posts[0].body + posts[1].body) == [
        b"pfx/a",
        b"pfx/b",
        b"pfx/c",
    ]


# ---------------------------------------------------------------- reads


def test_reader_refuses_a_body_that_differs_from_the_recorded_digest(peer: ScriptedS3) -> None:
    peer.objects["/bkt/pfx/seg"] = _object(
        b"corrupted bytes", **{DIGEST_KEY: hashlib.sha256(b"original bytes!").hexdigest()}
    )
    reader = storage_for(peer).open("seg")
    assert reader is not None
    with reader, pytest.raises(StorageError, match="SHA-256") as caught:
        reader.read()
    assert "\n" not in str(caught.value)


def test_reader_passes_a_matching_digest_and_objects_without_one(peer: ScriptedS3) -> None:
    peer.objects["/bkt/pfx/ours"] = _object(
        b"payload", **{DIGEST_KEY: hashlib.sha256(b"payload").hexdigest(), "compression": "gz"}
    )
    peer.objects["/bkt/pfx/barmans"] = _object(b"written by barman-cloud")
    storage = storage_for(peer)
    reader = storage.open("ours")
    assert reader is not None
    with reader:
        assert reader.info.metadata == {"compression": "gz"}  # the digest stays hidden
        assert reader.read(3) + reader.read() == b"payload"
    reader = storage.open("barmans")
    assert reader is not None
    with reader:
        assert reader.read() == b"written by barman-cloud"


def test_a_missing_key_is_one_get_and_no_listing(peer: ScriptedS3) -> None:
    assert storage_for(peer).open("pg/wals/0000000100000000/000000010000000000000009") is None
    assert [r.method for r in peer.requests] == ["GET"]


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (Answer(404, body=_error("NoSuchBucket", "The specified bucket does not exist")), "NoSuch"),
        (Answer(404, {"Content-Type": "text/html"}, b"<html>Not Found</html>"), "HTTP 404"),
    ],
)
def test_a_404_that_is_not_no_such_key_is_an_error(
    peer: ScriptedS3, answer: Answer, words: str
) -> None:
    peer.script = lambda r: answer
    with pytest.raises(StorageError) as caught:
        storage_for(peer).open("seg")
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_head_404_checks_the_bucket_once(peer: ScriptedS3) -> None:
    storage = storage_for(peer)
    assert storage.head("a") is None
    assert storage.head("b") is None
    assert [r.method for r in peer.requests] == ["HEAD", "GET", "HEAD"]  # one LIST, once
    peer.script = lambda r: (
        Answer(404, body=_error("NoSuchBucket", "no bucket")) if r.method == "GET" else None
    )
    with pytest.raises(StorageError, match="NoSuchBucket"):
        storage_for(peer).head("a")


# ---------------------------------------------------------------- failures


def test_503_is_retried_then_reported_in_one_line(peer: ScriptedS3) -> None:
    peer.script = lambda r: Answer(503, body=_error("SlowDown", "Please reduce your request rate."))
    storage = storage_for(peer, aws_retries="2")
    with pytest.raises(StorageError) as caught:
        storage.open("pg/seg")
    message = str(caught.value)
    assert len(peer.requests) == 3  # the first try and 2 retries
    assert message.startswith("S3 GET s3://bkt/pfx/pg/seg failed: HTTP 503")
    assert "SlowDown: Please reduce your request rate." in message
    assert "after 2 retries" in message and "\n" not in message


def test_403_is_not_retried_and_never_shows_secrets(peer: ScriptedS3) -> None:
    secret = TEST_ENVIRON["AWS_SECRET_ACCESS_KEY"]
    peer.script = lambda r: Answer(403, body=_error("AccessDenied", f"denied, key {secret}"))
    with pytest.raises(StorageError) as caught:
        storage_for(peer).put("k", b"x")
    message = str(caught.value)
    assert len(peer.requests) == 1
    assert "AccessDenied" in message and secret not in message and "*****" in message
