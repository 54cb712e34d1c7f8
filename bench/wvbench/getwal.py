"""Section `getwal`: single get-wal and restore_command calls, and a replay-style restore.

Each tool serves its own zstd archive of the same consecutive segments.  Barman's
restore_command on its own host is ``barman get-wal pg %f > %p`` (barman-wal-restore needs
ssh); walvault's is ``walvault-wal-restore local``, whose first call starts a restore agent
that answers the later calls (see :mod:`wvbench.restores`).  So walvault's single call is
measured three ways: the *first* call of a recovery (a new spool each time: it starts the
agent), a *warm* call answered by a running agent (every later call of a recovery), and
``--no-agent`` (fetched in-process).  Barman starts every call cold.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from wvbench.common import log, median
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
from wvbench.restores import interleaved, one_call, replay, stop_agents
from wvbench.runner import Bench, no_figure
from wvbench.tools import Run, has_local_mode, run_timed

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


def replay_key(tool: str, jobs: int, shared_ssh: bool = False, agent: bool = True) -> str:
    """How a restore run is named in the log and the JSON: ``walvault -p 4``, ..."""
    return (
        tool
        + (f" -p {jobs}" if jobs else "")
        + (" shared ssh" if shared_ssh else "")
        + ("" if agent else " --no-agent")
    )


def getwal(bench: Bench) -> None:
    p = bench.params
    names = bench.segments[: p.restore_segments]
    detail: dict[str, Any] = {"segments": len(names), "compression": "zstd"}
    bench.results.details["get_wal"] = detail
    homes = archived_homes(bench, names, detail)
    try:
        _measure(bench, names, homes, detail)
    finally:
        remove_homes(homes)


def _measure(
    bench: Bench, names: list[str], homes: dict[str, Home], detail: dict[str, Any]
) -> None:
    p = bench.params
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

    def fail(what: str, run: Run) -> None:
        bench.results.errors.append(f"{what}: {run.describe()}")

    # -- single calls, the kinds interleaved
    picks = [names[(i * 7) % len(names)] for i in range(p.single_calls)]
    get_wal = {
        tool: (
            lambda name, t=tool: run_timed(get_wal_cmd(bench.tools, homes[t], name), capture=False)
        )
        for tool in ("barman", "walvault")
        if can[(tool, "get-wal")]
    }
    warm_spool = bench.new_spool()
    restores: dict[str, Any] = {}
    if can[("barman", "restore")]:
        cmd_b = restore_command(bench.tools, homes["barman"], 0, bench.new_spool())
        restores["barman"] = lambda name: one_call(cmd_b, name, target)
    if can[("walvault", "restore")]:
        cmd_w = restore_command(bench.tools, homes["walvault"], 0, warm_spool)
        cmd_n = restore_command(bench.tools, homes["walvault"], 0, bench.new_spool(), agent=False)
        warm_up = one_call(cmd_w, names[-1], target)  # starts the agent (not timed)
        if not warm_up.ok:
            fail("the call that starts walvault's restore agent", warm_up)
        else:
            restores["walvault"] = lambda name: one_call(cmd_w, name, target)
        restores["walvault --no-agent"] = lambda name: one_call(cmd_n, name, target)
    runs = interleaved(get_wal, picks)
    runs |= {f"restore {k}": v for k, v in interleaved(restores, picks).items()}
    warm_agent = stop_agents(warm_spool)
    detail["warm_agent"] = warm_agent.detail()
    # -- the first call of a recovery: a new spool (and agent) each time
    firsts: list[Run] = []
    first_peaks: list[int] = []
    if can[("walvault", "restore")]:
        for name in picks[: p.first_calls]:
            spool = bench.new_spool()
            run = one_call(restore_command(bench.tools, homes["walvault"], 0, spool), name, target)
            firsts.append(run)
            first_peaks.append(stop_agents(spool).peak_kib)
            if not run.ok:
                break
    runs["restore walvault first"] = firsts
    target.unlink(missing_ok=True)

    seconds: dict[str, float | None] = {}
    rss: dict[str, int] = {}
    for key, key_runs in runs.items():
        bad = [r for r in key_runs if not r.ok]
        if bad:
            fail(f"one call ({key})", bad[0])
            seconds[key] = None
            continue
        seconds[key] = median([r.elapsed for r in key_runs])
        rss[key] = max((r.maxrss_kib for r in key_runs), default=0)
    detail["single_calls"] = {k: [r.elapsed for r in v] for k, v in runs.items()}
    detail["single_calls_maxrss_kib"] = rss

    def failed_text(key: str, tool: str, what: str) -> str | None:
        if runs.get(key) and seconds.get(key) is None:
            return "failed"
        return text(tool, what)

    def single_row(label: str, walvault_key: str, note: str) -> None:
        bench.results.add(
            Row(
                "get-wal",
                label,
                "s",
                "lower",
                seconds.get("restore barman"),
                seconds.get(walvault_key),
                failed_text("restore barman", "barman", "restore"),
                failed_text(walvault_key, "walvault", "restore"),
                note=note,
            )
        )

    bench.results.add(
        Row(
            "get-wal",
            "one `get-wal` call (to /dev/null): seconds",
            "s",
            "lower",
            seconds.get("barman"),
            seconds.get("walvault"),
            failed_text("barman", "barman", "get-wal"),
            failed_text("walvault", "walvault", "get-wal"),
            note=f"median of {p.single_calls}",
        )
    )
    single_row(
        "one restore_command call, warm: seconds",
        "restore walvault",
        f"median of {p.single_calls}; Barman: `barman get-wal pg %f > %p` (every call starts "
        "cold); walvault: `walvault-wal-restore local`, answered by the restore agent that "
        "an earlier call started (every call of a recovery but the first)",
    )
    single_row(
        "first restore_command call (walvault: starts the agent): seconds",
        "restore walvault first",
        f"walvault: median of {p.first_calls} first calls, each with a new spool directory, "
        "so each starts a restore agent; Barman column: its one-call median",
    )
    single_row(
        "one restore_command call, walvault --no-agent: seconds",
        "restore walvault --no-agent",
        "walvault fetches in the client's own process (no agent, no spool)",
    )

    # -- replay-style restore of consecutive segments (see `replay`)
    replays: dict[str, Any] = {}
    modes = [("barman", 0), ("walvault", 0), ("walvault", 4)]
    for tool, prefetch in modes:
        if not can[(tool, "restore")]:
            continue
        spool = bench.new_spool()
        result = replay(
            bench.hashes, names, restore_command(bench.tools, homes[tool], prefetch, spool), target
        )
        key = replay_key(tool, prefetch)
        replays[key] = result.detail()
        if tool == "walvault":
            agent = stop_agents(spool)
            replays[key]["agent"] = agent.detail()
            rss[f"agent {key}"] = agent.peak_kib
        if result.problem:
            bench.results.errors.append(
                f"restore of {len(names)} segments ({key}): {result.problem}"
            )
            continue
        log(
            f"  restore {len(names)} segments, {key:12}: {result.seconds:6.1f} s "
            f"({len(names) / result.seconds:.1f} seg/s; first call {result.first:.3f} s, "
            f"then median {result.rest_median:.3f} s)"
        )
    detail["replay"] = replays

    def rsec(key: str) -> float | None:
        entry = replays.get(key, {})
        return None if entry.get("error") or "seconds" not in entry else float(entry["seconds"])

    def rtext(key: str, tool: str) -> str | None:
        if replays.get(key, {}).get("error"):
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
            note="Barman: `barman get-wal pg %f > %p`; walvault: `walvault-wal-restore local` "
            "(its first call starts the agent); the sum of the calls' wall times, each segment "
            "checked (sha256) and removed after its call, as PostgreSQL removes RECOVERYXLOG",
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
    call_keys = {
        "barman": ("barman", "restore barman"),
        "walvault": ("walvault", "restore walvault", "restore walvault --no-agent"),
    }
    mem = {t: max((rss.get(k, 0) for k in keys), default=0) / 1024 for t, keys in call_keys.items()}
    bench.results.add(
        Row(
            "get-wal",
            "get-wal / restore_command call: peak memory",
            "MiB",
            "lower",
            mem["barman"] or None,
            mem["walvault"] or None,
            text("barman", "get-wal"),
            text("walvault", "restore"),
            note="GNU time: the call and the children it waits for; walvault's agent is "
            "detached and counted in the next row",
        )
    )
    agent_peak = max([warm_agent.peak_kib, *first_peaks, rss.get("agent walvault", 0)])
    agent_peak = max(agent_peak, rss.get("agent walvault -p 4", 0))
    bench.results.add(
        Row(
            "get-wal",
            "walvault's restore agent: peak memory",
            "MiB",
            "lower",
            None,
            agent_peak / 1024 if agent_peak else None,
            "(no agent)",
            text("walvault", "restore"),
            note="VmHWM of the agent process (/proc/PID/status) just before the bench stops "
            "it, the largest over the runs above (with -p 4: four prefetch threads)",
        )
    )
    shutil.rmtree(restore_dir, ignore_errors=True)
