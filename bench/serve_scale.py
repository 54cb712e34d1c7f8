"""Benchmark of ``walvault serve``: restart delay, archive delay, memory and CPU at rest with
1 and 50 streamed servers, against real PostgreSQL clusters (and cron's model beside it).

    python bench/serve_scale.py [--servers 1,50] [--clusters 2] [--rest 60] [--no-cron]
                                [--json FILE]

Run as root with a Python that can import walvault's dependencies (the test venv will do):
the clusters run as the unprivileged ``walvault-bench`` user (PostgreSQL refuses root), the
walvault processes run this checkout's ``src`` (``PYTHONPATH``).  Every server streams from
one of ``--clusters`` clusters through its own replication slot.  For each server count:

* **restart delay**: SIGKILL one server's pg_receivewal, time until its slot is active
  again with another process (each server killed once, so no back-off is involved);
* **archive delay**: ``pg_switch_wal()`` and a row on a cluster, time until the closed
  segment is in the archive of one of its servers, and of all of them;
* **at rest**: after a warm-up (the checks have run), the CPU time used by the service and
  every process under it (workers, pg_receivewal, workers that ended meanwhile) over
  ``--rest`` seconds, and memory: RSS and PSS of the service, of its workers and of the
  pg_receivewal processes (PSS divides shared pages between the processes sharing them,
  so PSS figures add up; RSS counts every shared page in every process);
* **cron**, unless ``--no-cron``: the same servers under ``walvault cron`` (a detached
  ``receive-wal`` interpreter per server), memory only, for comparison.

It cleans up after itself (service stopped, receivers stopped, clusters stopped, directory
removed), also on failure or Ctrl-C.  Figures go to stdout (Markdown) and ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from wvbench.cluster import Cluster, ensure_bench_user  # noqa: E402
from wvbench.common import BASE  # noqa: E402

PG_BIN = Path(os.environ.get("WALVAULT_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
CLK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(text: str) -> None:
    print(f"[serve-bench] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc
def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rpartition(")")[2].split()[1])
                tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_of(root: int) -> list[int]:
    tree, out, todo = children_of(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime (reaped children are in the last two)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / CLK


def memory_kib(pid: int) -> dict[str, int]:
    """Rss, Pss and Uss (private pages) from smaps_rollup."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                key, value = parts[0].rstrip(":"), int(parts[1])
                if key == "Rss":
                    out["rss"] = value
                elif key == "Pss":
                    out["pss"] = value
                elif key in ("Private_Clean", "Private_Dirty"):
                    out["uss"] += value
    return out


def command_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    return os.path.basename(argv[0].decode()) if argv and argv[0] else ""


# ---------------------------------------------------------------- set-up
class Setup:
    def __init__(self, work: Path, clusters: int) -> None:
        self.work = work
        user = ensure_bench_user()
        self.clusters = []
        for i in range(clusters):
            cluster = Cluster(work / f"pg{i}", PG_BIN, user)
            cluster.init()
            with open(cluster.data / "postgresql.auto.conf", "a") as conf:
                conf.write("max_wal_senders = 60\nmax_replication_slots = 60\n")
                conf.write("max_connections = 200\n")
            cluster.start()
            cluster.sql("CREATE TABLE IF NOT EXISTS bench (i int)")
            self.clusters.append(cluster)

    def config(self, home: Path, servers: int) -> Path:
        home.mkdir(parents=True)
        text = f"[walvault]\nwalvault_home = {home}\nlog_file = {home}/walvault.log\n"
        text += "compression = zstd\n"
        for i in range(servers):
            cluster = self.clusters[i % len(self.clusters)]
            text += (
                f"\n[s{i:02d}]\nconninfo = {cluster.conninfo()}\nbackup_method = postgres\n"
                f"streaming_archiver = on\nslot_name = bench_{i:02d}\ncreate_slot = auto\n"
                f"streaming_archiver_name = wvbench_{i:02d}\narchiver = off\n"
                f"path_prefix = {PG_BIN}\n"
            )
        conf = home / "walvault.conf"
        conf.write_text(text)
        return conf

    def cluster_of(self, index: int) -> Cluster:
        return self.clusters[index % len(self.clusters)]

    def stop(self) -> None:
        for cluster in self.clusters:
            cluster.stop()


