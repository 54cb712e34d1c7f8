"""Section `archive`: archive-wal throughput per codec, and a check of every archive."""

from __future__ import annotations

import os
import shutil
from typing import Any

from wvbench.common import CODECS, SEG, log, rate
from wvbench.homes import archive_cmd, archived_bytes, place_partial, verify_archive
from wvbench.report import Row
from wvbench.runner import Bench
from wvbench.tools import run_timed

# ---- archive-wal throughput


def archive_throughput(bench: Bench) -> None:
    p = bench.params
    # an evenly spread sample, so COPY-load WAL and TPC-B WAL are both represented; large
    # enough (120 segments, 60 with --quick) that a run measures compression rather than
    # start-up: at 100+ segments/s, a batch of 30 takes ~0.3 s, a fifth of it start-up (the
    # same segments for both tools; a larger batch dilutes the slower start-up, Barman's)
    sample = min(p.archive_segments, len(bench.segments))
    step = len(bench.segments) / sample
    spread = [bench.segments[int(i * step)] for i in range(sample)]
    tools = [t for t in ("barman", "walvault") if bench.tool_ready(t, "archive-wal")]
    detail: dict[str, Any] = {"segments": sample, "segments_none": len(bench.segments)}
    detail["runs"] = {}
    bench.results.details["archive_wal"] = detail
    for codec in CODECS:
        # without compression a run is a rename + fsync per file and the ~0.2 s start-up
        # of Python dominates a small batch: give it the whole pool
        names = list(bench.segments) if codec == "none" else spread
        count = len(names)
        size_in = count * SEG
        times: dict[str, list[float]] = {t: [] for t in tools}
        rss: dict[str, list[int]] = {t: [] for t in tools}
        cpu: dict[str, list[float]] = {t: [] for t in tools}
        ratio: dict[str, float] = {}
        failed: dict[str, str] = {}
        for rep in range(p.repeats):
            # alternate who goes first, so neither always runs on a "warmer" machine
            order = tools if rep % 2 == 0 else list(reversed(tools))
            for tool in order:
                if tool in failed:
                    continue
                home = bench.new_home(tool, codec)
                for name in names:
                    os.link(bench.pool / name, home.streaming / name)
                place_partial(home.streaming, names[-1])
                os.sync()
                run = run_timed(archive_cmd(bench.tools, home), capture=True)
                last = rep == p.repeats - 1
                problem = None if run.ok else run.describe()
                if problem is None:
                    problem = verify_archive(home, names, bench.hashes, content=last)
                if problem is not None:
                    failed[tool] = problem
                    bench.results.errors.append(f"archive-wal {codec} ({tool}): {problem}")
                    log(f"  {tool} {codec}: FAILED: {problem}")
                else:
                    times[tool].append(run.elapsed)
                    rss[tool].append(run.maxrss_kib)
                    cpu[tool].append(run.cpu_seconds)
                    ratio[tool] = size_in / archived_bytes(home, names)
                    log(
                        f"  archive-wal {codec:4} {tool:8} run {rep + 1}: {run.elapsed:7.2f} s "
                        f"({count / run.elapsed:6.1f} seg/s), {run.maxrss_kib / 1024:.0f} MiB, "
                        f"CPU {run.cpu_seconds:.2f} s "
                        f"({run.cpu_seconds / run.elapsed:.2f} cores busy)"
                    )
                shutil.rmtree(home.root)
        detail["runs"][codec] = {
            t: {
                "seconds": times[t],
                "cpu_seconds": cpu[t],
                "maxrss_kib": rss[t],
                "ratio": ratio.get(t),
            }
            for t in tools
        }

        label = "none" if codec == "none" else f"{codec}, default level"
        texts = bench.texts("archive-wal", failed)
        bench.results.add(
            Row(
                "archive-wal",
                f"{label}: segments/s",
                "seg/s",
                "higher",
                rate(times, "barman", count),
                rate(times, "walvault", count),
                *texts,
                note=f"{count} x 16 MiB, median of {p.repeats}",
            )
        )
        if codec != "none":
            bench.results.add(
                Row(
                    "archive-wal",
                    f"{label}: MB/s (input)",
                    "MB/s",
                    "higher",
                    rate(times, "barman", size_in / 1e6),
                    rate(times, "walvault", size_in / 1e6),
                    *texts,
                )
            )
        if codec != "none":
            bench.results.add(
                Row(
                    "archive-wal",
                    f"{label}: compression ratio",
                    "x",
                    "info",
                    ratio.get("barman"),
                    ratio.get("walvault"),
                    *texts,
                    note="bytes in / bytes archived",
                )
            )
        bench.results.add(
            Row(
                "archive-wal",
                f"{label}: peak memory",
                "MiB",
                "lower",
                (max(rss["barman"]) / 1024) if any(rss.get("barman", [])) else None,
                (max(rss["walvault"]) / 1024) if any(rss.get("walvault", [])) else None,
                *texts,
            )
        )
