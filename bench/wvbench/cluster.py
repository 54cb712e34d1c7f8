"""The throwaway PostgreSQL cluster, and its WAL streamed while pgbench runs."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from wvbench.common import (
    BASE,
    BENCH_USER,
    SEG,
    BenchError,
    Params,
    check_call,
    free_port,
    is_segment_name,
    log,
    read_text,
    seg_parse,
    tail,
)


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
            # two receivers plus a pg_basebackup (two connections) in `recovery`
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            # the cluster only produces WAL for the bench: its own durability does not matter
            "fsync": "off",
            "synchronous_commit": "off",
            "shared_buffers": "256MB",
            "logging_collector": "off",
        }
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def start(self, timeout: int = 60) -> None:
        """pg_ctl start as the bench user, waiting up to ``timeout`` seconds."""
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
                    str(timeout),
                    "start",
                ]
            ),
            f"pg_ctl start ({self.data})",
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


def pgbench_argv(cluster: Cluster, seconds: int) -> list[str]:
    """The TPC-B load every section runs: 4 clients, 2 threads, ``seconds`` long."""
    return [
        str(cluster.bindir / "pgbench"),
        *cluster.client_args(),
        "-n",
        "-c",
        "4",
        "-j",
        "2",
        "-T",
        str(seconds),
        "postgres",
    ]


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
            check_call(pgbench_argv(cluster, 10), "pgbench -T")
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
