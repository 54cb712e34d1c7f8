"""walvault vs Barman 3.20.1, side by side on the same real WAL (a benchmark, not a test).

Usage (as root, with the Python that has walvault installed):

    /opt/wv-venv/bin/python bench/run.py [--quick] [--json OUT.json] [--sections LIST] [--keep]

What it does, in one run:

1. installs Barman 3.20.1 into its own venv if needed (``bench/barman_env.sh``);
2. creates a throwaway PostgreSQL 15 cluster (16 MiB segments) owned by the unprivileged user
   ``walvault-bench`` under ``/var/tmp/walvault-bench/``, streams its WAL with
   ``pg_receivewal`` on a slot while ``pgbench -i`` then ``pgbench -T`` run, and keeps the
   finished segments as a pool of real WAL;
3. ``archive``: ``archive-wal`` throughput of each tool for no compression, gzip, zstd and lz4,
   each at its default (medium) level, on the same segments (hard-linked into each tool's
   ``streaming/`` with one trailing ``.partial``), median of several runs, then a check that
   every segment is in each archive and decompresses to the original bytes;
4. ``scale``: one run with ``streaming_archiver_batch_size = 1000`` over a backlog of 1,000 and
   of 200,000 files (sparse 16 MiB files whose first page is a real page header, patched with
   the page address of each file's name, so every file is a valid segment for its name);
5. ``getwal``: one ``get-wal`` call, one ``restore_command`` call, and a replay-style restore
   of consecutive segments through ``restore_command`` (serial, and with prefetch ``-p 4`` for
   walvault), each tool reading its own zstd archive;
6. prints a table (and writes JSON, default ``bench/results/latest.json``); peak memory is the
   maximum resident set size of the command's process tree (``wait4``).

Everything it creates (cluster, WAL pool, archives) is removed at the end, and its PostgreSQL
is stopped even on failure. Figures that cannot be measured (e.g. a walvault command that is
not built yet) are reported as missing, never invented.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import pwd
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASE = Path("/var/tmp/walvault-bench")
BENCH_USER = "walvault-bench"
PG_MAJOR = 15
SEG = 16 << 20
PAGE = 8192
SEGS_PER_LOG = 0x100000000 // SEG
CODECS = ("none", "gzip", "zstd", "lz4")
SECTIONS = ("archive", "scale", "getwal")
BARMAN_VERSION = "3.20.1"
GNU_TIME = "/usr/bin/time"


class BenchError(Exception):
    """The benchmark cannot go on (the message says why)."""


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Params:
    quick: bool
    pool_min: int  # finished segments to collect
    pgbench_scale: int  # pgbench -i -s
    pgbench_min_seconds: int  # pgbench -T time at least (TPC-B WAL, not only COPY)
    pgbench_max_seconds: int
    archive_segments: int  # segments per archive-wal throughput run
    repeats: int
    scale_backlog: int
    scale_batch: int
    scale_repeats: int
    barman_scale_limit: float  # seconds
    single_calls: int
    restore_segments: int

    @classmethod
    def make(cls, quick: bool) -> Params:
        if quick:
            return cls(
                quick=True,
                pool_min=60,
                pgbench_scale=80,
                pgbench_min_seconds=10,
                pgbench_max_seconds=60,
                archive_segments=30,
                repeats=3,
                scale_backlog=20_000,
                scale_batch=1000,
                scale_repeats=3,
                barman_scale_limit=60.0,
                single_calls=10,
                restore_segments=60,
            )
        return cls(
            quick=False,
            pool_min=200,
            pgbench_scale=150,
            pgbench_min_seconds=30,
            pgbench_max_seconds=240,
            archive_segments=60,
            repeats=3,
            scale_backlog=200_000,
            scale_batch=1000,
            scale_repeats=5,
            barman_scale_limit=120.0,
            single_calls=20,
            restore_segments=200,
        )


# --------------------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rate(times: dict[str, list[float]], tool: str, amount: float) -> float | None:
    """``amount`` per second, over the median of ``times[tool]``."""
    med = median(times.get(tool, []))
    return amount / med if med else None


def seg_name(tli: int, segno: int) -> str:
    return f"{tli:08X}{segno // SEGS_PER_LOG:08X}{segno % SEGS_PER_LOG:08X}"


def seg_parse(name: str) -> tuple[int, int]:
    return int(name[:8], 16), int(name[8:16], 16) * SEGS_PER_LOG + int(name[16:24], 16)


def is_segment_name(name: str) -> bool:
    return re.fullmatch(r"[0-9A-F]{24}", name) is not None


def hash_dir(name: str) -> str:
    return name[:16]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"({exc})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fmt_num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Run:
    """One timed command."""

    argv: list[str]
    elapsed: float
    returncode: int | None
    maxrss_kib: int  # 0 when unknown (GNU time not available, or the command was killed)
    timed_out: bool
    cpu_seconds: float = 0.0  # user + system, the command and its children
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        what = " ".join(shlex.quote(a) for a in self.argv)
        if self.timed_out:
            return f"`{what}` did not finish within {self.elapsed:.0f} s"
        return (
            f"`{what}` exited {self.returncode}: "
            f"{tail(self.stderr) or tail(self.stdout) or '(no output)'}"
        )


def run_timed(
    argv: Sequence[str],
    *,
    stdout_path: Path | None = None,
    capture: bool = True,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    """Run ``argv`` and measure its wall time, CPU time and peak RSS.

    Peak RSS comes from GNU time (``%M``: the largest resident set of the command and the
    children it waited for). It is not taken from this process's ``wait4``: a child forked
    from this (big) Python process keeps the parent's RSS high-water mark across ``exec``,
    which would put a floor of this script's own size under every figure.
    stdout goes to ``stdout_path`` if given, else is captured (``capture``) or discarded.
    stderr is captured through a file (no pipe that could fill up while we wait). With
    ``timeout`` the whole process group is killed when it is exceeded.
    """
    scratch = BASE / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{threading.get_ident()}"
    err_file = open(scratch / f"stderr.{tag}", "w+b")  # noqa: SIM115
    rss_path = scratch / f"rss.{tag}"
    launch = list(argv)
    if os.access(GNU_TIME, os.X_OK):
        launch = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *argv]
    out_file = None
    try:
        if stdout_path is not None:
            out_file = open(stdout_path, "wb")  # noqa: SIM115
        elif capture:
            out_file = open(scratch / f"stdout.{os.getpid()}.{threading.get_ident()}", "w+b")  # noqa: SIM115
        stdout: Any = out_file if out_file is not None else subprocess.DEVNULL
        timed_out = threading.Event()
        start = time.perf_counter()
        proc = subprocess.Popen(
            launch,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=err_file,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        timer = None
        if timeout is not None:

            def kill() -> None:
                timed_out.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            # interrupted (SIGINT/SIGTERM): the command runs in its own session, so take it
            # down with us rather than leave it working in a directory about to be removed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise
        finally:
            if timer is not None:
                timer.cancel()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err_file.seek(0)
        stderr = err_file.read().decode(errors="replace")
        out = ""
        if stdout_path is None and out_file is not None:
            out_file.seek(0)
            out = out_file.read().decode(errors="replace")
        maxrss = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            # GNU time writes "Command exited with non-zero status N" first when it fails
            maxrss = int(rss_path.read_text().split()[-1])
        return Run(
            argv=list(argv),
            elapsed=elapsed,
            returncode=proc.returncode,
            maxrss_kib=maxrss,
            timed_out=timed_out.is_set(),
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            stdout=out,
            stderr=stderr,
        )
    finally:
        with contextlib.suppress(OSError):
            rss_path.unlink()
        for handle in (err_file, out_file):
            if handle is not None:
                name = handle.name
                handle.close()
                if stdout_path is None or name != str(stdout_path):
                    with contextlib.suppress(OSError):
                        os.unlink(name)


def reap_strays(marker: str, grace: float = 10.0) -> list[int]:
    """Stop the processes whose command line mentions ``marker`` (a path unique to this run).

    These are processes the bench started indirectly and that outlive the command that
    started them, e.g. walvault-wal-restore's prefetch worker. SIGTERM, then SIGKILL after
    ``grace`` seconds. Returns their PIDs.
    """
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(found)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists()]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


def check_call(argv: Sequence[str], what: str, **kwargs: Any) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise BenchError(
            f"{what} failed (exit {proc.returncode}): {tail(proc.stderr or proc.stdout)}"
        )
    return proc.stdout


# --------------------------------------------------------------------------- the tools


@dataclass
class Tools:
    pg_bindir: Path
    barman: Path | None
    barman_version: str | None
    walvault: Path | None
    walvault_version: str | None
    walvault_commands: set[str]
    wal_restore: Path | None
    wal_restore_help: str
    missing: list[str] = field(default_factory=list)

    def has(self, command: str) -> bool:
        return self.walvault is not None and command in self.walvault_commands


def find_pg_bindir() -> Path:
    candidates = [Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(out))
    for bindir in candidates:
        postgres = bindir / "postgres"
        if not os.access(postgres, os.X_OK):
            continue
        out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True).stdout
        if re.search(rf"\(PostgreSQL\)\s+{PG_MAJOR}\.", out):
            return bindir
    raise BenchError(
        f"PostgreSQL {PG_MAJOR} server binaries not found (looked in "
        f"{', '.join(map(str, candidates))}); install postgresql-{PG_MAJOR}"
    )


def find_tools(barman_venv: Path, install_barman: bool) -> Tools:
    missing: list[str] = []
    pg_bindir = find_pg_bindir()

    barman: Path | None = barman_venv / "bin" / "barman"
    if not os.access(barman, os.X_OK) and install_barman:
        log(f"Barman is not installed in {barman_venv}: running bench/barman_env.sh")
        proc = subprocess.run(
            ["bash", str(HERE / "barman_env.sh"), str(barman_venv)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            missing.append(f"Barman: bench/barman_env.sh failed: {tail(proc.stderr, 5)}")
    barman_version = None
    if os.access(barman, os.X_OK):
        out = subprocess.run([str(barman), "--version"], capture_output=True, text=True).stdout
        barman_version = out.split()[0] if out.split() else None
        if barman_version != BARMAN_VERSION:
            missing.append(f"Barman in {barman_venv} is {barman_version}, not {BARMAN_VERSION}")
    else:
        missing.append(f"Barman: not installed in {barman_venv} (run bench/barman_env.sh)")
        barman = None

    bindir = Path(sys.executable).parent
    walvault: Path | None = bindir / "walvault"
    assert walvault is not None
    if not os.access(walvault, os.X_OK):
        found = shutil.which("walvault")
        walvault = Path(found) if found else None
    commands: set[str] = set()
    walvault_version = None
    if walvault is None:
        missing.append("walvault: no `walvault` executable next to this Python or on PATH")
    else:
        proc = subprocess.run([str(walvault), "--help"], capture_output=True, text=True)
        # the sub-commands are listed as "    name   help text" under "COMMAND"
        commands = set(re.findall(r"^ {4}([a-z][a-z0-9-]+)", proc.stdout, flags=re.M))
        ver = subprocess.run([str(walvault), "--version"], capture_output=True, text=True)
        walvault_version = (ver.stdout or ver.stderr).strip() or None
        for command in ("archive-wal", "get-wal"):
            if command not in commands:
                missing.append(f"walvault {command}: not built yet (`walvault --help` lacks it)")

    wal_restore: Path | None = bindir / "walvault-wal-restore"
    assert wal_restore is not None
    wal_restore_help = ""
    if not os.access(wal_restore, os.X_OK):
        found = shutil.which("walvault-wal-restore")
        wal_restore = Path(found) if found else None
    if wal_restore is not None:
        proc = subprocess.run([str(wal_restore), "--help"], capture_output=True, text=True)
        if proc.returncode == 0 and "usage" in proc.stdout.lower():
            wal_restore_help = proc.stdout
        else:
            wal_restore = None
    if wal_restore is None:
        missing.append("walvault-wal-restore: not built yet (no working `--help`)")
    elif not has_local_mode(wal_restore_help):
        missing.append("walvault-wal-restore: no local mode ('local' host) in its --help")
    return Tools(
        pg_bindir=pg_bindir,
        barman=barman,
        barman_version=barman_version,
        walvault=walvault,
        walvault_version=walvault_version,
        walvault_commands=commands,
        wal_restore=wal_restore,
        wal_restore_help=wal_restore_help,
        missing=missing,
    )


def has_local_mode(wal_restore_help: str) -> bool:
    """walvault-wal-restore's local mode: the host argument 'local' (no ssh)."""
    return "'local'" in wal_restore_help


