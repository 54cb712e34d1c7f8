"""Section `lag`: how far behind ``pg_current_wal_lsn()`` each receiver is shown under pgbench.

Also the receivers' life cycle (start through ``cron``, wait until streaming, stop, drop the
slot), which section `recovery` uses as well.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wvbench.cluster import pgbench_argv
from wvbench.common import (
    PAGE,
    SEG,
    BenchError,
    fmt_bytes,
    is_segment_name,
    log,
    median,
    read_text,
    seg_parse,
    tail,
)
from wvbench.homes import Home
from wvbench.report import Row
from wvbench.runner import Bench, no_figure
from wvbench.tools import processes_mentioning, reap_strays, run_timed

SAMPLE_EVERY = 0.1  # seconds
XLP_MAGIC = 0xD110  # PostgreSQL 15's WAL page magic


@dataclass
class Receiver:
    """One tool's home set up for streaming, with its own slot and application_name."""

    tool: str
    home: Home
    slot: str  # also its streaming_archiver_name: the application_name in pg_stat_replication
    started: bool = False


def stream_home(
    bench: Bench, tool: str, purpose: str, codec: str, extra: dict[str, str] | None = None
) -> Receiver:
    name = f"wvb_{purpose}_{tool}"
    options = {"create_slot": "auto", "streaming_archiver_name": name, **(extra or {})}
    home = bench.new_home(tool, codec, options, slot=name)
    return Receiver(tool, home, name)


def log_tail(rec: Receiver) -> str:
    return tail(read_text(rec.home.root / f"{rec.tool}.log"), 8)


def start_receiver(bench: Bench, rec: Receiver, timeout: float = 90.0) -> float:
    """``TOOL -c CONF cron`` (creates the slot, starts receive-wal); wait until it streams.

    Returns the seconds from cron to ``state = 'streaming'`` in pg_stat_replication.
    """
    cluster = bench.live_cluster()
    start = time.monotonic()
    rec.started = True  # from here on, stop_receiver has something to stop
    run = run_timed([str(bench.tools.exe(rec.tool)), "-c", str(rec.home.conf), "cron"], timeout=60)
    if not run.ok:
        raise BenchError(f"{rec.tool} cron: {run.describe()}; log: {log_tail(rec)}")
    deadline = start + timeout
    while True:
        state = cluster.sql(
            f"SELECT state FROM pg_stat_replication WHERE application_name = '{rec.slot}'"
        )
        if state == "streaming":
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise BenchError(
                f"{rec.tool}: no receiver streaming as {rec.slot} {timeout:.0f} s after cron "
                f"(state {state or 'absent'}); log: {log_tail(rec)}"
            )
        time.sleep(0.2)


def stop_receiver(bench: Bench, rec: Receiver) -> list[str]:
    """Stop the receiver the tool's way, make sure nothing of it is left, drop its slot.

    Never raises: returns what went wrong (used in ``finally`` blocks).
    """
    problems: list[str] = []
    if not rec.started:
        return problems
    rec.started = False
    if rec.tool == "barman":
        argv = [
            str(bench.tools.exe("barman")),
            "-c",
            str(rec.home.conf),
            "receive-wal",
            "--stop",
            "pg",
        ]
    else:
        argv = [
            str(bench.tools.exe("walvault")),
            "-c",
            str(rec.home.conf),
            "terminate-process",
            "pg",
        ]
        argv.append("receive-wal")
    try:
        run = run_timed(argv, timeout=60)
        if not run.ok:
            problems.append(f"{rec.tool}: stopping receive-wal: {run.describe()}")
    except OSError as exc:
        problems.append(f"{rec.tool}: stopping receive-wal: {exc}")
    cluster = bench.cluster
    alive = cluster is not None and (cluster.data / "postmaster.pid").exists()
    deadline = time.monotonic() + 20
    while alive and time.monotonic() < deadline:
        with contextlib.suppress(BenchError):
            active = cluster.sql(  # type: ignore[union-attr]
                f"SELECT active FROM pg_replication_slots WHERE slot_name = '{rec.slot}'"
            )
            if active != "t":
                break
        time.sleep(0.2)
    # a backstop: whatever still runs for this home (receive-wal, pg_receivewal, archive-wal)
    strays = reap_strays(str(rec.home.root), grace=5.0)
    if strays:
        problems.append(f"{rec.tool}: {len(strays)} process(es) still running were stopped")
    if alive:
        try:
            cluster.sql(  # type: ignore[union-attr]
                f"SELECT pg_drop_replication_slot('{rec.slot}') FROM pg_replication_slots "
                f"WHERE slot_name = '{rec.slot}'"
            )
        except BenchError as exc:
            problems.append(f"{rec.tool}: dropping slot {rec.slot}: {exc}")
    return problems


