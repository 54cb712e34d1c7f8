"""Section `scale`: archive-wal with a batch of 1,000 over a small and a huge backlog."""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any

from wvbench.common import SEG, SEGS_PER_LOG, log, median, seg_name
from wvbench.homes import archive_cmd, count_archived, place_partial
from wvbench.report import Row
from wvbench.runner import Bench
from wvbench.tools import Run, run_timed

# ---- 200,000-file backlog


def _make_backlog(bench: Bench, directory: Path, tli: int, first_segno: int, count: int) -> None:
    """``count`` sparse 16 MiB segments with a real first page, plus the live ``.partial``.

    Each file's first page is the pool's first page with ``xlp_pageaddr`` set to the
    start of the file's own segment, so the header matches the name (same system
    identifier, timeline and sizes as the real cluster); the rest of the file is a hole.
    """
    directory.mkdir(parents=True, exist_ok=True)
    page = bytearray(bench.first_page)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for segno in range(first_segno, first_segno + count):
        struct.pack_into("<Q", page, 8, segno * SEG)
        struct.pack_into("<I", page, 4, tli)
        fd = os.open(directory / seg_name(tli, segno), flags, 0o600)
        try:
            os.write(fd, page)
            os.ftruncate(fd, SEG)
        finally:
            os.close(fd)
    place_partial(directory, seg_name(tli, first_segno + count - 1))


