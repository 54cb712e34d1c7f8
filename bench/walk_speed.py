"""Time the WAL record walker against pg_waldump on real segments (a benchmark, not a test).

Usage: python bench/walk_speed.py DIR [--rounds N] [--pg-bindir DIR] [--json OUT]

DIR holds complete, uncompressed WAL segments of one timeline, in order (for instance what
``archive_command = 'cp %p DIR/%f'`` kept during ``pgbench -i`` and ``pgbench -T``).  For each
segment it reports the records, and the best of N rounds of:

* ``walk``: :func:`walvault.wal.records.walk_segment` on the bytes in memory, with the carry of
  the previous segment (what verify does for each segment, the read excluded);
* ``zstd+walk``: decompressing a zstd copy (compressed once beforehand) and walking it;
* ``pg_waldump``: ``pg_waldump -q -p DIR SEG SEG`` as a process (it reads the file itself and
  checks every record's CRC too; ``-q`` prints nothing).

Figures depend on the machine and its load: quote them with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from walvault.compression import compress_bytes, decompress_bytes
from walvault.wal.records import Carry, walk_segment


def best(rounds: int, work: Callable[..., object], *args: object, **kwargs: object) -> float:
    """The shortest of ``rounds`` timings of ``work(*args, **kwargs)``, in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def unpack_and_walk(packed: bytes, name: str, size: int, carry: Carry | None) -> object:
    return walk_segment(decompress_bytes("zstd", packed), name, segment_size=size, carry=carry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg-bindir", default="/usr/lib/postgresql/15/bin")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    names = sorted(n for n in os.listdir(args.directory) if len(n) == 24)
    if not names:
        print(f"no WAL segment in {args.directory}", file=sys.stderr)
        return 1
    waldump = os.path.join(args.pg_bindir, "pg_waldump")
    rows = []
    carry: Carry | None = None
    print(f"{'segment':24} {'records':>8} {'walk ms':>8} {'zstd+walk':>10} {'pg_waldump':>11}")
    for name in names:
        data = (args.directory / name).read_bytes()
        size = len(data)
        packed = compress_bytes("zstd", data)
        result = walk_segment(data, name, segment_size=size, carry=carry)
        walk = best(args.rounds, walk_segment, data, name, segment_size=size, carry=carry)
        both = best(args.rounds, unpack_and_walk, packed, name, size, carry)
        dump_argv = [waldump, "-q", "-p", str(args.directory), name, name]
        dump = best(args.rounds, subprocess.run, dump_argv, check=False)
        carry = result.carry
        rows.append(
            {
                "segment": name,
                "records": result.records,
                "verdict": result.verdict,
                "problems": list(result.problems),
                "walk_ms": round(walk * 1000, 1),
                "zstd_walk_ms": round(both * 1000, 1),
                "pg_waldump_ms": round(dump * 1000, 1),
            }
        )
        row = rows[-1]
        print(
            f"{name:24} {result.records:>8} {row['walk_ms']:>8} {row['zstd_walk_ms']:>10} "
            f"{row['pg_waldump_ms']:>11}" + (f"  {result.problems[0]}" if result.problems else "")
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