def receiver_cmdline(rec: Receiver) -> str | None:
    """The pg_receivewal command line the tool started (to show its --status-interval)."""
    for _, argv in processes_mentioning(str(rec.home.root)):
        if "pg_receivewal" in argv[0]:
            return " ".join(argv)
    return None


def received_upto(streaming: Path) -> int | None:
    """Where the receiver's WAL on disk ends, to a page: the true position it has written.

    pg_receivewal zero-fills a new ``.partial`` segment before writing into it, so the
    written part is the run of valid WAL pages at its start (a page whose header has
    PostgreSQL 15's magic and the page's own address). A binary search over the newest
    ``.partial`` finds the last one; the position returned is that page's start, so the
    distance to pg_current_wal_lsn() is an upper bound of the true lag (by < 8 KiB).
    """
    partials = sorted(
        n for n in os.listdir(streaming) if n.endswith(".partial") and is_segment_name(n[:24])
    )
    if not partials:
        return None
    _, segno = seg_parse(partials[-1][:24])
    start = segno * SEG
    try:
        with open(streaming / partials[-1], "rb") as handle:

            def valid(index: int) -> bool:
                handle.seek(index * PAGE)
                head = handle.read(16)
                if len(head) < 16:
                    return False
                magic = struct.unpack_from("<H", head, 0)[0]
                pageaddr = struct.unpack_from("<Q", head, 8)[0]
                return bool(magic == XLP_MAGIC and pageaddr == start + index * PAGE)

            if not valid(0):
                return start
            low, high = 0, SEG // PAGE - 1  # valid(low); find the last valid page
            while low < high:
                mid = (low + high + 1) // 2
                if valid(mid):
                    low = mid
                else:
                    high = mid - 1
            return start + low * PAGE
    except FileNotFoundError:  # renamed to its final name meanwhile
        return None


