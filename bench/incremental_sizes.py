"""Benchmark of incremental backups on PostgreSQL 17: sizes against the full, and against
Barman 3.20.1's incremental of the same change, in one run and one home.

    python bench/incremental_sizes.py [--scale 20] [--transactions 2000] [--json FILE]

Run as root with a Python that can import walvault's dependencies (the test venv will do):
the cluster runs as the unprivileged bench user, walvault runs this checkout's ``src``
(``PYTHONPATH``), Barman is the venv of ``WALVAULT_BARMAN_BIN`` (as in the tests).  PostgreSQL
17's binaries come from ``WALVAULT_PG17_BINDIR`` or scripts/pg_binaries.sh's cache.

One cluster (``summarize_wal = on``, ``pgbench -i -s SCALE``), walvault streaming it.  Then,
each after the same ``pgbench -t TRANSACTIONS`` (a little change):

1. walvault's full backup;
2. walvault's incremental of it;
3. Barman's incremental of walvault's incremental (Barman reads walvault's chain);
4. walvault's incremental of Barman's.

Sizes are the bytes under ``base/<id>`` (the same measure for both tools) and the times are
``backup --wait``'s wall time.  Last, the chain of four is recovered by each tool (both run
pg_combinebackup): seconds, and the restored size.  Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from wvbench.cluster import Cluster, ensure_bench_user  # noqa: E402
from wvbench.common import BASE, fmt_bytes  # noqa: E402


def log(text: str) -> None:
    print(f"[incremental-bench] {text}", file=sys.stderr, flush=True)


def pg17_bindir() -> Path:
    explicit = os.environ.get("WALVAULT_PG17_BINDIR")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("WALVAULT_PG_BINARIES", "/var/cache/walvault/postgresql"))
    found = sorted(cache.glob("17*/bin")) + sorted(cache.glob("17*/*/bin"))
    if not found:
        sys.exit(
            f"no PostgreSQL 17 under {cache}: run scripts/pg_binaries.sh, or set "
            "WALVAULT_PG17_BINDIR"
        )
    return found[0]


def tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class Tools:
    def __init__(self, work: Path, cluster: Cluster, bindir: Path) -> None:
        self.home = work / "home"
        self.conf = work / "walvault.conf"
        self.barman_conf = work / "barman.conf"
        barman_bin = Path(os.environ.get("WALVAULT_BARMAN_BIN", "/opt/walvault-barman/venv/bin"))
        self.barman = barman_bin / "barman"
        if not self.barman.exists():
            sys.exit(f"Barman is not installed at {barman_bin} (set WALVAULT_BARMAN_BIN)")
        server = (
            f"conninfo = {cluster.conninfo()}\n"
            f"streaming_conninfo = {cluster.conninfo()}\n"
            "backup_method = postgres\nstreaming_archiver = on\nslot_name = walvault\n"
            f"create_slot = auto\npath_prefix = {bindir}\narchiver = off\n"
        )
        self.conf.write_text(
            f"[walvault]\nwalvault_home = {self.home}\nlog_file = {work / 'walvault.log'}\n"
            f"\n[pg]\n{server}immediate_checkpoint = true\n"
        )
        self.barman_conf.write_text(
            f"[barman]\nbarman_user = root\nbarman_home = {self.home}\n"
            f"log_file = {work / 'barman.log'}\n\n[pg]\n{server}immediate_checkpoint = true\n"
        )
        self.home.mkdir()
        self.env = dict(os.environ, PYTHONPATH=str(REPO / "src"))

    def walvault(self, *args: str, timeout: float = 900) -> str:
        argv = [sys.executable, "-m", "walvault.cli.main", "-c", str(self.conf), *args]
        run = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=timeout)
        if run.returncode != 0:
            sys.exit(f"walvault {' '.join(args)} failed:\n{run.stdout}{run.stderr}")
        return run.stdout

    def barman_run(self, *args: str, timeout: float = 900) -> str:
        argv = [str(self.barman), "-c", str(self.barman_conf), *args]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if run.returncode != 0:
            sys.exit(f"barman {' '.join(args)} failed:\n{run.stdout}{run.stderr}")
        return run.stdout

    def ids(self) -> set[str]:
        meta = self.home / "pg" / "meta"
        return {p.name[:15] for p in meta.glob("*-backup.info")} if meta.is_dir() else set()

    def settle(self, cluster: Cluster, backup_id: str) -> None:
        """archive-wal and check-backup until ``backup_id`` is DONE."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            cluster.sql("SELECT pg_switch_wal(), txid_current()")
            self.walvault("archive-wal", "pg")
            if self.walvault("check-backup", "pg", backup_id).strip().endswith(": DONE"):
                return
            time.sleep(1)
        sys.exit(f"backup {backup_id} did not reach DONE")


