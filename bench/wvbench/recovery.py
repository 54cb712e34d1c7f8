"""Section `recovery`: backup, more WAL, then recover + start until recovery has ended."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import time
from typing import Any

from wvbench.cluster import Cluster, pgbench_argv
from wvbench.common import SEG, BenchError, check_call, log, read_text, tail
from wvbench.homes import archive_cmd
from wvbench.lag import (
    Receiver,
    log_tail,
    start_receiver,
    stop_receiver,
    stream_home,
)
from wvbench.report import Row
from wvbench.runner import Bench, no_figure
from wvbench.tools import run_timed

RECOVER_REPEATS = 2  # each tool recovers twice, the order reversed the second time


def du_bytes(path: Any) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out.split() else 0


def wait_archived(bench: Bench, rec: Receiver, name: str, timeout: float = 120.0) -> float:
    """Run the tool's archive-wal until segment ``name`` is in its archive."""
    start = time.monotonic()
    argv = archive_cmd(bench.tools, rec.home)
    while not rec.home.archived(name).is_file():
        if time.monotonic() - start > timeout:
            raise BenchError(
                f"{rec.tool}: {name} not archived after {timeout:.0f} s; "
                f"streaming/ has {sorted(p.name for p in rec.home.streaming.iterdir())[-3:]}"
            )
        run = run_timed(argv, timeout=120)
        if not run.ok:
            raise BenchError(f"{rec.tool} archive-wal: {run.describe()}")
        if not rec.home.archived(name).is_file():
            time.sleep(0.5)
    return time.monotonic() - start


def start_restored(restored: Cluster, timeout: float = 300.0) -> None:
    """pg_ctl start as the bench user, then wait until pg_is_in_recovery() is false."""
    restored.start(int(timeout))
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(BenchError):
            if restored.sql("SELECT pg_is_in_recovery()") == "f":
                return
        if time.monotonic() > deadline:
            raise BenchError(
                f"{restored.data}: still in recovery after {timeout:.0f} s; "
                f"log: {tail(read_text(restored.logfile), 5)}"
            )
        time.sleep(0.05)


def recover_one(bench: Bench, rec: Receiver, restored: Cluster) -> dict[str, Any]:
    """Time ``recover`` of the latest backup + start until recovery has ended."""
    restored.root.mkdir(parents=True)
    conf = str(rec.home.conf)
    if rec.tool == "barman":
        # Barman's default local recovery: rsync of the base backup, the WAL copied into
        # DEST/barman_wal with restore_command = 'cp barman_wal/%f %p'
        argv = [
            str(bench.tools.exe("barman")),
            "-c",
            conf,
            "recover",
            "pg",
            "latest",
            str(restored.data),
        ]
    else:
        argv = [str(bench.tools.exe("walvault")), "-c", conf, "recover", "pg", "latest"]
        argv += [str(restored.data), "--no-get-wal", "--port", str(restored.port)]
    start = time.perf_counter()
    run = run_timed(argv, timeout=900)
    if not run.ok:
        raise BenchError(f"{rec.tool} recover: {run.describe()}")
    recover_seconds = time.perf_counter() - start
    if rec.tool == "barman":
        # the restored configuration still has the primary's port (it is running)
        with open(restored.data / "postgresql.auto.conf", "a") as conf_file:
            conf_file.write(f"port = {restored.port}\n")
    check_call(
        ["chown", "-R", f"{restored.user.pw_uid}:{restored.user.pw_gid}", str(restored.root)],
        "chown -R",
    )
    start_restored(restored)
    total = time.perf_counter() - start
    return {
        "recover_seconds": recover_seconds,
        "recover_cpu_seconds": run.cpu_seconds,
        "recover_maxrss_kib": run.maxrss_kib,
        "to_recovery_end_seconds": total,
        "argv": argv,
        "history_rows": int(restored.sql("SELECT count(*) FROM pgbench_history")),
        "port": restored.port,
    }