def p99(values: list[int]) -> float:
    if len(values) < 2:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def sample_lag(bench: Bench, rec: Receiver) -> dict[str, Any]:
    """Run pgbench and sample this receiver's write/flush distance every 100 ms."""
    import psycopg

    cluster = bench.live_cluster()
    query = (
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), write_lsn)::bigint, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::bigint, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
        "FROM pg_stat_replication WHERE application_name = %s"
    )
    write: list[int] = []
    flush: list[int] = []
    true: list[int] = []
    absent = 0
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        (lsn0,) = conn.execute("SELECT pg_current_wal_lsn()").fetchone()  # type: ignore[misc]
        start = time.monotonic()
        load = subprocess.Popen(
            pgbench_argv(cluster, bench.params.lag_seconds),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            tick = time.monotonic()
            while load.poll() is None:
                # the file first, then the server: the receiver can only have moved on
                # meanwhile, so the true lag is not underestimated
                on_disk = received_upto(rec.home.streaming)
                row = conn.execute(query, (rec.slot,)).fetchone()
                if row is None or row[0] is None or row[1] is None:
                    absent += 1
                else:
                    write.append(int(row[0]))
                    flush.append(int(row[1]))
                    if on_disk is not None:
                        true.append(max(0, int(row[2]) - on_disk))
                tick += SAMPLE_EVERY
                time.sleep(max(0.0, tick - time.monotonic()))
            out, err = load.communicate()
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        elapsed = time.monotonic() - start
        (wal_bytes,) = conn.execute(  # type: ignore[misc]
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (lsn0,)
        ).fetchone()
    if load.returncode != 0:
        raise BenchError(f"pgbench exited {load.returncode}: {tail(err or out)}")
    if len(write) < 10:
        raise BenchError(
            f"{rec.tool}: only {len(write)} samples with a streaming receiver ({absent} absent)"
        )
    tps = None
    for line in out.splitlines():
        if line.startswith("tps = "):
            tps = float(line.split()[2])
            break
    return {
        "samples": len(write),
        "samples_without_receiver": absent,
        "write_median": statistics.median(write),
        "write_p99": p99(write),
        "flush_median": statistics.median(flush),
        "flush_p99": p99(flush),
        "true_samples": len(true),
        "true_median": median(true),
        "true_p99": p99(true) if true else None,
        "write_max": max(write),
        "flush_max": max(flush),
        "wal_bytes": wal_bytes,
        "wal_mb_per_s": wal_bytes / 1e6 / elapsed,
        "tps": tps,
        "write_median_seconds_of_wal": statistics.median(write) / (wal_bytes / elapsed),
    }


def lag(bench: Bench) -> None:
    detail: dict[str, Any] = {
        "load": f"pgbench -n -c 4 -j 2 -T {bench.params.lag_seconds}",
        "sample_every_s": SAMPLE_EVERY,
        "runs": {},
    }
    bench.results.details["streaming_lag"] = detail
    tools = [t for t in ("barman", "walvault") if bench.tool_ready(t, "cron", "receive-wal")]
    measured: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    cluster = bench.live_cluster()
    # one tool after the other: only one receiver streams while its lag is sampled
    for tool in tools:
        rec = stream_home(bench, tool, "lag", "none")
        try:
            cluster.sql("CHECKPOINT")  # both loads start right after a checkpoint
            waited = start_receiver(bench, rec)
            time.sleep(2)
            cmdline = receiver_cmdline(rec)
            got = sample_lag(bench, rec)
            got["seconds_to_streaming"] = waited
            got["pg_receivewal"] = cmdline
            measured[tool] = got
            detail["runs"][tool] = got
            log(
                f"  {tool:8}: write behind median {fmt_bytes(got['write_median'])}, p99 "
                f"{fmt_bytes(got['write_p99'])}; flush median {fmt_bytes(got['flush_median'])}, "
                f"p99 {fmt_bytes(got['flush_p99'])}; on disk median "
                f"{fmt_bytes(got['true_median'] or 0)}, p99 {fmt_bytes(got['true_p99'] or 0)} "
                f"({got['samples']} samples, "
                f"{got['wal_mb_per_s']:.1f} MB/s of WAL, {got['tps'] or 0:.0f} tps)"
            )
            log(f"            {cmdline}")
        except BenchError as exc:
            failed[tool] = str(exc)
            detail["runs"][tool] = {"error": str(exc)}
            bench.results.errors.append(f"lag ({tool}): {exc}")
            log(f"  {tool}: FAILED: {exc}")
        finally:
            for problem in stop_receiver(bench, rec):
                bench.results.errors.append(f"lag cleanup: {problem}")
                log(f"  cleanup: {problem}")

    def text(tool: str) -> str | None:
        return no_figure(tool, failed, tool in tools)

    def value(tool: str, key: str) -> float | None:
        return measured.get(tool, {}).get(key)

    note = (
        f"sampled every {SAMPLE_EVERY * 1000:.0f} ms on the primary from pg_stat_replication "
        f"during pgbench -n -c 4 -j 2 -T {bench.params.lag_seconds}, one tool at a time: the "
        "positions the receiver last reported (pg_receivewal --status-interval: Barman passes "
        "none, so the default 10 s; walvault passes 1 s), not how much WAL it lacks"
    )
    true_note = (
        "the same samples, against where the receiver's newest .partial really ends (last "
        "valid WAL page, read just before the query): an upper bound, 8 KiB resolution"
    )
    for key, label, row_note in (
        ("write_median", "write_lsn behind pg_current_wal_lsn(), median", note),
        ("write_p99", "write_lsn behind pg_current_wal_lsn(), p99", note),
        ("flush_median", "flush_lsn behind pg_current_wal_lsn(), median", note),
        ("flush_p99", "flush_lsn behind pg_current_wal_lsn(), p99", note),
        ("true_median", "WAL on the receiver's disk behind, median", true_note),
        ("true_p99", "WAL on the receiver's disk behind, p99", true_note),
    ):
        bench.results.add(
            Row(
                "streaming lag",
                label,
                "bytes",
                "info",
                value("barman", key),
                value("walvault", key),
                text("barman"),
                text("walvault"),
                note=row_note,
            )
        )
    bench.results.add(
        Row(
            "streaming lag",
            "write_lsn behind, median, in seconds of WAL at the run's rate",
            "s",
            "info",
            value("barman", "write_median_seconds_of_wal"),
            value("walvault", "write_median_seconds_of_wal"),
            text("barman"),
            text("walvault"),
        )
    )
    bench.results.add(
        Row(
            "streaming lag",
            "WAL written during the load: MB/s",
            "MB/s",
            "info",
            value("barman", "wal_mb_per_s"),
            value("walvault", "wal_mb_per_s"),
            text("barman"),
            text("walvault"),
            note="the load of each tool's own run (the tools ran one after the other)",
        )
    )
