"""Section `s3`: the WAL archive in object storage, walvault against Barman 3.20.1's own.

One moto server on 127.0.0.1 (:mod:`wvbench.s3store`), a bucket per tool, the same real
segments, zstd at each tool's default level:

* **archive-wal into the bucket.** ``wals_directory = s3://BUCKET/PATH`` in both tools'
  configurations (Barman 3.20.1's server-mode cloud WAL storage; walvault's S3 driver, with
  ``aws_endpoint_url``); credentials and ``AWS_ENDPOINT_URL`` in the environment, as Barman
  reads them.  The segments are hard-linked into ``streaming/`` (a ``.partial`` after them),
  both tools archive the same batch into a bucket emptied before each run (moto's reset),
  median of the runs, the tools taking turns; after each run every segment must be in the
  bucket under barman-cloud's key and nothing left in ``streaming/``, and after the last
  run every object must decompress to the original (read back with boto3).
* **restore_command from the bucket.** Each tool archives the same consecutive segments
  into its own bucket and serves them back: Barman with ``barman-cloud-wal-restore
  --endpoint-url E s3://BUCKET/PATH pg %f %p`` (Barman's restore_command for a cloud
  archive: its ``get-wal`` refuses a cloud WAL storage), walvault with
  ``walvault-wal-restore -c CONF local pg %f %p``, which reads the bucket itself.  One call:
  Barman's, walvault's first (it starts the restore agent, which then keeps the S3 client
  and its connections), walvault's warm (answered by the agent) and ``--no-agent``
  (in-process); then a replay of the segments serially and with ``-p 4`` for both
  (Barman: up to 4 parallel downloads into its spool per call; walvault: the agent keeps 4
  segments ahead).  Every restored segment is checked (sha256) and removed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from wvbench.common import SEG, log, median, rate
from wvbench.getwal import replay_key
from wvbench.homes import Home, archive_cmd, place_partial, restore_command
from wvbench.report import Row
from wvbench.restores import Replay, interleaved, one_call, replay, stop_agents
from wvbench.runner import Bench
from wvbench.s3store import Moto, client, environ, moto_missing, verify_bucket
from wvbench.tools import Run, has_local_mode, reap_strays, run_timed

SECTION = "object storage (moto)"
BUCKETS = {"barman": "bench-barman", "walvault": "bench-walvault"}
#: an archive-wal run is killed after this long (Barman uploads one file at a time)
ARCHIVE_TIMEOUT = 600.0


def barman_cloud_missing(bench: Bench) -> str | None:
    """Why Barman cannot use a bucket here (its venv lacks boto3, ...), or None."""
    if bench.tools.barman is None:
        return "not installed"
    python = bench.tools.barman.parent / "python"
    proc = subprocess.run(
        [str(python), "-c", "import boto3, barman.cloud_providers.aws_s3"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return (
            f"boto3 is not installed in Barman's venv ({bench.tools.barman.parent.parent}); "
            "bench/barman_env.sh installs it"
        )
    return None


def s3_home(bench: Bench, tool: str, endpoint: str) -> Home:
    extra = {"wals_directory": f"s3://{BUCKETS[tool]}/{tool}"}
    if tool == "walvault":
        extra["aws_endpoint_url"] = endpoint
    return bench.new_home(tool, "zstd", extra)


def s3(bench: Bench) -> None:
    detail: dict[str, Any] = {"compression": "zstd"}
    bench.results.details["s3"] = detail
    why = moto_missing()
    if why is not None:
        bench.results.errors.append(f"s3: {why}")
        return
    tools: list[str] = []
    texts: dict[str, str | None] = {"barman": None, "walvault": None}
    barman_why = barman_cloud_missing(bench)
    if barman_why is None:
        tools.append("barman")
    else:
        texts["barman"] = "not installed"
        bench.results.missing.append(f"s3, Barman: {barman_why}")
    if bench.tool_ready("walvault", "archive-wal"):
        tools.append("walvault")
    else:
        texts["walvault"] = "not built"
    moto = Moto(bench.work / "moto.log")
    moto.start()
    detail["moto"] = {"endpoint": moto.endpoint}
    try:
        _archive_wal(bench, moto, tools, texts, detail)
        _restores(bench, moto, tools, texts, detail)
    finally:
        detail["moto"]["rss_kib_at_end"] = moto.rss_kib()
        moto.stop()


# --------------------------------------------------------------------------- archive-wal


def _archive_once(
    bench: Bench, moto: Moto, tool: str, names: list[str], content: bool
) -> tuple[Run, str | None, int, float]:
    """One archive-wal run of ``tool`` into its emptied bucket: (run, problem, bytes stored,
    moto's CPU seconds during the run)."""
    moto.fresh_buckets(BUCKETS[tool])
    home = s3_home(bench, tool, moto.endpoint)
    try:
        for name in names:
            os.link(bench.pool / name, home.streaming / name)
        place_partial(home.streaming, names[-1])
        os.sync()
        cpu = moto.cpu_seconds()
        run = run_timed(
            archive_cmd(bench.tools, home),
            capture=True,
            env=environ(moto.endpoint),
            timeout=ARCHIVE_TIMEOUT,
        )
        cpu = moto.cpu_seconds() - cpu
        if not run.ok:
            return run, run.describe(), 0, cpu
        left = sorted(n for n in os.listdir(home.streaming) if not n.endswith(".partial"))
        if left:
            return run, f"{len(left)} files left in {home.streaming} (first: {left[0]})", 0, cpu
        problem, stored = verify_bucket(
            client(moto.endpoint), BUCKETS[tool], tool, names, bench.hashes, content
        )
        return run, problem, stored, cpu
    finally:
        shutil.rmtree(home.root, ignore_errors=True)


def _archive_wal(
    bench: Bench,
    moto: Moto,
    tools: list[str],
    texts: dict[str, str | None],
    detail: dict[str, Any],
) -> None:
    p = bench.params
    sample = min(p.s3_archive_segments, len(bench.segments))
    step = len(bench.segments) / sample
    names = [bench.segments[int(i * step)] for i in range(sample)]  # both kinds of WAL
    times: dict[str, list[float]] = {t: [] for t in tools}
    rss: dict[str, list[int]] = {t: [] for t in tools}
    cpu: dict[str, list[float]] = {t: [] for t in tools}
    moto_cpu: dict[str, list[float]] = {t: [] for t in tools}
    ratio: dict[str, float] = {}
    failed: dict[str, str] = {}
    for rep in range(p.repeats):
        order = tools if rep % 2 == 0 else list(reversed(tools))
        for tool in order:
            if tool in failed:
                continue
            run, problem, stored, store_cpu = _archive_once(
                bench, moto, tool, names, content=rep == p.repeats - 1
            )
            if problem is not None:
                failed[tool] = problem
                bench.results.errors.append(f"archive-wal into S3 ({tool}): {problem}")
                log(f"  {tool} archive-wal into S3: FAILED: {problem}")
                continue
            times[tool].append(run.elapsed)
            rss[tool].append(run.maxrss_kib)
            cpu[tool].append(run.cpu_seconds)
            moto_cpu[tool].append(store_cpu)
            ratio[tool] = len(names) * SEG / stored
            log(
                f"  archive-wal into S3, {tool:8} run {rep + 1}: {run.elapsed:7.2f} s "
                f"({len(names) / run.elapsed:6.1f} seg/s), {run.maxrss_kib / 1024:.0f} MiB, "
                f"CPU {run.cpu_seconds:.2f} s, moto's CPU {store_cpu:.2f} s"
            )
    detail["archive_wal"] = {
        "segments": len(names),
        "runs": {
            t: {
                "seconds": times[t],
                "cpu_seconds": cpu[t],
                "moto_cpu_seconds": moto_cpu[t],
                "maxrss_kib": rss[t],
            }
            for t in tools
        },
        "ratio": ratio,
    }

    def text(tool: str) -> str | None:
        return "failed" if tool in failed else texts[tool]

    def peak(tool: str) -> float | None:
        return max(rss[tool]) / 1024 if rss.get(tool) and any(rss[tool]) else None

    note = (
        f"{len(names)} x 16 MiB, median of {p.repeats}, into an empty bucket each run; "
        "Barman: its server-mode cloud WAL storage (boto3); both tools talk to the same moto "
        "server, which runs on the same cores"
    )
    for figure, unit, better, b, w, row_note in (
        (
            "archive-wal zstd into the bucket: segments/s",
            "seg/s",
            "higher",
            rate(times, "barman", len(names)),
            rate(times, "walvault", len(names)),
            note,
        ),
        (
            "archive-wal zstd into the bucket: compression ratio",
            "x",
            "info",
            ratio.get("barman"),
            ratio.get("walvault"),
            "bytes in / bytes archived",
        ),
        (
            "archive-wal zstd into the bucket: peak memory",
            "MiB",
            "lower",
            peak("barman"),
            peak("walvault"),
            "",
        ),
    ):
        bench.results.add(
            Row(
                SECTION, figure, unit, better, b, w, text("barman"), text("walvault"), note=row_note
            )
        )


# --------------------------------------------------------------------------- restores


def _barman_cloud_restore(bench: Bench, endpoint: str, prefetch: int, spool: Path) -> str:
    assert bench.tools.barman is not None
    parts = [
        str(bench.tools.barman.parent / "barman-cloud-wal-restore"),
        "--endpoint-url",
        endpoint,
    ]
    if prefetch:
        parts += ["-p", str(prefetch)]
    parts += ["--spool-dir", str(spool), f"s3://{BUCKETS['barman']}/barman", "pg"]
    return " ".join(shlex.quote(p) for p in parts) + " %f %p"


def _restores(
    bench: Bench,
    moto: Moto,
    tools: list[str],
    texts: dict[str, str | None],
    detail: dict[str, Any],
) -> None:
    p = bench.params
    names = bench.segments[: p.s3_restore_segments]
    env = environ(moto.endpoint)
    out: dict[str, Any] = {"segments": len(names)}
    detail["restore"] = out
    can = {t: t in tools for t in ("barman", "walvault")}
    if can["walvault"] and not (
        bench.tools.wal_restore is not None and has_local_mode(bench.tools.wal_restore_help)
    ):
        can["walvault"] = False
        texts["walvault"] = "not built"
    # each tool's own archive of the restore set, in its own bucket
    moto.fresh_buckets(*(BUCKETS[t] for t in tools))
    homes: dict[str, Home] = {}
    for tool in [t for t in tools if can[t]]:
        home = s3_home(bench, tool, moto.endpoint)
        for name in names:
            os.link(bench.pool / name, home.streaming / name)
        place_partial(home.streaming, names[-1])
        run = run_timed(archive_cmd(bench.tools, home), env=env, timeout=ARCHIVE_TIMEOUT)
        problem = run.describe() if not run.ok else None
        problem = (
            problem
            or verify_bucket(
                client(moto.endpoint), BUCKETS[tool], tool, names, bench.hashes, content=False
            )[0]
        )
        if problem:
            bench.results.errors.append(f"archive-wal into S3 for restores ({tool}): {problem}")
            can[tool] = False
            texts[tool] = "failed"
            continue
        homes[tool] = home
    out["moto_rss_kib_with_both_archives"] = moto.rss_kib()
    target = bench.work / "s3-restore" / "RECOVERYXLOG"
    target.parent.mkdir()
    try:
        peaks = _single_calls(bench, moto, homes, names, target, env, can, texts, out)
        _replays(bench, moto, homes, names, target, env, can, texts, out, peaks)
    finally:
        for home in homes.values():
            shutil.rmtree(home.root, ignore_errors=True)
        shutil.rmtree(target.parent, ignore_errors=True)


def _single_calls(
    bench: Bench,
    moto: Moto,
    homes: dict[str, Home],
    names: list[str],
    target: Path,
    env: dict[str, str],
    can: dict[str, bool],
    texts: dict[str, str | None],
    out: dict[str, Any],
) -> list[int]:
    """The single calls (rows added); returns the peak memory of the agents they started."""
    p = bench.params
    picks = [names[(i * 7) % len(names)] for i in range(p.single_calls)]
    calls: dict[str, Any] = {}
    warm_spool = bench.new_spool()
    if can["barman"]:
        cmd_b = _barman_cloud_restore(bench, moto.endpoint, 0, bench.new_spool())
        calls["barman"] = lambda name: one_call(cmd_b, name, target, env)
    if can["walvault"]:
        home = homes["walvault"]
        cmd_w = restore_command(bench.tools, home, 0, warm_spool)
        cmd_n = restore_command(bench.tools, home, 0, bench.new_spool(), agent=False)
        warm_up = one_call(cmd_w, names[-1], target, env)  # starts the agent (not timed)
        if warm_up.ok:
            calls["walvault"] = lambda name: one_call(cmd_w, name, target, env)
        else:
            bench.results.errors.append(f"s3: starting walvault's agent: {warm_up.describe()}")
        calls["walvault --no-agent"] = lambda name: one_call(cmd_n, name, target, env)
    runs = interleaved(calls, picks)
    warm = stop_agents(warm_spool)
    out["warm_agent"] = warm.detail()
    firsts: list[Run] = []
    peaks = [warm.peak_kib]
    if can["walvault"]:
        for name in picks[: p.first_calls]:
            spool = bench.new_spool()
            run = one_call(
                restore_command(bench.tools, homes["walvault"], 0, spool), name, target, env
            )
            firsts.append(run)
            peaks.append(stop_agents(spool).peak_kib)
            if not run.ok:
                break
        runs["walvault first"] = firsts
    seconds: dict[str, float | None] = {}
    rss: dict[str, int] = {}
    for key, key_runs in runs.items():
        bad = [r for r in key_runs if not r.ok]
        if bad:
            bench.results.errors.append(f"s3: one restore call ({key}): {bad[0].describe()}")
            seconds[key] = None
            continue
        seconds[key] = median([r.elapsed for r in key_runs])
        rss[key] = max((r.maxrss_kib for r in key_runs), default=0)
    out["single_calls"] = {k: [r.elapsed for r in v] for k, v in runs.items()}
    out["single_calls_maxrss_kib"] = rss
    out["agent_peak_kib"] = peaks

    def text(key: str, tool: str) -> str | None:
        return "failed" if runs.get(key) and seconds.get(key) is None else texts[tool]

    barman_note = "Barman: `barman-cloud-wal-restore --endpoint-url E s3://BUCKET/PATH pg %f %p`"
    for label, key, note in (
        (
            "one restore_command call from the bucket, warm: seconds",
            "walvault",
            f"median of {p.single_calls}; {barman_note} (every call starts cold); walvault: "
            "`walvault-wal-restore local`, answered by the restore agent an earlier call "
            "started (it keeps the S3 client and its connections)",
        ),
        (
            "first restore_command call from the bucket (walvault: starts the agent): seconds",
            "walvault first",
            f"walvault: median of {p.first_calls} first calls, each with a new spool (a new "
            "agent); Barman column: its one-call median",
        ),
        (
            "one restore_command call from the bucket, walvault --no-agent: seconds",
            "walvault --no-agent",
            "walvault fetches in the client's own process (a new S3 client per call)",
        ),
    ):
        bench.results.add(
            Row(
                SECTION,
                label,
                "s",
                "lower",
                seconds.get("barman"),
                seconds.get(key),
                text("barman", "barman"),
                text(key, "walvault"),
                note=note,
            )
        )
    mem = {
        "barman": rss.get("barman", 0),
        "walvault": max(rss.get("walvault", 0), rss.get("walvault --no-agent", 0)),
    }
    bench.results.add(
        Row(
            SECTION,
            "restore_command call from the bucket: peak memory",
            "MiB",
            "lower",
            mem["barman"] / 1024 or None,
            mem["walvault"] / 1024 or None,
            texts["barman"],
            texts["walvault"],
        )
    )
    return peaks


def _replays(
    bench: Bench,
    moto: Moto,
    homes: dict[str, Home],
    names: list[str],
    target: Path,
    env: dict[str, str],
    can: dict[str, bool],
    texts: dict[str, str | None],
    out: dict[str, Any],
    peaks: list[int],
) -> None:
    """The replays (rows added), and the agents' peak memory row (``peaks``: so far)."""
    results: dict[str, Replay] = {}
    for prefetch in (0, 4):
        for tool in ("barman", "walvault"):
            if not can[tool]:
                continue
            spool = bench.new_spool()
            if tool == "barman":
                cmd = _barman_cloud_restore(bench, moto.endpoint, prefetch, spool)
            else:
                cmd = restore_command(bench.tools, homes[tool], prefetch, spool)
            result = replay(bench.hashes, names, cmd, target, env)
            key = replay_key(tool, prefetch)
            results[key] = result
            out[f"replay {key}"] = result.detail()
            if tool == "walvault":
                agent = stop_agents(spool)
                out[f"replay {key}"]["agent"] = agent.detail()
                peaks.append(agent.peak_kib)
            else:
                reap_strays(str(spool))
            shutil.rmtree(spool, ignore_errors=True)
            if result.problem:
                bench.results.errors.append(
                    f"s3: restore of {len(names)} ({key}): {result.problem}"
                )
                continue
            log(
                f"  from S3, {len(names)} segments, {key:12}: {result.seconds:6.1f} s "
                f"(first call {result.first:.3f} s, then median {result.rest_median:.3f} s)"
            )

    def value(key: str) -> float | None:
        result = results.get(key)
        return None if result is None or result.problem else result.seconds

    def text(key: str, tool: str) -> str | None:
        result = results.get(key)
        return "failed" if result is not None and result.problem else texts[tool]

    n = len(names)
    for prefetch, label, note in (
        (
            0,
            f"{n} segments from the bucket, serial: seconds",
            "the sum of the calls' wall times, each segment checked (sha256) and removed "
            "after its call; walvault's first call starts the agent",
        ),
        (
            4,
            f"{n} segments from the bucket, both with -p 4: seconds",
            "Barman: up to 4 parallel downloads into its spool on each call that misses it; "
            "walvault: the agent keeps 4 segments ahead",
        ),
    ):
        b, w = replay_key("barman", prefetch), replay_key("walvault", prefetch)
        bench.results.add(
            Row(
                SECTION,
                label,
                "s",
                "lower",
                value(b),
                value(w),
                text(b, "barman"),
                text(w, "walvault"),
                note=note,
            )
        )
    peak = max(peaks, default=0)
    bench.results.add(
        Row(
            SECTION,
            "walvault's restore agent (S3): peak memory",
            "MiB",
            "lower",
            None,
            peak / 1024 if peak else None,
            "(no agent)",
            texts["walvault"],
            note="VmHWM of the agent process (/proc/PID/status) just before the bench stops "
            "it, the largest over the runs above (with -p 4: four prefetch threads)",
        )
    )