def recovery(bench: Bench) -> None:
    p = bench.params
    detail: dict[str, Any] = {"compression": "zstd"}
    bench.results.details["recovery"] = detail
    tools = [
        t
        for t in ("barman", "walvault")
        if bench.tool_ready(t, "cron", "receive-wal", "backup", "recover", "archive-wal")
    ]
    failed: dict[str, str] = {}
    runs: dict[str, dict[str, Any]] = {t: {} for t in tools}
    detail["runs"] = runs
    recs: dict[str, Receiver] = {}
    restored: dict[str, Cluster] = {}
    cluster = bench.live_cluster()

    def fail(tool: str, what: str, exc: Exception) -> None:
        failed[tool] = f"{what}: {exc}"
        runs[tool]["error"] = failed[tool]
        bench.results.errors.append(f"recovery ({tool}): {what}: {exc}")
        log(f"  {tool}: {what} FAILED: {exc}")

    try:
        # both receivers stream at once (own slot, own application_name), so that the same
        # WAL reaches both archives
        for tool in tools:
            recs[tool] = stream_home(bench, tool, "rec", "zstd", {"immediate_checkpoint": "true"})
            try:
                start_receiver(bench, recs[tool])
            except BenchError as exc:
                fail(tool, "start receive-wal", exc)
        # untimed set-up, as after installing either tool: one WAL file archived, so that
        # Barman's pre-backup check "WAL archive" passes without its own switch-and-wait
        for tool in [t for t in tools if t not in failed]:
            rec = recs[tool]
            argv = [str(bench.tools.exe(tool)), "-c", str(rec.home.conf), "switch-wal", "--force"]
            argv += ["--archive", "--archive-timeout", "60", "pg"]
            run = run_timed(argv, timeout=120)
            if not run.ok:
                fail(tool, "switch-wal --archive", BenchError(f"{run.describe()}; {log_tail(rec)}"))
        # the backups, one after the other
        for tool in [t for t in tools if t not in failed]:
            rec = recs[tool]
            os.sync()
            # untimed: the first backup's immediate checkpoint would otherwise also write out
            # what the earlier loads left dirty, and the second's would not
            cluster.sql("CHECKPOINT")
            run = run_timed(
                [str(bench.tools.exe(tool)), "-c", str(rec.home.conf), "backup", "--wait", "pg"],
                timeout=900,
            )
            if not run.ok:
                fail(tool, "backup --wait", BenchError(f"{run.describe()}; log: {log_tail(rec)}"))
                continue
            runs[tool]["backup_seconds"] = run.elapsed
            runs[tool]["backup_maxrss_kib"] = run.maxrss_kib
            runs[tool]["backup_bytes"] = du_bytes(rec.home.server / "base")
            log(
                f"  {tool:8}: backup --wait in {run.elapsed:.1f} s "
                f"({runs[tool]['backup_bytes'] / 1e9:.2f} GB)"
            )
        # more WAL after the backups, which each tool streams and archives
        lsn0 = cluster.sql("SELECT pg_current_wal_lsn()")
        want = p.recovery_segments * SEG
        written = 0
        start = time.monotonic()
        while written < want and time.monotonic() - start < 180:
            check_call(pgbench_argv(cluster, 1), "pgbench -T 1")
            written = int(cluster.sql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn0}')"))
        last = cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")
        detail["wal_after_backups_bytes"] = written
        detail["last_segment"] = last
        detail["history_rows_primary"] = int(cluster.sql("SELECT count(*) FROM pgbench_history"))
        log(
            f"  pgbench wrote {written / SEG:.1f} segments after the backups "
            f"in {time.monotonic() - start:.0f} s; waiting for {last} in both archives"
        )
        for tool in [t for t in tools if t not in failed]:
            try:
                runs[tool]["archive_wait_seconds"] = wait_archived(bench, recs[tool], last)
            except BenchError as exc:
                fail(tool, "archive the WAL", exc)
        # the receivers and the primary stop: the recoveries do not compete with them
        for tool in tools:
            for problem in stop_receiver(bench, recs[tool]):
                bench.results.errors.append(f"recovery cleanup: {problem}")
        cluster.sql("CHECKPOINT")
        cluster.stop()
        # the recoveries, one after the other, twice with the order reversed the second
        # time; `sync` first, so no recovery pays for the write-back of what came before
        for rep in range(RECOVER_REPEATS):
            order = tools if rep % 2 == 0 else list(reversed(tools))
            for tool in [t for t in order if t not in failed]:
                target = Cluster(
                    bench.work / f"recovered-{tool}-{rep}", cluster.bindir, cluster.user
                )
                restored[f"{tool}-{rep}"] = target
                os.sync()
                try:
                    got = recover_one(bench, recs[tool], target)
                except BenchError as exc:
                    fail(tool, "recover", exc)
                    continue
                finally:
                    target.stop()
                    shutil.rmtree(target.root, ignore_errors=True)
                for key, val in got.items():
                    runs[tool].setdefault(key, []).append(val)
                log(
                    f"  {tool:8}: recover {got['recover_seconds']:.1f} s, recovery ended after "
                    f"{got['to_recovery_end_seconds']:.1f} s; pgbench_history "
                    f"{got['history_rows']:,} rows (primary: {detail['history_rows_primary']:,})"
                )
        for tool in tools:
            if tool not in failed and runs[tool].get("recover_seconds"):
                for key in ("recover_seconds", "to_recovery_end_seconds"):
                    runs[tool][f"{key}_mean"] = statistics.mean(runs[tool][key])
                runs[tool]["recover_maxrss_kib_max"] = max(runs[tool]["recover_maxrss_kib"])
        counts = {t: set(runs[t]["history_rows"]) for t in tools if "history_rows" in runs[t]}
        detail["history_rows_equal"] = len(set().union(*counts.values())) == 1 if counts else None
        if not detail["history_rows_equal"] and counts:
            bench.results.errors.append(f"recovery: pgbench_history rows differ: {counts}")
        for tool, rows in counts.items():
            if rows != {detail["history_rows_primary"]}:
                bench.results.errors.append(
                    f"recovery ({tool}): {sorted(rows)} pgbench_history rows, the primary had "
                    f"{detail['history_rows_primary']}"
                )
    finally:
        for target in restored.values():
            target.stop()
            shutil.rmtree(target.root, ignore_errors=True)
        for rec in recs.values():
            for problem in stop_receiver(bench, rec):
                bench.results.errors.append(f"recovery cleanup: {problem}")
            shutil.rmtree(rec.home.root, ignore_errors=True)

    def text(tool: str) -> str | None:
        return no_figure(tool, failed, tool in tools)

    def value(tool: str, key: str, scale: float = 1.0) -> float | None:
        got = runs.get(tool, {}).get(key)
        return got / scale if got is not None else None

    primary_rows = detail.get("history_rows_primary")
    segs = detail.get("wal_after_backups_bytes", 0) / SEG
    for key, label, unit, better, scale, note in (
        (
            "backup_seconds",
            "`backup --wait` (postgres method): seconds",
            "s",
            "lower",
            1.0,
            "pg_basebackup of the bench cluster (pgbench -s "
            f"{p.pgbench_scale}), immediate checkpoint, until its WAL is archived",
        ),
        ("backup_bytes", "backup size", "bytes", "info", 1.0, ""),
        (
            "recover_seconds_mean",
            "`recover latest` to a new directory: seconds",
            "s",
            "lower",
            1.0,
            f"mean of {RECOVER_REPEATS}, the order reversed the second time, `sync` before each; "
            "Barman: `barman recover pg latest DEST` (local: rsync, WAL copied to barman_wal); "
            "walvault: `walvault recover pg latest DEST --no-get-wal --port N`",
        ),
        (
            "to_recovery_end_seconds_mean",
            "recover + start until pg_is_in_recovery() is false: seconds",
            "s",
            "lower",
            1.0,
            f"mean of {RECOVER_REPEATS}; the latest backup plus {segs:.1f} segments of pgbench "
            "WAL (zstd archives); "
            "includes chown -R and pg_ctl start as the bench user; both recovered clusters "
            f"checked for the same count(*) FROM pgbench_history ({primary_rows})",
        ),
        ("recover_maxrss_kib_max", "`recover`: peak memory", "MiB", "lower", 1024.0, ""),
    ):
        bench.results.add(
            Row(
                "recovery",
                label,
                unit,
                better,
                value("barman", key, scale),
                value("walvault", key, scale),
                text("barman"),
                text("walvault"),
                note=note,
            )
        )
