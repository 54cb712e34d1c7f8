"""Section `getwal`: single get-wal and restore_command calls, and a replay-style restore."""

from __future__ import annotations

import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from wvbench.common import SEG, log, median, sha256_file
from wvbench.homes import (
    Home,
    archive_cmd,
    get_wal_cmd,
    place_partial,
    restore_command,
    server_section,
    verify_archive,
)
from wvbench.report import Row
from wvbench.runner import Bench, no_figure
from wvbench.tools import has_local_mode, reap_strays, run_timed

# ---- get-wal and restore_command


def archived_homes(bench: Bench, names: list[str], detail: dict[str, Any]) -> dict[str, Home]:
    """Each tool's own zstd archive of ``names`` (default level), built by its own archive-wal.

    If walvault's archive-wal is not built, walvault reads Barman's archive.  Timings go to
    ``detail``; failures to ``bench.results.errors`` (that tool is then missing).
    """
    homes: dict[str, Home] = {}
    for tool in ("barman", "walvault"):
        if not bench.tool_ready(tool, "archive-wal"):
            continue
        home = bench.new_home(tool, "zstd")
        for name in names:
            os.link(bench.pool / name, home.streaming / name)
        place_partial(home.streaming, names[-1])
        os.sync()
        run = run_timed(archive_cmd(bench.tools, home), capture=True)
        problem = None if run.ok else run.describe()
        problem = problem or verify_archive(home, names, bench.hashes, content=False)
        if problem:
            bench.results.errors.append(f"archive-wal zstd ({tool}) for restores: {problem}")
            continue
        detail[f"archive_wal_zstd_{len(names)}_seconds_{tool}"] = run.elapsed
        log(f"  {tool}: archived {len(names)} segments (zstd) in {run.elapsed:.1f} s")
        homes[tool] = home
    if "walvault" not in homes and "barman" in homes and bench.tools.walvault is not None:
        shared = Home("walvault", homes["barman"].root, homes["barman"].root / "walvault.conf")
        shared.conf.write_text(
            f"[walvault]\nwalvault_home = {shared.root}\n"
            f"log_file = {shared.root}/walvault.log\n\n"
            + server_section(bench.cluster, "walvault", "zstd", {})  # type: ignore[arg-type]
        )
        homes["walvault"] = shared
        detail["walvault_reads"] = "Barman's archive (walvault's archive-wal not built)"
    return homes


def remove_homes(homes: dict[str, Home]) -> None:
    """Delete the homes ``archived_homes`` made (one directory may serve both tools)."""
    for root in {h.root for h in homes.values()}:
        shutil.rmtree(root, ignore_errors=True)


def replay_key(tool: str, jobs: int, shared_ssh: bool = False) -> str:
    """How a restore run is named in the log and the JSON: ``walvault -p 4``, ..."""
    return tool + (f" -p {jobs}" if jobs else "") + (" shared ssh" if shared_ssh else "")


def replay(
    bench: Bench, names: list[str], command: str, target: Path
) -> tuple[float, int, str | None]:
    """Run ``command`` (%f, %p unexpanded) for each name in turn, as PostgreSQL would.

    Like PostgreSQL, which replays RECOVERYXLOG and then removes it, each restored segment
    is checked and deleted: keeping them would pile up dirty page cache, and the kernel's
    writeback throttling would then slow every later write of both tools.  Returns the sum
    of the calls' own wall times, the largest peak RSS, and the first problem (or None).
    """
    elapsed = 0.0
    maxrss = 0
    bad: list[str] = []
    for name in names:
        target.unlink(missing_ok=True)
        expanded = command.replace("%f", name).replace("%p", shlex.quote(str(target)))
        run = run_timed(["/bin/sh", "-c", expanded], capture=True)
        if not run.ok:
            target.unlink(missing_ok=True)
            return elapsed, maxrss, run.describe()
        elapsed += run.elapsed
        maxrss = max(maxrss, run.maxrss_kib)
        if sha256_file(target) != bench.hashes[name]:
            bad.append(name)
    target.unlink(missing_ok=True)
    if bad:
        return elapsed, maxrss, f"{len(bad)} restored segments differ (first {bad[0]})"
    return elapsed, maxrss, None