# --------------------------------------------------------------------------- PostgreSQL


def ensure_bench_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(BENCH_USER)
    except KeyError:
        pass
    log(f"creating the unprivileged user {BENCH_USER}")
    check_call(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            str(BASE),
            "--shell",
            "/usr/sbin/nologin",
            BENCH_USER,
        ],
        f"useradd {BENCH_USER}",
    )
    return pwd.getpwnam(BENCH_USER)


class Cluster:
    """A throwaway PostgreSQL cluster run by the bench user, listening on 127.0.0.1 only."""

    def __init__(self, root: Path, bindir: Path, user: pwd.struct_passwd) -> None:
        self.root = root
        self.bindir = bindir
        self.user = user
        self.data = root / "data"
        self.sock = root / "sock"
        self.logfile = root / "postgres.log"
        self.port = free_port()
        self.started = False

    def _as_user(self, argv: Sequence[str]) -> list[str]:
        return ["runuser", "-u", self.user.pw_name, "--", *argv]

    def init(self) -> None:
        self.root.mkdir(parents=True)
        self.sock.mkdir()
        for path in (self.root, self.sock):
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        check_call(
            self._as_user(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            "initdb",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sock}'",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "max_replication_slots": "4",
            # the cluster only produces WAL for the bench: its own durability does not matter
            "fsync": "off",
            "synchronous_commit": "off",
            "shared_buffers": "256MB",
            "logging_collector": "off",
        }
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def start(self) -> None:
        self.started = True
        check_call(
            self._as_user(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.logfile),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            "pg_ctl start",
        )

    def stop(self) -> None:
        if not self.started or not (self.data / "postmaster.pid").exists():
            return
        for mode in ("fast", "immediate"):
            proc = subprocess.run(
                self._as_user(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-m",
                        mode,
                        "-w",
                        "-t",
                        "60",
                        "stop",
                    ]
                ),
                capture_output=True,
                text=True,
            )
            if proc.returncode == 0:
                self.started = False
                return
        log(f"WARNING: could not stop PostgreSQL in {self.data}")

    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def client_args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]

    def sql(self, query: str) -> str:
        return check_call(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-At",
                *self.client_args(),
                "-d",
                "postgres",
                "-c",
                query,
            ],
            f"psql -c {query!r}",
        ).strip()

    def version(self) -> str:
        return self.sql("SHOW server_version")