def change(cluster: Cluster, transactions: int) -> None:
    subprocess.run(
        [
            str(cluster.bindir / "pgbench"),
            *cluster.client_args(),
            "-n",
            "-c",
            "2",
            "-t",
            str(transactions),
            "postgres",
        ],
        check=True,
        capture_output=True,
        env=dict(os.environ, PGOPTIONS="-c synchronous_commit=off"),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20, help="pgbench -i -s (default 20)")
    parser.add_argument("--transactions", type=int, default=2000, help="per step (default 2000)")
    parser.add_argument("--json", type=Path, help="where to write the figures as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the cluster runs as the bench user)")
    bindir = pg17_bindir()
    user = ensure_bench_user()
    work = BASE / f"incremental-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cluster = Cluster(work / "pg", bindir, user)
    tools: Tools | None = None
    try:
        cluster.init()
        with open(cluster.data / "postgresql.auto.conf", "a") as conf:
            conf.write("summarize_wal = on\n")
        cluster.start()
        log(f"PostgreSQL {cluster.version()}: pgbench -i -s {args.scale}")
        subprocess.run(
            [
                str(bindir / "pgbench"),
                *cluster.client_args(),
                "-i",
                "-q",
                "-s",
                str(args.scale),
                "postgres",
            ],
            check=True,
            capture_output=True,
        )
        tools = Tools(work, cluster, bindir)
        tools.walvault("cron")
        rows: list[dict[str, Any]] = []

        def step(t: Tools, label: str, tool: str, argv: list[str]) -> str:
            before = t.ids()
            started = time.monotonic()
            if tool == "walvault":
                t.walvault("backup", "--wait", *argv, "pg")
            else:
                t.barman_run("backup", *argv, "pg")
            [backup_id] = t.ids() - before
            if tool == "barman":
                t.settle(cluster, backup_id)
            seconds = time.monotonic() - started
            size = tree_size(t.home / "pg" / "base" / backup_id)
            rows.append(
                {
                    "step": label,
                    "tool": tool,
                    "backup_id": backup_id,
                    "bytes": size,
                    "seconds": round(seconds, 1),
                }
            )
            log(f"{label}: {backup_id} {fmt_bytes(size)} in {seconds:.1f} s")
            return backup_id

        full = step(tools, "full backup", "walvault", [])
        change(cluster, args.transactions)
        first = step(tools, "incremental of the full", "walvault", ["--incremental", full])
        change(cluster, args.transactions)
        second = step(
            tools, "incremental of walvault's incremental", "barman", ["--incremental", first]
        )
        change(cluster, args.transactions)
        third = step(
            tools, "incremental of Barman's incremental", "walvault", ["--incremental", second]
        )
        recovered: dict[str, dict[str, float]] = {}
        for tool in ("walvault", "barman"):
            target = work / f"restored-{tool}" / "data"
            started = time.monotonic()
            if tool == "walvault":
                tools.walvault("recover", "pg", third, str(target))
            else:
                tools.barman_run("recover", "pg", third, str(target))
            recovered[tool] = {
                "seconds": round(time.monotonic() - started, 1),
                "bytes": tree_size(target),
            }
            shutil.rmtree(target.parent)
        report(rows, recovered, args)
        return 0
    finally:
        with contextlib.suppress(Exception):
            if tools is not None:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "walvault.cli.main",
                        "-c",
                        str(tools.conf),
                        "receive-wal",
                        "--stop",
                        "pg",
                    ],
                    env=tools.env,
                    capture_output=True,
                    timeout=60,
                )
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(
    rows: list[dict[str, Any]], recovered: dict[str, dict[str, float]], args: argparse.Namespace
) -> None:
    full = rows[0]["bytes"]
    print(
        f"\n### Incremental backups, PostgreSQL 17, pgbench -s {args.scale}, "
        f"{args.transactions} transactions between backups\n"
    )
    print("| step | tool | size | of the full | seconds |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        share = f"{100 * row['bytes'] / full:.1f} %"
        print(
            f"| {row['step']} | {row['tool']} | {fmt_bytes(row['bytes'])} | {share} | "
            f"{row['seconds']} |"
        )
    incr = {r["tool"]: r["bytes"] for r in rows[1:]}
    walvault_mean = (rows[1]["bytes"] + rows[3]["bytes"]) / 2
    print(
        f"\nwalvault's incrementals / Barman's: {walvault_mean / incr['barman']:.2f} "
        "(the same pg_basebackup --incremental: ~1 expected)"
    )
    print("\n| recover of the chain of four | seconds | restored size |")
    print("|---|---:|---:|")
    for tool, figures in recovered.items():
        print(f"| {tool} | {figures['seconds']} | {fmt_bytes(figures['bytes'])} |")
    ratio = recovered["barman"]["seconds"] / max(recovered["walvault"]["seconds"], 0.1)
    print(f"\nrecover: Barman's time / walvault's: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"backups": rows, "recover": recovered}, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
