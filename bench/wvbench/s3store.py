"""moto's S3 server on 127.0.0.1 for the `s3` section, and reading buckets back with boto3.

The bench starts its own server (``python -m moto.server -H 127.0.0.1 -p PORT`` with the
bench's own Python, which needs ``moto[server]``: the test venv has it) with the test
suite's own harness (tests/s3harness.py).  moto keeps every object in memory and
accepts any credentials; it runs in Python on the same cores as the tools, so its own cost
is in every figure of both tools.  Buckets are read back with boto3 (which moto brings),
independently of walvault's S3 driver, to check what each tool uploaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wvbench.common import BenchError, hash_dir, tail, test_harness

#: the (throwaway) credentials every S3 client of the bench uses; moto takes any key
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "walvault-bench-key",
    "AWS_SECRET_ACCESS_KEY": "walvault-bench-secret-0123456789",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: variables of the bench's own environment that would point a client elsewhere
_FOREIGN = ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE")


def moto_missing() -> str | None:
    """Why this Python cannot run moto's server or boto3 (None when it can)."""
    for module in ("moto.server", "boto3"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return (
                f"{sys.executable} cannot import {module} ({exc}); run the bench with a "
                "Python that has moto[server], e.g. the test venv of scripts/test.sh"
            )
    return None


def environ(endpoint: str) -> dict[str, str]:
    """The environment of every S3 command of the section: the bench's own, the throwaway
    credentials, and the endpoint in ``AWS_ENDPOINT_URL`` (Barman's server-mode cloud WAL
    storage reads it; walvault has it in ``aws_endpoint_url`` too; barman-cloud clients
    get ``--endpoint-url``)."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    env.update(CREDENTIALS)
    env["AWS_ENDPOINT_URL"] = endpoint
    return env


class Moto:
    """moto's standalone S3 server, the test suite's (``tests/s3harness.py``), plus what the
    bench reads of it: a reset between runs, its CPU time and its memory."""

    def __init__(self, log_path: Path) -> None:
        self.server = test_harness("s3harness").MotoServer(log_path)
        self.log_path = log_path

    @property
    def endpoint(self) -> str:
        return str(self.server.endpoint)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        proc: subprocess.Popen[bytes] | None = self.server.proc
        return proc

    def start(self, timeout: float = 60.0) -> None:
        try:
            self.server.start(timeout)
        except RuntimeError:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise BenchError(f"moto's S3 server did not start: {tail(text, 5)}") from None

    def stop(self) -> None:
        self.server.stop()

    def fresh_buckets(self, *names: str) -> None:
        """Forget every bucket and object (moto's memory), then create ``names`` empty."""
        self.server.reset()
        for name in names:
            try:
                self.server.create_bucket(name)
            except RuntimeError as exc:
                raise BenchError(str(exc)) from None

    def cpu_seconds(self) -> float:
        """moto's CPU time so far (user + system): the store's share of a run's cost."""
        with contextlib.suppress(OSError, ValueError, IndexError, AssertionError):
            assert self.proc is not None
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return 0.0

    def rss_kib(self) -> int:
        """moto's resident set now (it grows with the objects it holds)."""
        with contextlib.suppress(OSError, ValueError, IndexError, AssertionError):
            assert self.proc is not None
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def client(endpoint: str) -> Any:
    """A boto3 S3 client for the server (boto3 ships no types: Any)."""
    boto3 = importlib.import_module("boto3")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=CREDENTIALS["AWS_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def list_keys(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Every key under ``prefix`` with its size (ListObjectsV2, paginated)."""
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[str(item["Key"])] = int(item["Size"])
    return found


def segment_key(prefix: str, name: str, extension: str) -> str:
    """barman-cloud's key of a segment: ``PATH/<server>/wals/<16 hex>/<name><ext>``."""
    return f"{prefix}/pg/wals/{hash_dir(name)}/{name}{extension}"


def verify_bucket(
    s3: Any,
    bucket: str,
    prefix: str,
    names: Sequence[str],
    hashes: dict[str, str],
    content: bool,
) -> tuple[str | None, int]:
    """(None or what is wrong, bytes stored): every segment of ``names`` is in the bucket as
    a zstd object under barman-cloud's key and, with ``content``, decompresses to the
    original bytes (sha256)."""
    from walvault import compression

    keys = list_keys(s3, bucket, f"{prefix}/pg/wals/")
    wanted = {name: segment_key(prefix, name, ".zst") for name in names}
    missing = [name for name, key in wanted.items() if key not in keys]
    if missing:
        return (
            f"{len(missing)} of {len(names)} segments missing from s3://{bucket}/{prefix} "
            f"(first: {missing[0]}; {len(keys)} objects there)"
        ), 0
    if content:
        for name, key in wanted.items():
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            digest = hashlib.sha256()
            for piece in compression.iter_decompressed(io.BytesIO(body), "zstd"):
                digest.update(piece)
            if digest.hexdigest() != hashes[name]:
                return f"s3://{bucket}/{key} does not decompress to the original segment", 0
    return None, sum(keys[key] for key in wanted.values())