def collect_wal(cluster: Cluster, pool: Path, params: Params) -> list[str]:
    """Stream the cluster's WAL into ``pool`` while pgbench runs; return the finished segments."""
    pool.mkdir(parents=True)
    bindir = cluster.bindir
    check_call(
        [
            str(bindir / "pg_receivewal"),
            *cluster.client_args(),
            "--slot=bench",
            "--create-slot",
            "--if-not-exists",
        ],
        "pg_receivewal --create-slot",
    )
    receiver_log = open(cluster.root.parent / "pg_receivewal.log", "wb")  # noqa: SIM115
    receiver = subprocess.Popen(
        [
            str(bindir / "pg_receivewal"),
            *cluster.client_args(),
            "--slot=bench",
            "--no-loop",
            "--no-password",
            "--directory",
            str(pool),
        ],
        stdout=receiver_log,
        stderr=receiver_log,
        start_new_session=True,
    )

    def finished() -> list[str]:
        return sorted(
            n for n in os.listdir(pool) if is_segment_name(n) and (pool / n).stat().st_size == SEG
        )

    try:
        pgbench = str(bindir / "pgbench")
        log(f"pgbench -i -s {params.pgbench_scale} (COPY load, then indexes and VACUUM)")
        check_call(
            [
                pgbench,
                *cluster.client_args(),
                "-i",
                "-q",
                "-s",
                str(params.pgbench_scale),
                "postgres",
            ],
            "pgbench -i",
        )
        log(f"  {len(finished())} segments so far")
        start = time.monotonic()
        while True:
            spent = time.monotonic() - start
            have = len(finished())
            if spent >= params.pgbench_min_seconds and have >= params.pool_min + 1:
                break
            if spent >= params.pgbench_max_seconds:
                break
            check_call(
                [
                    pgbench,
                    *cluster.client_args(),
                    "-n",
                    "-c",
                    "4",
                    "-j",
                    "2",
                    "-T",
                    "10",
                    "postgres",
                ],
                "pgbench -T",
            )
            if receiver.poll() is not None:
                raise BenchError(
                    "pg_receivewal stopped: "
                    + (cluster.root.parent / "pg_receivewal.log").read_text()
                )
            log(f"  pgbench -T: {len(finished())} segments after {time.monotonic() - start:.0f} s")
        cluster.sql("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        target = len(finished()) + 1
        while len(finished()) < target and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if receiver.poll() is None:
            receiver.send_signal(signal.SIGINT)
            try:
                receiver.wait(10)
            except subprocess.TimeoutExpired:
                receiver.kill()
                receiver.wait()
        receiver_log.close()
        with contextlib.suppress(BenchError):
            cluster.sql(
                "SELECT pg_drop_replication_slot('bench') FROM pg_replication_slots "
                "WHERE slot_name = 'bench'"
            )
    segments = finished()
    for name in os.listdir(pool):
        if name not in segments:
            (pool / name).unlink()
    # keep one run of consecutive names (a gap would only come from a receiver problem)
    run = [segments[0]] if segments else []
    for name in segments[1:]:
        if seg_parse(name)[1] != seg_parse(run[-1])[1] + 1:
            break
        run.append(name)
    if len(run) < params.pool_min:
        raise BenchError(
            f"only {len(run)} consecutive finished segments were collected "
            f"(need {params.pool_min}); PostgreSQL log: {tail(read_text(cluster.logfile), 5)}"
        )
    os.sync()
    return run


# --------------------------------------------------------------------------- configurations


def server_section(cluster: Cluster, slot: str, codec: str, extra: dict[str, str]) -> str:
    lines = [
        "[pg]",
        "description = walvault bench",
        f"conninfo = {cluster.conninfo()}",
        f"streaming_conninfo = {cluster.conninfo()}",
        "backup_method = postgres",
        "streaming_archiver = on",
        f"slot_name = {slot}",
        "archiver = off",
        f"path_prefix = {cluster.bindir}",
    ]
    if codec != "none":
        lines.append(f"compression = {codec}")
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Home:
    """One tool's server home: configuration file and directories."""

    tool: str  # "barman" | "walvault"
    root: Path
    conf: Path

    @property
    def server(self) -> Path:
        return self.root / "pg"

    @property
    def streaming(self) -> Path:
        return self.server / "streaming"

    @property
    def wals(self) -> Path:
        return self.server / "wals"

    def archived(self, name: str) -> Path:
        return self.wals / hash_dir(name) / name


def make_home(
    tool: str,
    root: Path,
    cluster: Cluster,
    codec: str,
    sysid: int,
    extra: dict[str, str] | None = None,
) -> Home:
    root.mkdir(parents=True)
    home = Home(tool=tool, root=root, conf=root / f"{tool}.conf")
    for sub in ("base", "wals", "streaming", "incoming", "errors"):
        (home.server / sub).mkdir(parents=True)
    # what receive-wal records on first contact (Barman's format): the archive belongs to
    # this cluster, as in a real deployment where receive-wal ran before archive-wal
    (home.server / "identity.json").write_text(
        json.dumps({"systemid": str(sysid), "version": str(PG_MAJOR)}, indent=4, sort_keys=True)
        + "\n"
    )
    if tool == "barman":
        head = f"[barman]\nbarman_user = root\nbarman_home = {root}\nlog_file = {root}/barman.log\n"
    else:
        head = f"[walvault]\nwalvault_home = {root}\nlog_file = {root}/walvault.log\n"
    home.conf.write_text(head + "\n" + server_section(cluster, tool, codec, extra or {}))
    home.conf.chmod(0o600)
    return home


def archive_cmd(tools: Tools, home: Home) -> list[str]:
    exe = tools.barman if home.tool == "barman" else tools.walvault
    assert exe is not None
    return [str(exe), "-c", str(home.conf), "-q", "archive-wal", "pg"]


def get_wal_cmd(tools: Tools, home: Home, name: str) -> list[str]:
    exe = tools.barman if home.tool == "barman" else tools.walvault
    assert exe is not None
    return [str(exe), "-c", str(home.conf), "-q", "get-wal", "pg", name]


def restore_command(tools: Tools, home: Home, prefetch: int, spool: Path) -> str:
    """The ``restore_command`` a local deployment of each tool would use (%f, %p unexpanded)."""
    if home.tool == "barman":
        # Barman's advice for a restore on the Barman host itself (barman-wal-restore needs ssh)
        assert tools.barman is not None
        barman, conf = shlex.quote(str(tools.barman)), shlex.quote(str(home.conf))
        return f"{barman} -c {conf} -q get-wal pg %f > %p"
    assert tools.wal_restore is not None
    parts = [str(tools.wal_restore), "-c", str(home.conf)]
    if prefetch:
        parts += ["-p", str(prefetch), "--spool-dir", str(spool)]
    # WALVAULT_HOST 'local': read the archive on this host, no ssh
    return " ".join(shlex.quote(p) for p in parts) + " local pg %f %p"


def place_partial(streaming: Path, after: str) -> None:
    """The live segment of pg_receivewal: a 16 MiB ``.partial`` after the newest finished one."""
    tli, segno = seg_parse(after)
    path = streaming / f"{seg_name(tli, segno + 1)}.partial"
    with open(path, "wb") as handle:
        handle.truncate(SEG)


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    section: str
    figure: str
    unit: str
    better: str  # "higher" | "lower" | "info"
    barman: float | None = None
    walvault: float | None = None
    barman_text: str | None = None  # overrides the number (e.g. "> 120 s", "not built")
    walvault_text: str | None = None
    note: str = ""

    @property
    def advantage(self) -> float | None:
        """How many times better walvault is (> 1 = walvault better)."""
        if self.better == "info" or not self.barman or not self.walvault:
            return None
        if self.barman_text or self.walvault_text:
            return None
        if self.better == "higher":
            return self.walvault / self.barman
        return self.barman / self.walvault


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.missing: list[str] = []
        self.errors: list[str] = []
        self.details: dict[str, Any] = {}

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


# --------------------------------------------------------------------------- verification


def decompressed_sha256(path: Path) -> str:
    """sha256 of the file's content after decompression (algorithm found by magic bytes)."""
    from walvault.archive import compression

    algo = compression.identify_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in compression.iter_decompressed(handle, algo):
            digest.update(piece)
    return digest.hexdigest()


def verify_archive(
    home: Home, names: Sequence[str], hashes: dict[str, str], content: bool
) -> str | None:
    """None when every segment is archived (and, with ``content``, intact), else what is wrong."""
    missing = [n for n in names if not home.archived(n).is_file()]
    if missing:
        return (
            f"{len(missing)} of {len(names)} segments missing from {home.wals} "
            f"(first: {missing[0]})"
        )
    left = sorted(n for n in os.listdir(home.streaming) if not n.endswith(".partial"))
    if left:
        return f"{len(left)} files left in {home.streaming} (first: {left[0]})"
    if content:
        for name in names:
            if decompressed_sha256(home.archived(name)) != hashes[name]:
                return f"{home.archived(name)} does not decompress to the original segment"
    return None


def count_archived(home: Home) -> int:
    """How many segment files the archive holds (hash directories only)."""
    total = 0
    with os.scandir(home.wals) as entries:
        for entry in entries:
            if entry.is_dir() and len(entry.name) == 16:
                total += len(os.listdir(entry.path))
    return total


def archived_bytes(home: Home, names: Sequence[str]) -> int:
    return sum(home.archived(n).stat().st_size for n in names)


# --------------------------------------------------------------------------- sections


class Bench:
    def __init__(self, params: Params, tools: Tools, work: Path, results: Results) -> None:
        self.params = params
        self.tools = tools
        self.work = work
        self.results = results
        self.cluster: Cluster | None = None
        self.pool = work / "pool"
        self.segments: list[str] = []
        self.hashes: dict[str, str] = {}
        self.sysid = 0
        self.first_page = b""
        self._homes = 0

    # ---- setup

    def setup(self) -> None:
        user = ensure_bench_user()
        self.cluster = Cluster(self.work / "pg", self.tools.pg_bindir, user)
        log(f"initdb + start PostgreSQL {PG_MAJOR} as {BENCH_USER} on port {self.cluster.port}")
        self.cluster.init()
        self.cluster.start()
        self.results.details["postgres_version"] = self.cluster.version()
        start = time.monotonic()
        self.segments = collect_wal(self.cluster, self.pool, self.params)
        # the tools need no live server from here on (identity.json is written for them):
        # stop it, so its checkpointer, autovacuum (after pgbench) and write-back do not
        # compete with the measurements on this small machine
        self.cluster.sql("CHECKPOINT")
        self.cluster.stop()
        os.sync()
        log(
            f"collected {len(self.segments)} finished 16 MiB segments "
            f"({self.segments[0]} .. {self.segments[-1]}) in {time.monotonic() - start:.0f} s"
        )
        with open(self.pool / self.segments[0], "rb") as handle:
            self.first_page = handle.read(PAGE)
        (self.sysid,) = struct.unpack_from("<Q", self.first_page, 24)
        self.hashes = {n: sha256_file(self.pool / n) for n in self.segments}
        self.results.details["wal"] = {
            "segments_collected": len(self.segments),
            "first": self.segments[0],
            "last": self.segments[-1],
            "system_identifier": str(self.sysid),
            "generated_by": f"pgbench -i -s {self.params.pgbench_scale}, then pgbench -c 4 -j 2 -T",
        }

    def teardown(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    def new_home(self, tool: str, codec: str, extra: dict[str, str] | None = None) -> Home:
        assert self.cluster is not None
        self._homes += 1
        root = self.work / "homes" / f"{self._homes:03d}-{tool}-{codec}"
        return make_home(tool, root, self.cluster, codec, self.sysid, extra)

    def tool_ready(self, tool: str, command: str) -> bool:
        if tool == "barman":
            return self.tools.barman is not None
        return self.tools.has(command)

    # ---- archive-wal throughput

    def archive_throughput(self) -> None:
        p = self.params
        # an evenly spread sample, so COPY-load WAL and TPC-B WAL are both represented
        sample = min(p.archive_segments, len(self.segments))
        step = len(self.segments) / sample
        spread = [self.segments[int(i * step)] for i in range(sample)]
        tools = [t for t in ("barman", "walvault") if self.tool_ready(t, "archive-wal")]
        detail: dict[str, Any] = {"segments": sample, "segments_none": len(self.segments)}
        detail["runs"] = {}
        self.results.details["archive_wal"] = detail
        for codec in CODECS:
            # without compression a run is a rename + fsync per file and the ~0.2 s start-up
            # of Python dominates a small batch: give it the whole pool
            names = list(self.segments) if codec == "none" else spread
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
                    home = self.new_home(tool, codec)
                    for name in names:
                        os.link(self.pool / name, home.streaming / name)
                    place_partial(home.streaming, names[-1])
                    os.sync()
                    run = run_timed(archive_cmd(self.tools, home), capture=True)
                    last = rep == p.repeats - 1
                    problem = None if run.ok else run.describe()
                    if problem is None:
                        problem = verify_archive(home, names, self.hashes, content=last)
                    if problem is not None:
                        failed[tool] = problem
                        self.results.errors.append(f"archive-wal {codec} ({tool}): {problem}")
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
            texts = self._texts("archive-wal", failed)
            self.results.add(
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
                self.results.add(
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
                self.results.add(
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
            self.results.add(
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

    def _texts(self, command: str, failed: dict[str, str]) -> tuple[str | None, str | None]:
        out: list[str | None] = []
        for tool in ("barman", "walvault"):
            if tool in failed:
                out.append("failed")
            elif not self.tool_ready(tool, command):
                out.append("not built" if tool == "walvault" else "not installed")
            else:
                out.append(None)
        return out[0], out[1]

    # ---- 200,000-file backlog

    def _make_backlog(self, directory: Path, tli: int, first_segno: int, count: int) -> None:
        """``count`` sparse 16 MiB segments with a real first page, plus the live ``.partial``.

        Each file's first page is the pool's first page with ``xlp_pageaddr`` set to the
        start of the file's own segment, so the header matches the name (same system
        identifier, timeline and sizes as the real cluster); the rest of the file is a hole.
        """
        directory.mkdir(parents=True, exist_ok=True)
        page = bytearray(self.first_page)
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

    def scale(self) -> None:
        p = self.params
        batch = p.scale_batch
        extra = {"streaming_archiver_batch_size": str(batch)}
        tools = [t for t in ("walvault", "barman") if self.tool_ready(t, "archive-wal")]
        homes = {t: self.new_home(t, "none", extra) for t in tools}
        detail: dict[str, Any] = {
            "batch_size": batch,
            "backlog": p.scale_backlog,
            "compression": "none",
            "files": "sparse 16 MiB segments, real first page with its own page address",
            "runs": {},
        }
        self.results.details["scale"] = detail
        stage = self.work / "scale"

        def one_run(tool: str, directory: Path, limit: float | None) -> tuple[Run, int]:
            home = homes[tool]
            home.streaming.rmdir()
            os.rename(directory, home.streaming)
            try:
                before = len(os.listdir(home.streaming))
                archived_before = count_archived(home)
                os.sync()
                run = run_timed(archive_cmd(self.tools, home), capture=True, timeout=limit)
                moved = before - len(os.listdir(home.streaming))
                added = count_archived(home) - archived_before
            finally:
                os.rename(home.streaming, directory)
                home.streaming.mkdir()
            if run.ok and added != moved:
                self.results.errors.append(
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
                self.results.errors.append(f"scale, backlog {waiting} ({tool}): {run.describe()}")
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
                self._make_backlog(directory, 1, small_segno + rep * batch, batch)
                measure("small", tool, directory, batch)
                shutil.rmtree(directory)
        # -- backlog = 200,000 (or the quick figure), shrinking by one batch per run
        big = stage / "big"
        log(f"creating a backlog of {p.scale_backlog:,} sparse segments")
        t0 = time.monotonic()
        self._make_backlog(big, 1, big_segno, p.scale_backlog)
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
            self.results.add(
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
        self.results.add(
            Row(
                "archive-wal scale",
                f"time with {p.scale_backlog:,} waiting / time with {batch:,} waiting",
                "x",
                "info",
                growth.get("barman"),
                growth.get("walvault"),
                *self._texts("archive-wal", {}),
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
        self.results.add(
            Row(
                "archive-wal scale",
                f"batch of {batch:,}: peak memory",
                "MiB",
                "lower",
                rows_rss.get("barman") or None,
                rows_rss.get("walvault") or None,
                *self._texts("archive-wal", {}),
            )
        )

    # ---- get-wal and restore_command

    def getwal(self) -> None:
        p = self.params
        names = self.segments[: p.restore_segments]
        detail: dict[str, Any] = {"segments": len(names), "compression": "zstd"}
        self.results.details["get_wal"] = detail
        homes: dict[str, Home] = {}
        # each tool serves its own archive, built by its own archive-wal (zstd, the default
        # level); if walvault's archive-wal is not built, walvault reads Barman's archive
        for tool in ("barman", "walvault"):
            if not self.tool_ready(tool, "archive-wal"):
                continue
            home = self.new_home(tool, "zstd")
            for name in names:
                os.link(self.pool / name, home.streaming / name)
            place_partial(home.streaming, names[-1])
            os.sync()
            run = run_timed(archive_cmd(self.tools, home), capture=True)
            problem = None if run.ok else run.describe()
            problem = problem or verify_archive(home, names, self.hashes, content=False)
            if problem:
                self.results.errors.append(f"get-wal setup: archive-wal zstd ({tool}): {problem}")
                continue
            detail[f"archive_wal_zstd_{len(names)}_seconds_{tool}"] = run.elapsed
            log(f"  {tool}: archived {len(names)} segments (zstd) in {run.elapsed:.1f} s")
            homes[tool] = home
        if "walvault" not in homes and "barman" in homes and self.tools.walvault is not None:
            shared = Home("walvault", homes["barman"].root, homes["barman"].root / "walvault.conf")
            shared.conf.write_text(
                f"[walvault]\nwalvault_home = {shared.root}\n"
                f"log_file = {shared.root}/walvault.log\n\n"
                + server_section(self.cluster, "walvault", "zstd", {})  # type: ignore[arg-type]
            )
            homes["walvault"] = shared
            detail["walvault_reads"] = "Barman's archive (walvault's archive-wal not built)"

        can = {
            ("barman", "get-wal"): "barman" in homes,
            ("walvault", "get-wal"): "walvault" in homes and self.tools.has("get-wal"),
            ("barman", "restore"): "barman" in homes,
            ("walvault", "restore"): "walvault" in homes
            and self.tools.wal_restore is not None
            and has_local_mode(self.tools.wal_restore_help),
        }
        restore_dir = self.work / "restore"
        restore_dir.mkdir()
        target = restore_dir / "RECOVERYXLOG"

        def text(tool: str, what: str) -> str | None:
            if can[(tool, what)]:
                return None
            if tool == "barman":
                return "not installed"
            return "not built"

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
                        run = run_timed(get_wal_cmd(self.tools, homes[tool], name), capture=False)
                    else:
                        cmd = restore_command(self.tools, homes[tool], 0, restore_dir / "spool")
                        cmd = cmd.replace("%f", name).replace("%p", shlex.quote(str(target)))
                        run = run_timed(["/bin/sh", "-c", cmd], capture=True)
                        if run.ok and target.stat().st_size != SEG:
                            run.returncode = -1
                            run.stderr = f"{target} has {target.stat().st_size} bytes"
                    if not run.ok:
                        self.results.errors.append(f"one {what} call ({tool}): {run.describe()}")
                        can[(tool, what)] = False
                        continue
                    singles[what][tool].append(run.elapsed)
                    rss_single[what][tool].append(run.maxrss_kib)
        detail["single_calls"] = singles
        for what, label in (
            ("get-wal", "one `get-wal` call (to /dev/null): seconds"),
            ("restore", "one restore_command call: seconds"),
        ):
            self.results.add(
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

        # -- replay-style restore of consecutive segments
        replay: dict[str, Any] = {}
        modes = [("barman", 0), ("walvault", 0), ("walvault", 4)]
        for tool, prefetch in modes:
            if not can[(tool, "restore")]:
                continue
            spool = restore_dir / f"spool-{tool}-{prefetch}"
            restored = restore_dir / f"restored-{tool}-{prefetch}"
            restored.mkdir()
            cmd = restore_command(self.tools, homes[tool], prefetch, spool)
            maxrss = 0
            problem = None
            start = time.perf_counter()
            for name in names:
                run = run_timed(
                    [
                        "/bin/sh",
                        "-c",
                        cmd.replace("%f", name).replace("%p", shlex.quote(str(target))),
                    ],
                    capture=True,
                )
                if not run.ok:
                    problem = run.describe()
                    break
                maxrss = max(maxrss, run.maxrss_kib)
                os.rename(target, restored / name)  # what PostgreSQL does with RECOVERYXLOG
            elapsed = time.perf_counter() - start
            key = f"{tool}" + (f" -p {prefetch}" if prefetch else "")
            if prefetch:
                # the prefetch worker outlives the last call (it stops when idle): stop it
                strays = reap_strays(str(spool))
                detail.setdefault("prefetch_workers_stopped_after_run", {})[key] = len(strays)
            if problem is None:
                bad = [n for n in names if sha256_file(restored / n) != self.hashes[n]]
                if bad:
                    problem = (
                        f"{len(bad)} restored segments differ from the originals (first {bad[0]})"
                    )
            shutil.rmtree(restored)
            shutil.rmtree(spool, ignore_errors=True)
            if problem:
                self.results.errors.append(f"restore of {len(names)} segments ({key}): {problem}")
                replay[key] = {"error": problem}
                continue
            replay[key] = {"seconds": elapsed, "maxrss_kib": maxrss}
            log(
                f"  restore {len(names)} segments, {key:12}: {elapsed:6.1f} s "
                f"({len(names) / elapsed:.1f} seg/s)"
            )
        detail["replay"] = replay

        def rsec(key: str) -> float | None:
            got = replay.get(key, {})
            return got.get("seconds")

        def rtext(key: str, tool: str) -> str | None:
            if key in replay and "error" in replay[key]:
                return "failed"
            return text(tool, "restore")

        self.results.add(
            Row(
                "get-wal",
                f"{len(names)} segments through restore_command, serial: seconds",
                "s",
                "lower",
                rsec("barman"),
                rsec("walvault"),
                rtext("barman", "barman"),
                rtext("walvault", "walvault"),
                note="Barman: `barman get-wal pg %f > %p`; walvault: `walvault-wal-restore local`",
            )
        )
        self.results.add(
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
        self.results.add(
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
        for home in {h.root for h in homes.values()}:
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(restore_dir, ignore_errors=True)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "kernel": platform.release()}
    with contextlib.suppress(Exception):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, flags=re.M)
        info["cpu"] = m.group(1).strip() if m else None
    with contextlib.suppress(Exception):
        meminfo = Path("/proc/meminfo").read_text()
        m = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, flags=re.M)
        info["memory_gib"] = round(int(m.group(1)) / 1024 / 1024, 1) if m else None
    with contextlib.suppress(Exception):
        df = (
            subprocess.run(
                ["df", "-k", "--output=source,fstype,size", str(BASE)],
                capture_output=True,
                text=True,
            )
            .stdout.splitlines()[-1]
            .split()
        )
        info["filesystem"] = {"device": df[0], "type": df[1], "size_kib": int(df[2])}
        dev = os.path.basename(os.path.realpath(df[0]))
        rot = Path(f"/sys/block/{dev}/queue/rotational")
        if rot.exists():
            info["filesystem"]["rotational"] = rot.read_text().strip() == "1"
    with contextlib.suppress(Exception):
        info["virtualization"] = (
            subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip()
            or None
        )
    info["python_walvault"] = platform.python_version()
    return info


def walvault_tree() -> dict[str, Any]:
    """Which walvault code was measured: the commit, and how many files under src/ differ."""
    tree: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        tree["commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
        ).stdout
        tree["src_files_changed"] = len(status.splitlines())
    return tree


# --------------------------------------------------------------------------- report


def table(results: Results) -> str:
    """The results as an aligned Markdown table, with the notes as numbered footnotes."""
    head = ("figure", "Barman 3.20.1", "walvault", "walvault advantage")
    lines: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    section = None
    for row in results.rows:
        if row.section != section:
            section = row.section
            lines.append((f"**{section}**", "", "", ""))

        def cell(value: float | None, override: str | None, unit: str = row.unit) -> str:
            if override:
                return override
            if value is None:
                return "-"
            if unit == "s":
                return f"{value:.3f} s" if value < 1 else f"{value:.1f} s"
            return f"{fmt_num(value)} {unit}"

        figure = row.figure
        if row.note:
            if row.note not in notes:
                notes.append(row.note)
            figure += f" [{notes.index(row.note) + 1}]"
        adv = row.advantage
        lines.append(
            (
                figure,
                cell(row.barman, row.barman_text),
                cell(row.walvault, row.walvault_text),
                f"x{adv:.1f}" if adv is not None else "",
            )
        )
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(4)]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(line) for line in lines]
    out.append("")
    out.append(
        "walvault advantage: walvault/Barman for rates, Barman/walvault for times and memory "
        "(> 1 = walvault better)."
    )
    out += [f"[{n}] {note}" for n, note in enumerate(notes, 1)]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def disk_check(params: Params) -> None:
    usage = shutil.disk_usage(BASE)
    # pool + one restored copy + archives of the restore set, plus the sparse backlog's pages
    need = (params.pool_min + 40) * SEG * 2.5 + params.scale_backlog * 12 * 1024
    if usage.free < need:
        raise BenchError(
            f"{BASE} has {usage.free / 1e9:.1f} GB free; this run needs about {need / 1e9:.1f} GB"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run of about 3 minutes")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "latest.json", help="where to write JSON"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--barman-venv",
        type=Path,
        default=Path(os.environ.get("BARMAN_VENV", BASE / "barman-venv")),
        help="Barman 3.20.1's venv (installed by bench/barman_env.sh if missing)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        print(
            "bench/run.py must run as root: it creates the user walvault-bench, runs "
            "PostgreSQL as that user, and runs Barman as root (barman_user = root).",
            file=sys.stderr,
        )
        return 2

    params = Params.make(args.quick)
    results = Results()
    started = time.monotonic()
    BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(BASE, 0o755)
    work = BASE / f"run-{os.getpid()}"

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    bench = None
    status = 0
    try:
        disk_check(params)
        tools = find_tools(args.barman_venv, install_barman=True)
        results.missing.extend(tools.missing)
        for line in tools.missing:
            log(f"MISSING: {line}")
        work.mkdir()
        bench = Bench(params, tools, work, results)
        bench.setup()
        loads = results.details.setdefault("loadavg_1min", {})
        loads["start"] = os.getloadavg()[0]
        for section in sections:
            log(f"== {section} (load average {os.getloadavg()[0]:.1f})")
            loads[section] = os.getloadavg()[0]
            try:
                {"archive": bench.archive_throughput, "scale": bench.scale, "getwal": bench.getwal}[
                    section
                ]()
            except BenchError as exc:
                results.errors.append(f"{section}: {exc}")
                log(f"{section}: {exc}")
    except BenchError as exc:
        results.errors.append(str(exc))
        log(f"ERROR: {exc}")
        status = 1
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        status = 130
    finally:
        if bench is not None:
            bench.teardown()
        strays = reap_strays(str(work))
        if strays:
            log(f"stopped {len(strays)} leftover process(es) of this run: {strays}")
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(BASE / "tmp", ignore_errors=True)

    elapsed = time.monotonic() - started
    results.details.setdefault("loadavg_1min", {})["end"] = os.getloadavg()[0]
    info = machine_info()
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if args.quick else "full",
        "elapsed_seconds": round(elapsed, 1),
        "machine": info,
        "walvault_tree": walvault_tree(),
        "versions": {
            "postgres": results.details.get("postgres_version"),
            "barman": bench.tools.barman_version if bench else None,
            "walvault": bench.tools.walvault_version if bench else None,
        },
        "params": asdict(params),
        "rows": [asdict(r) | {"advantage": r.advantage} for r in results.rows],
        "missing": results.missing,
        "errors": results.errors,
        "details": results.details,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(
        f"walvault vs Barman {BARMAN_VERSION} -- {info.get('cores')} cores ({info.get('cpu')}), "
        f"PostgreSQL {results.details.get('postgres_version')}, "
        f"{'quick' if args.quick else 'full'} run in {elapsed / 60:.1f} min"
    )
    tree = report["walvault_tree"]
    if tree:
        print(
            f"{report['versions']['walvault']}, tree at {tree.get('commit')} with "
            f"{tree.get('src_files_changed')} uncommitted file(s) under src/; "
            f"run {report['when']}"
        )
    loads = results.details["loadavg_1min"]
    print(
        "1-min load average before each part: "
        + ", ".join(f"{k} {v:.1f}" for k, v in loads.items())
        + f" ({info.get('cores')} cores; other work on the machine inflates times)"
    )
    wal = results.details.get("wal")
    if wal:
        print(f"WAL: {wal['segments_collected']} real 16 MiB segments from {wal['generated_by']}")
    print()
    print(table(results))
    if results.missing:
        print("\nNot measured (missing):")
        for line in results.missing:
            print(f"  - {line}")
    if results.errors:
        print("\nErrors:")
        for line in results.errors:
            print(f"  - {line}")
    print(f"\nJSON: {args.json}")
    if results.errors and status == 0:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
