"""A real S3 API for the tests: moto's standalone server on 127.0.0.1 and a free port.

One server per test session (``MotoServer``, a child process: its memory and threads stay
out of pytest's), a fresh bucket per test, and everything reset after each test (moto keeps
objects in memory: keep them small).  Never bound to anything but loopback.

moto accepts any credentials and signature, and does not verify ``x-amz-checksum-*``
headers: tests that need those checked say so and use the recording server of
``tests/unit/storage``.  It does honour ``If-None-Match: *`` on PUT and on
CompleteMultipartUpload, ListObjectsV2 pagination and DeleteObjects.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

#: what every test S3 client uses: moto takes any key, and explicit keys keep obstore from
#: ever asking an instance metadata service (which is not on loopback)
TEST_ENVIRON: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "walvault-test-key",
    "AWS_SECRET_ACCESS_KEY": "walvault-test-secret-0123456789",
    "AWS_REGION": "us-east-1",
}
#: short timeouts and few retries, so that fault tests stay quick
FAST_OPTIONS: dict[str, str] = {
    "aws_connect_timeout": "2",
    "aws_read_timeout": "5",
    "aws_request_timeout": "20",
    "aws_retries": "2",
    "aws_retry_timeout": "10",
}

_bucket_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MotoServer:
    """``python -m moto.server -H 127.0.0.1 -p PORT`` as a child process."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        for _attempt in range(3):  # another process may take the free port first
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "MOTO_PORT": str(self.port)},
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self._answers():
                    return
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"moto server did not start; see {self.log_path}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # an HTTP answer of any kind: the server is up
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def _request(self, method: str, path: str) -> int:
        request = urllib.request.Request(f"{self.endpoint}{path}", method=method, data=b"")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (moto takes unsigned requests)."""
        name = name or f"wvt-{next(_bucket_numbers)}-{os.getpid()}"
        status = self._request("PUT", f"/{name}")
        if status != 200:
            raise RuntimeError(f"moto: creating bucket {name} answered {status}")
        return name

    def reset(self) -> None:
        """Forget every bucket and object (frees moto's memory between tests)."""
        self._request("POST", "/moto-api/reset")


def storage_options(endpoint: str, **extra: str) -> dict[str, str]:
    """Configuration options of an S3 driver talking to ``endpoint`` quickly."""
    return {"aws_endpoint_url": endpoint, **FAST_OPTIONS, **extra}


def make_storage(
    url: str, endpoint: str, environ: Mapping[str, str] | None = None, **extra: Any
) -> Any:
    """An S3Storage for ``url`` at ``endpoint``; ``extra``: options or S3Settings fields."""
    from dataclasses import replace

    from walvault.storage.s3 import S3Storage
    from walvault.storage.s3config import S3Settings

    fields = {k: v for k, v in extra.items() if not k.startswith(("aws_", "cloud_"))}
    options = storage_options(endpoint, **{k: v for k, v in extra.items() if k not in fields})
    settings = S3Settings.from_options(options, environ or TEST_ENVIRON)
    if fields:
        settings = replace(settings, **fields)
    return S3Storage(url, settings)


class HangingServer:
    """A loopback TCP server that accepts connections and never answers (a hung store)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)  # held open, never read from, never answered

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self.sock.close()


@contextmanager
def hanging_server() -> Iterator[HangingServer]:
    server = HangingServer()
    try:
        yield server
    finally:
        server.close()


class CuttingProxy:
    """A loopback TCP proxy in front of a store that can be made to refuse it, mid-stream.

    ``cut_at(marker)``: the first request whose bytes contain ``marker`` (an object name)
    has its connection closed unanswered, and from then on every connection is closed as
    soon as it is accepted -- a store that stopped answering halfway through a recovery.
    ``mend()`` forwards again.  HTTP only (the test store speaks plain HTTP on loopback).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.marker: bytes | None = None
        self.cut = threading.Event()
        self.cut_seen = threading.Event()  # the marked request arrived and was refused
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_at(self, marker: str) -> None:
        self.marker = marker.encode()

    def mend(self) -> None:
        self.marker = None
        self.cut.clear()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.cut.is_set():
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        back = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
        back.start()
        tail = b""
        try:
            while data := client.recv(1 << 16):
                seen, tail = tail + data, data[-256:]
                if self.cut.is_set() or (self.marker and self.marker in seen):
                    self.cut.set()
                    self.cut_seen.set()
                    break
                upstream.sendall(data)
        except OSError:
            pass
        for end in (client, upstream):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