def walvault(conf: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "walvault.cli.main", "-c", str(conf), *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def slot_pid(cluster: Cluster, slot: str) -> int | None:
    value = cluster.sql(
        f"SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"
    )
    return int(value) if value else None


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------- serve
class ServeRun:
    def __init__(self, conf: Path) -> None:
        self.proc = subprocess.Popen(
            [*walvault(conf, "serve", "--listen", "127.0.0.1:0")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=environment(),
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        port = first.rsplit(":", 1)[-1].strip().rstrip("/")
        if not port.isdigit():
            raise RuntimeError(f"walvault serve did not start: {first!r}")
        self.url = f"http://127.0.0.1:{port}"

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/api/status", timeout=30) as answer:
            return dict(json.loads(answer.read()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def all_streaming(serve: ServeRun, count: int) -> bool:
    servers = serve.status()["servers"]
    return len(servers) == count and all(s["receiver"]["up"] for s in servers)


def archived(home: Path, server: str, name: str) -> bool:
    return (home / server / "wals" / name[:16] / name).exists()


def measure_serve(setup: Setup, count: int, rest: float) -> dict[str, Any]:
    home = setup.work / f"serve-{count}"
    conf = setup.config(home, count)
    serve = ServeRun(conf)
    try:
        started = time.monotonic()
        wait(lambda: all_streaming(serve, count), 120 + 3 * count, "every receiver up")
        result: dict[str, Any] = {"servers": count, "all_up_s": time.monotonic() - started}
        log(f"{count} servers streaming after {result['all_up_s']:.1f} s")
        for i in range(count):  # every slot active before measuring
            wait(lambda i=i: slot_pid(setup.cluster_of(i), f"bench_{i:02d}"), 60, "slot active")

        # restart delay: each killed once
        delays = []
        for i in range(min(count, 5)):
            receiver = next(s for s in serve.status()["servers"] if s["name"] == f"s{i:02d}")
            pid = receiver["receiver"]["pg_receivewal_pid"]
            cluster, slot = setup.cluster_of(i), f"bench_{i:02d}"
            before = slot_pid(cluster, slot)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait(lambda c=cluster, s=slot, b=before: slot_pid(c, s) not in (None, b), 30, "slot")
            delays.append(time.monotonic() - t0)
        result["restart_delay_s"] = delays

        # archive delay: one server, and every server of that cluster
        one, every = [], []
        on_first = [f"s{i:02d}" for i in range(count) if i % len(setup.clusters) == 0]
        for _ in range(5):
            cluster = setup.clusters[0]
            closed = cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")
            t0 = time.monotonic()
            cluster.sql("INSERT INTO bench VALUES (1)")
            wait(lambda c=closed: archived(home, on_first[0], c), 60, "archived")
            one.append(time.monotonic() - t0)
            wait(lambda c=closed: all(archived(home, s, c) for s in on_first), 120, "all")
            every.append(time.monotonic() - t0)
            time.sleep(1)
        result["archive_delay_one_s"] = one
        result["archive_delay_all_s"] = every

        # at rest: warm up until the checks have run everywhere, then measure
        wait(
            lambda: all(s["checks"]["at"] for s in serve.status()["servers"]),
            180,
            "checks run",
        )
        time.sleep(5)
        pids = tree_of(serve.proc.pid)
        cpu0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        time.sleep(rest)
        pids = tree_of(serve.proc.pid)
        cpu1, t1 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        # processes that ended during the window are in their parents' cutime/cstime; one that
        # started and ended inside it is counted there too
        result["rest_window_s"] = t1 - t0
        result["rest_cpu_percent"] = 100.0 * (cpu1 - cpu0) / (t1 - t0)
        result["memory_kib"] = memory_breakdown(serve.proc.pid, pids)
        result["answer_ms"] = {path: answer_ms(serve.url + path) for path in PATHS}
        return result
    finally:
        serve.stop()


PATHS = ("/metrics", "/api/status", "/")


def answer_ms(url: str, times: int = 10) -> float:
    """Median milliseconds to fetch ``url`` (the service builds the status for each)."""
    spent = []
    for _ in range(times):
        t0 = time.monotonic()
        with urllib.request.urlopen(url, timeout=30) as answer:
            answer.read()
        spent.append(1000 * (time.monotonic() - t0))
    return statistics.median(spent)


def memory_breakdown(main: int, pids: list[int]) -> dict[str, Any]:
    groups: dict[str, dict[str, int]] = {}
    for pid in pids:
        kind = (
            "service"
            if pid == main
            else "pg_receivewal"
            if command_name(pid) == "pg_receivewal"
            else "workers"
        )
        usage = memory_kib(pid)
        kinds = [kind]
        if kind == "workers":  # and by the worker's name ("wv receive-wal", "wv probe"...)
            kinds.append("workers: " + " ".join(worker_name(pid).split()[:2]))
        for key_ in kinds:
            entry = groups.setdefault(key_, {"count": 0, "rss": 0, "pss": 0, "uss": 0})
            entry["count"] += 1
            for key, value in usage.items():
                entry[key] += value
    groups["total_pss"] = {
        "kib": sum(g["pss"] for k, g in groups.items() if not k.startswith("workers: "))
    }
    return groups


def worker_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def measure_cron(setup: Setup, count: int) -> dict[str, Any]:
    home = setup.work / f"cron-{count}"
    conf = setup.config(home, count)
    env = environment()
    try:
        subprocess.run(walvault(conf, "-q", "cron"), env=env, check=True, timeout=600)
        for i in range(count):
            wait(lambda i=i: slot_pid(setup.cluster_of(i), f"bench_{i:02d}"), 120, "slot")
        time.sleep(5)
        parents = []
        for i in range(count):
            lock = home / f".s{i:02d}-receive-wal.lock"
            text = lock.read_text().strip() if lock.exists() else ""
            if text.isdigit():
                parents.append(int(text))
        pids = [p for parent in parents for p in tree_of(parent)]
        groups: dict[str, dict[str, int]] = {}
        for pid in pids:
            kind = "pg_receivewal" if command_name(pid) == "pg_receivewal" else "receive-wal"
            entry = groups.setdefault(kind, {"count": 0, "rss": 0, "pss": 0, "uss": 0})
            entry["count"] += 1
            for key, value in memory_kib(pid).items():
                entry[key] += value
        groups["total_pss"] = {"kib": sum(g["pss"] for g in groups.values())}
        return {"servers": count, "memory_kib": groups}
    finally:
        for i in range(count):
            subprocess.run(
                walvault(conf, "-q", "receive-wal", "--stop", f"s{i:02d}"),
                env=env,
                capture_output=True,
                timeout=60,
            )


def drop_slots(setup: Setup, count: int) -> None:
    for i in range(count):
        cluster = setup.cluster_of(i)
        cluster.sql(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE slot_name = 'bench_{i:02d}' AND NOT active"
        )


# ---------------------------------------------------------------- report
def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def report(results: dict[str, Any]) -> str:
    lines = [
        "| servers | all streaming after | restart delay (median / max) | archive delay, "
        "one server (median / max) | archive delay, all servers of a cluster (max) | "
        "CPU at rest | PSS total | service PSS (RSS) | workers PSS, private (RSS) | "
        "pg_receivewal PSS (RSS) | /metrics, /api/status, / |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["serve"]:
        mem = run["memory_kib"]
        work = mem.get("workers", {"count": 0, "pss": 0, "uss": 0, "rss": 0})
        rec = mem.get("pg_receivewal", {"count": 0, "pss": 0, "rss": 0})
        answers = " / ".join(f"{run['answer_ms'][path]:.0f}" for path in PATHS)
        lines.append(
            f"| {run['servers']} | {run['all_up_s']:.1f} s "
            f"| {statistics.median(run['restart_delay_s']):.2f} / "
            f"{max(run['restart_delay_s']):.2f} s "
            f"| {statistics.median(run['archive_delay_one_s']):.2f} / "
            f"{max(run['archive_delay_one_s']):.2f} s "
            f"| {max(run['archive_delay_all_s']):.2f} s "
            f"| {run['rest_cpu_percent']:.2f} % of a core "
            f"| {mib(mem['total_pss']['kib'])} MiB "
            f"| {mib(mem['service']['pss'])} ({mib(mem['service']['rss'])}) MiB "
            f"| {work['count']}: {mib(work['pss'])}, {mib(work['uss'])} ({mib(work['rss'])}) MiB "
            f"| {rec['count']}: {mib(rec['pss'])} ({mib(rec['rss'])}) MiB "
            f"| {answers} ms |"
        )
    for run in results.get("cron", []):
        mem = run["memory_kib"]
        parents = mem.get("receive-wal", {"count": 0, "pss": 0, "uss": 0, "rss": 0})
        rec = mem.get("pg_receivewal", {"count": 0, "pss": 0, "rss": 0})
        lines.append(
            f"| cron, {run['servers']} | | | | | | {mib(mem['total_pss']['kib'])} MiB | "
            f"| {parents['count']} receive-wal: {mib(parents['pss'])}, {mib(parents['uss'])} "
            f"({mib(parents['rss'])}) MiB "
            f"| {rec['count']}: {mib(rec['pss'])} ({mib(rec['rss'])}) MiB |"
        )
    lines.append("")
    for run in results["serve"]:
        for key, entry in sorted(run["memory_kib"].items()):
            if key.startswith("workers: "):
                lines.append(
                    f"- {run['servers']} servers, {key[9:]}: {entry['count']} processes, PSS "
                    f"{mib(entry['pss'])} MiB, private {mib(entry['uss'])} MiB"
                )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="1,50", help="server counts (default 1,50)")
    parser.add_argument("--clusters", type=int, default=2, help="PostgreSQL clusters (2)")
    parser.add_argument("--rest", type=float, default=60.0, help="seconds at rest (60)")
    parser.add_argument("--no-cron", action="store_true", help="skip the cron comparison")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (the clusters run as the walvault-bench user)", file=sys.stderr)
        return 2
    counts = [int(c) for c in args.servers.split(",")]
    work = BASE / f"serve-{os.getpid()}"
    BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(BASE, 0o755)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "serve": [],
        "cron": [],
    }
    setup: Setup | None = None
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        setup = Setup(work, args.clusters)
        results["postgresql"] = setup.clusters[0].version()
        for count in counts:
            log(f"serve with {count} servers")
            results["serve"].append(measure_serve(setup, count, args.rest))
            drop_slots(setup, count)
            if not args.no_cron:
                log(f"cron with {count} servers")
                results["cron"].append(measure_cron(setup, count))
                drop_slots(setup, count)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if setup is not None:
            setup.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    text = report(results)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