def getwal(bench: Bench) -> None:
    p = bench.params
    names = bench.segments[: p.restore_segments]
    detail: dict[str, Any] = {"segments": len(names), "compression": "zstd"}
    bench.results.details["get_wal"] = detail
    homes = archived_homes(bench, names, detail)

    can = {
        ("barman", "get-wal"): "barman" in homes,
        ("walvault", "get-wal"): "walvault" in homes and bench.tools.has("get-wal"),
        ("barman", "restore"): "barman" in homes,
        ("walvault", "restore"): "walvault" in homes
        and bench.tools.wal_restore is not None
        and has_local_mode(bench.tools.wal_restore_help),
    }
    restore_dir = bench.work / "restore"
    restore_dir.mkdir()
    target = restore_dir / "RECOVERYXLOG"

    def text(tool: str, what: str) -> str | None:
        return no_figure(tool, (), can[(tool, what)])

    # -- single calls
    singles: dict[str, dict[str, list[float]]] = {}
    rss_single: dict[str, dict[str, list[int]]] = {}
    picks = [names[(i * 7) % len(names)] for i in range(p.single_calls)]
    for what in ("get-wal", "restore"):
        for tool in ("barman", "walvault"):
            singles.setdefault(what, {})[tool] = []
            rss_single.setdefault(what, {})[tool] = []
        for i, name in enumerate(picks):
            order = ("barman", "walvault") if i % 2 == 0 else ("walvault", "barman")
            for tool in order:
                if not can[(tool, what)]:
                    continue
                if what == "get-wal":
                    run = run_timed(get_wal_cmd(bench.tools, homes[tool], name), capture=False)
                else:
                    cmd = restore_command(bench.tools, homes[tool], 0, restore_dir / "spool")
                    cmd = cmd.replace("%f", name).replace("%p", shlex.quote(str(target)))
                    # PostgreSQL removes RECOVERYXLOG before it runs restore_command: a
                    # 16 MiB file left from the call before would cost both tools its
                    # truncation (several ms), which a real recovery never pays
                    target.unlink(missing_ok=True)
                    run = run_timed(["/bin/sh", "-c", cmd], capture=True)
                    if run.ok and target.stat().st_size != SEG:
                        run.returncode = -1
                        run.stderr = f"{target} has {target.stat().st_size} bytes"
                if not run.ok:
                    bench.results.errors.append(f"one {what} call ({tool}): {run.describe()}")
                    can[(tool, what)] = False
                    continue
                singles[what][tool].append(run.elapsed)
                rss_single[what][tool].append(run.maxrss_kib)
    detail["single_calls"] = singles
    for what, label in (
        ("get-wal", "one `get-wal` call (to /dev/null): seconds"),
        ("restore", "one restore_command call: seconds"),
    ):
        bench.results.add(
            Row(
                "get-wal",
                label,
                "s",
                "lower",
                median(singles[what]["barman"]),
                median(singles[what]["walvault"]),
                text("barman", what),
                text("walvault", what),
                note=f"median of {p.single_calls}",
            )
        )

    # -- replay-style restore of consecutive segments (see `replay`).  The time is the sum
    # of the restore_command calls' own wall times; the loop's wall time (the checks
    # included) is in the JSON.
    replays: dict[str, Any] = {}
    modes = [("barman", 0), ("walvault", 0), ("walvault", 4)]
    for tool, prefetch in modes:
        if not can[(tool, "restore")]:
            continue
        spool = restore_dir / f"spool-{tool}-{prefetch}"
        cmd = restore_command(bench.tools, homes[tool], prefetch, spool)
        start = time.perf_counter()
        elapsed, maxrss, problem = replay(bench, names, cmd, target)
        loop_seconds = time.perf_counter() - start
        key = replay_key(tool, prefetch)
        if prefetch:
            # the prefetch worker outlives the last call (it stops when idle): stop it
            strays = reap_strays(str(spool))
            detail.setdefault("prefetch_workers_stopped_after_run", {})[key] = len(strays)
        shutil.rmtree(spool, ignore_errors=True)
        if problem:
            bench.results.errors.append(f"restore of {len(names)} segments ({key}): {problem}")
            replays[key] = {"error": problem}
            continue
        replays[key] = {"seconds": elapsed, "loop_seconds": loop_seconds, "maxrss_kib": maxrss}
        log(
            f"  restore {len(names)} segments, {key:12}: {elapsed:6.1f} s "
            f"({len(names) / elapsed:.1f} seg/s)"
        )
    detail["replay"] = replays

    def rsec(key: str) -> float | None:
        seconds = replays.get(key, {}).get("seconds")
        return None if seconds is None else float(seconds)

    def rtext(key: str, tool: str) -> str | None:
        if key in replays and "error" in replays[key]:
            return "failed"
        return text(tool, "restore")

    bench.results.add(
        Row(
            "get-wal",
            f"{len(names)} segments through restore_command, serial: seconds",
            "s",
            "lower",
            rsec("barman"),
            rsec("walvault"),
            rtext("barman", "barman"),
            rtext("walvault", "walvault"),
            note="Barman: `barman get-wal pg %f > %p`; walvault: `walvault-wal-restore local`; "
            "the sum of the calls' wall times, each segment checked (sha256) and removed "
            "after its call, as PostgreSQL removes RECOVERYXLOG",
        )
    )
    bench.results.add(
        Row(
            "get-wal",
            f"{len(names)} segments, walvault with prefetch -p 4: seconds",
            "s",
            "lower",
            rsec("barman"),
            rsec("walvault -p 4"),
            rtext("barman", "barman"),
            rtext("walvault -p 4", "walvault"),
            note="Barman column: its serial figure (Barman has no local prefetch)",
        )
    )
    mem = {
        t: max(rss_single["get-wal"][t] + rss_single["restore"][t] or [0]) / 1024
        for t in ("barman", "walvault")
    }
    bench.results.add(
        Row(
            "get-wal",
            "get-wal / restore_command call: peak memory",
            "MiB",
            "lower",
            mem["barman"] or None,
            mem["walvault"] or None,
            text("barman", "get-wal"),
            text("walvault", "restore") if not can[("walvault", "get-wal")] else None,
            note="prefetch workers that outlive a call are not counted",
        )
    )
    remove_homes(homes)
    shutil.rmtree(restore_dir, ignore_errors=True)