def scale(bench: Bench) -> None:
    p = bench.params
    batch = p.scale_batch
    extra = {"streaming_archiver_batch_size": str(batch)}
    tools = [t for t in ("walvault", "barman") if bench.tool_ready(t, "archive-wal")]
    homes = {t: bench.new_home(t, "none", extra) for t in tools}
    detail: dict[str, Any] = {
        "batch_size": batch,
        "backlog": p.scale_backlog,
        "compression": "none",
        "files": "sparse 16 MiB segments, real first page with its own page address",
        "runs": {},
    }
    bench.results.details["scale"] = detail
    stage = bench.work / "scale"

    def one_run(tool: str, directory: Path, limit: float | None) -> tuple[Run, int]:
        home = homes[tool]
        home.streaming.rmdir()
        os.rename(directory, home.streaming)
        try:
            before = len(os.listdir(home.streaming))
            archived_before = count_archived(home)
            os.sync()
            run = run_timed(archive_cmd(bench.tools, home), capture=True, timeout=limit)
            moved = before - len(os.listdir(home.streaming))
            added = count_archived(home) - archived_before
        finally:
            os.rename(home.streaming, directory)
            home.streaming.mkdir()
        if run.ok and added != moved:
            bench.results.errors.append(
                f"scale ({tool}): {moved} files left streaming/ but {added} reached the "
                "archive (duplicates or errors/?)"
            )
        return run, moved

    small_segno = 1 * SEGS_PER_LOG  # names 000000010000000100000000...
    # the big backlog's names start after every name the small runs use, at a log
    # boundary: a name archived twice would be a duplicate, and a duplicate is compared
    # byte by byte with its archived twin (that is another benchmark)
    small_end = small_segno + p.scale_repeats * batch
    big_segno = (small_end // SEGS_PER_LOG + 1) * SEGS_PER_LOG
    per_tool: dict[str, dict[str, Any]] = {
        t: {
            case: {"seconds": [], "maxrss_kib": [], "archived": [], "timed_out_after": None}
            for case in ("small", "big")
        }
        for t in tools
    }
    stopped: dict[str, set[str]] = {"small": set(), "big": set()}

    def measure(case: str, tool: str, directory: Path, waiting: int) -> None:
        data = per_tool[tool][case]
        limit = p.barman_scale_limit  # the same for both tools
        run, moved = one_run(tool, directory, limit)
        if run.timed_out:
            data["timed_out_after"] = limit
            stopped[case].add(tool)
            log(f"  backlog {waiting:>7,} {tool:8}: killed after {limit:.0f} s")
            return
        if not run.ok:
            bench.results.errors.append(f"scale, backlog {waiting} ({tool}): {run.describe()}")
            stopped[case].add(tool)
            return
        data["seconds"].append(run.elapsed)
        data["maxrss_kib"].append(run.maxrss_kib)
        data["archived"].append(moved)
        log(f"  backlog {waiting:>7,} {tool:8}: {run.elapsed:6.2f} s, {moved} files archived")
        if sum(data["seconds"]) > limit:
            # enough time spent on this tool: the bench must finish in minutes (an
            # outlier alone does not stop it: other sessions' I/O can stall one run)
            stopped[case].add(tool)

    # -- backlog = one batch (fresh files each time); the tools take turns going first
    for rep in range(p.scale_repeats):
        for tool in tools if rep % 2 == 0 else list(reversed(tools)):
            if tool in stopped["small"]:
                continue
            directory = stage / f"small-{tool}-{rep}"
            _make_backlog(bench, directory, 1, small_segno + rep * batch, batch)
            measure("small", tool, directory, batch)
            shutil.rmtree(directory)
    # -- backlog = 200,000 (or the quick figure), shrinking by one batch per run
    big = stage / "big"
    log(f"creating a backlog of {p.scale_backlog:,} sparse segments")
    t0 = time.monotonic()
    _make_backlog(bench, big, 1, big_segno, p.scale_backlog)
    os.sync()
    log(f"  created in {time.monotonic() - t0:.0f} s")
    for rep in range(p.scale_repeats):
        for tool in tools if rep % 2 == 0 else list(reversed(tools)):
            if tool in stopped["big"]:
                continue
            measure("big", tool, big, len(os.listdir(big)) - 1)
    detail["runs"] = per_tool
    shutil.rmtree(stage)
    for tool in tools:
        shutil.rmtree(homes[tool].root)

    def fig(tool: str, case: str) -> tuple[float | None, str | None]:
        if tool not in per_tool:
            return None, ("not built" if tool == "walvault" else "not installed")
        data = per_tool[tool].get(case, {})
        if data.get("seconds") and data.get("timed_out_after"):
            med = median(data["seconds"]) or 0.0
            return None, f"{med:.1f} s, then a run > {data['timed_out_after']:.0f} s"
        if data.get("seconds"):
            return median(data["seconds"]), None
        if data.get("timed_out_after"):
            return None, f"> {data['timed_out_after']:.0f} s"
        return None, "failed"

    note_small = (
        f"median of {p.scale_repeats}; Barman archives 999 files per batch of 1,000 "
        "(it holds back the batch's newest segment when no .partial is in the batch)"
    )
    note_big = (
        f"median of {p.scale_repeats} runs, the tools taking turns (the backlog shrinks by a "
        f"batch per run); a run is killed after {p.barman_scale_limit:.0f} s, and a tool "
        f"stops repeating once its runs add up to more than that"
    )
    for case, backlog, note in (
        ("small", batch, note_small),
        ("big", p.scale_backlog, note_big),
    ):
        (b, bt), (w, wt) = fig("barman", case), fig("walvault", case)
        bench.results.add(
            Row(
                "archive-wal scale",
                f"batch of {batch:,} with {backlog:,} waiting: seconds",
                "s",
                "lower",
                b,
                w,
                bt,
                wt,
                note=note,
            )
        )
    for tool in tools:
        small = median(per_tool[tool].get("small", {}).get("seconds", []))
        bigm = median(per_tool[tool].get("big", {}).get("seconds", []))
        if small and bigm:
            detail.setdefault("big_over_small", {})[tool] = bigm / small
    growth = detail.get("big_over_small", {})
    bench.results.add(
        Row(
            "archive-wal scale",
            f"time with {p.scale_backlog:,} waiting / time with {batch:,} waiting",
            "x",
            "info",
            growth.get("barman"),
            growth.get("walvault"),
            *bench.texts("archive-wal", {}),
            note="1.0 = the cost of a run does not depend on the backlog",
        )
    )
    rows_rss = {
        t: max(
            per_tool[t].get("small", {}).get("maxrss_kib", [])
            + per_tool[t].get("big", {}).get("maxrss_kib", [])
            or [0]
        )
        / 1024
        for t in tools
    }
    bench.results.add(
        Row(
            "archive-wal scale",
            f"batch of {batch:,}: peak memory",
            "MiB",
            "lower",
            rows_rss.get("barman") or None,
            rows_rss.get("walvault") or None,
            *bench.texts("archive-wal", {}),
        )
    )
