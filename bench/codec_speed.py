"""Measure WAL codec throughput and ratio, single-threaded and with two threads (not a test).

Usage: python bench/codec_speed.py [--rounds N] [--levels low,medium,high]
Set WALVAULT_SAMPLE_WAL=/path/to/a/16MiB/segment to use a real WAL file instead of pseudo-WAL.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import struct
import time
from concurrent.futures import ThreadPoolExecutor

from walvault import compression

SEGMENT = 16 << 20
PAGE = 8192


def pseudo_wal(seed: int = 42) -> bytes:
    """Build 16 MiB that looks like PG15 WAL: page headers, record headers, tuples, FPIs."""
    rng = random.Random(seed)
    filler = b" " * 84
    out = bytearray()
    lsn = 0x3000000
    while len(out) < SEGMENT:
        if len(out) % PAGE == 0:
            out += struct.pack("<HHIQI4x", 0xD110, 0x0005, 1, lsn, 0)
        kind = rng.random()
        if kind < 0.08:  # full-page image: a heap page of similar tuples, hole removed
            ntup = rng.randint(20, 60)
            body = b"".join(
                struct.pack("<IIIHH", rng.randint(1, 10**6), i, rng.randint(0, 5000), 2, 0x0802)
                + struct.pack("<iii", i + 1, rng.randint(1, 100), rng.randint(-5000, 5000))
                + filler
                for i in range(ntup)
            )
        elif kind < 0.2:  # commit record
            body = struct.pack("<qI", int(time.time() * 1e6), rng.getrandbits(32))
        else:  # heap update/insert with a pgbench-like tuple
            body = (
                struct.pack(
                    "<IHHiii",
                    rng.randint(1, 10**6),
                    rng.randint(1, 200),
                    0x0802,
                    rng.randint(1, 10**5),
                    rng.randint(1, 100),
                    rng.randint(-5000, 5000),
                )
                + filler
            )
        header = struct.pack(
            "<IIQBBxxI", 24 + len(body), rng.randint(700, 900), lsn, 0x10, 10, rng.getrandbits(32)
        )
        record = header + body
        lsn += len(record)
        room = PAGE - len(out) % PAGE
        out += record[:room] if len(record) > room else record
    return bytes(out[:SEGMENT])


class NullSink(io.RawIOBase):
    """A writable that discards data and counts bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.size += len(data)
        return len(data)


def run(algo: str, level: str | int, data: bytes, jobs: int, rounds: int) -> tuple[float, float]:
    """Best-of-``rounds`` segments/s compressing 2 segments per worker; also the ratio."""

    def one(_: int) -> int:
        sink = NullSink()
        compression.compress_stream(algo, level, io.BytesIO(data), sink)  # type: ignore[arg-type]
        return sink.size

    best = 0.0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        size = max(pool.map(one, range(jobs)))  # warm-up
        for _ in range(rounds):
            start = time.perf_counter()
            list(pool.map(one, range(2 * jobs)))
            best = max(best, 2 * jobs / (time.perf_counter() - start))
    return best, len(data) / size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", default="medium")
    args = parser.parse_args()
    sample = os.environ.get("WALVAULT_SAMPLE_WAL")
    if sample:
        with open(sample, "rb") as handle:
            data = handle.read()
    else:
        data = pseudo_wal()
    print(f"input: {sample or 'pseudo-WAL'} ({len(data) >> 20} MiB), rounds={args.rounds}")
    print(f"{'algorithm':10} {'level':>6} {'ratio':>7} {'1 thread':>20} {'2 threads':>20}")
    start = time.perf_counter()
    ref = gzip.compress(data, 6)
    took = time.perf_counter() - start
    print(
        f"{'py-gzip':10} {6:>6} {len(data) / len(ref):7.2f} "
        f"{len(data) / took / 1e6:8.1f} MB/s {1 / took:5.1f}/s"
    )
    for level_name in args.levels.split(","):
        for algo in compression.ALGORITHMS:
            level = compression.resolve_level(algo, level_name)
            cells = []
            ratio = 0.0
            for jobs in (1, 2):
                segs, ratio = run(algo, level, data, jobs, args.rounds)
                cells.append(f"{segs * len(data) / 1e6:8.1f} MB/s {segs:5.1f}/s")
            print(f"{algo:10} {level:>6} {ratio:7.2f} {cells[0]:>20} {cells[1]:>20}")


if __name__ == "__main__":
    main()
