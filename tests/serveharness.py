"""Running ``walvault serve`` in integration tests: start it, read its port, ask it over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from wvharness import WALVAULT, Walvault, wait_for


def _drain(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


class Serve:
    """A ``walvault serve`` process on a free loopback port (stopped at teardown)."""

    def __init__(self, wv: Walvault, *args: str) -> None:
        self.wv = wv
        self.proc = subprocess.Popen(
            [*WALVAULT, "-c", str(wv.conf), "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wv.procs.append(self.proc)  # stopped (SIGINT) by the walvault_factory fixture
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        if not found:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"walvault serve did not start: {first!r} {err}")
        self.port = int(found.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        # keep reading what it prints, so that a full pipe never blocks the service
        self.output: list[str] = [first]
        self.errors: list[str] = []
        for stream, lines in ((self.proc.stdout, self.output), (self.proc.stderr, self.errors)):
            threading.Thread(target=_drain, args=(stream, lines), daemon=True).start()

    def get(self, path: str, *, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
        """GET ``path``: status, headers (lower-case names), body."""
        request = urllib.request.Request(self.url + path)
        if host is not None:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                headers = {k.lower(): v for k, v in answer.headers.items()}
                return answer.status, headers, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def status(self) -> dict[str, Any]:
        """``/api/status``."""
        code, _, body = self.get("/api/status")
        assert code == 200, body
        return dict(json.loads(body))

    def server(self, name: str = "pg") -> dict[str, Any]:
        """One server of ``/api/status``."""
        return next(s for s in self.status()["servers"] if s["name"] == name)

    def metrics(self) -> str:
        """``/metrics`` as text."""
        code, headers, body = self.get("/metrics")
        assert code == 200, body
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        return body.decode()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        """Signal the service and wait for its exit code."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def receivers_for(directory: Path | str) -> list[int]:
    """PIDs of pg_receivewal processes writing into ``directory`` (from /proc)."""
    wanted = f"--directory={directory}"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_receivewal") and wanted.encode() in argv:
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    if handle.read().rpartition(b")")[2].split()[0] in (b"Z", b"X"):
                        continue
            except OSError:
                continue
            found.append(int(entry))
    return found


def streaming_pid(serve: Serve, name: str = "pg", timeout: float = 30) -> int:
    """The pg_receivewal PID once serve reports the receiver streaming."""
    receiver = wait_for(
        lambda: (r := serve.server(name)["receiver"])["up"] and r,
        timeout=timeout,
        what="receiver up",
    )
    return int(receiver["pg_receivewal_pid"])


def elapsed_until(predicate: Any, timeout: float) -> float:
    """Seconds until ``predicate()`` is true (AssertionError after ``timeout``)."""
    start = time.monotonic()
    wait_for(predicate, timeout=timeout, what="condition")
    return time.monotonic() - start
