"""Constants, parameters and small helpers shared by every part of the benchmark."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent  # bench/
REPO = HERE.parent
BASE = Path("/var/tmp/walvault-bench")
BENCH_USER = "walvault-bench"
PG_MAJOR = 15
SEG = 16 << 20
PAGE = 8192
SEGS_PER_LOG = 0x100000000 // SEG
CODECS = ("none", "gzip", "zstd", "lz4")
SECTIONS = (
    "archive",
    "encryption",
    "scale",
    "getwal",
    "ssh",
    "sshpush",
    "s3",
    "lag",
    "recovery",
)
BARMAN_VERSION = "3.20.1"
GNU_TIME = "/usr/bin/time"


def scratch_dir() -> Path:
    """This run's scratch files (captured output, GNU time's reports).  Per process: other
    runs of the bench may share the machine and ``BASE``, and each removes only its own."""
    return BASE / "tmp" / str(os.getpid())


class BenchError(Exception):
    """The benchmark cannot go on (the message says why)."""


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Params:
    quick: bool
    pool_min: int  # finished segments to collect
    pgbench_scale: int  # pgbench -i -s
    pgbench_min_seconds: int  # pgbench -T time at least (TPC-B WAL, not only COPY)
    pgbench_max_seconds: int
    archive_segments: int  # segments per archive-wal throughput run
    repeats: int
    scale_backlog: int
    scale_batch: int
    scale_repeats: int
    barman_scale_limit: float  # seconds
    single_calls: int
    first_calls: int  # first restore_command calls (each starts a restore agent)
    restore_segments: int
    ssh_segments: int  # restores over ssh, per tool and mode
    push_segments: int  # archive_command calls over ssh, per tool and mode
    lag_seconds: int  # pgbench -T while the lag is sampled, per tool
    recovery_segments: int  # WAL written after the backups, in 16 MiB segments
    s3_archive_segments: int  # segments per archive-wal run into the bucket
    s3_restore_segments: int  # segments restored from the bucket, per tool and mode

    @classmethod
    def make(cls, quick: bool) -> Params:
        if quick:
            return cls(
                quick=True,
                pool_min=60,
                pgbench_scale=80,
                pgbench_min_seconds=10,
                pgbench_max_seconds=60,
                archive_segments=60,
                repeats=3,
                scale_backlog=20_000,
                scale_batch=1000,
                scale_repeats=3,
                barman_scale_limit=60.0,
                single_calls=10,
                first_calls=3,
                restore_segments=60,
                ssh_segments=20,
                push_segments=40,
                lag_seconds=10,
                recovery_segments=5,
                s3_archive_segments=30,
                s3_restore_segments=20,
            )
        return cls(
            quick=False,
            pool_min=200,
            pgbench_scale=150,
            pgbench_min_seconds=30,
            pgbench_max_seconds=240,
            archive_segments=120,
            repeats=3,
            scale_backlog=200_000,
            scale_batch=1000,
            scale_repeats=5,
            barman_scale_limit=120.0,
            single_calls=20,
            first_calls=5,
            restore_segments=200,
            ssh_segments=60,
            push_segments=100,
            lag_seconds=20,
            recovery_segments=10,
            s3_archive_segments=60,
            s3_restore_segments=60,
        )


# --------------------------------------------------------------------------- small helpers


def test_harness(name: str) -> Any:
    """A module of the test suite's harness (``tests/<name>.py``): the bench runs the same
    servers the tests do (sshd, moto) rather than copies of them."""
    import importlib

    tests = HERE.parent / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    return importlib.import_module(name)


def log(msg: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rate(times: dict[str, list[float]], tool: str, amount: float) -> float | None:
    """``amount`` per second, over the median of ``times[tool]``."""
    med = median(times.get(tool, []))
    return amount / med if med else None


def seg_name(tli: int, segno: int) -> str:
    return f"{tli:08X}{segno // SEGS_PER_LOG:08X}{segno % SEGS_PER_LOG:08X}"


def seg_parse(name: str) -> tuple[int, int]:
    return int(name[:8], 16), int(name[8:16], 16) * SEGS_PER_LOG + int(name[16:24], 16)


def is_segment_name(name: str) -> bool:
    return re.fullmatch(r"[0-9A-F]{24}", name) is not None


def hash_dir(name: str) -> str:
    return name[:16]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"({exc})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fmt_num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_bytes(value: float) -> str:
    """Bytes in decimal units (B, kB, MB), as pg_size_pretty would but base 10."""
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{fmt_num(value / size)} {unit}"
    return f"{value:,.0f} B"


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def check_call(argv: Sequence[str], what: str, **kwargs: Any) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise BenchError(
            f"{what} failed (exit {proc.returncode}): {tail(proc.stderr or proc.stdout)}"
        )
    return str(proc.stdout)
