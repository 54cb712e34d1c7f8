"""The quickstart's story: stream, back up, write, kill the primary, recover, count."""

from __future__ import annotations

import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from walvault.errors import WalvaultError
from walvault.quickstart.cluster import (
    QUICKSTART_USER,
    Cluster,
    ensure_user,
    find_bindir,
    free_port,
)

Echo = Callable[[str], None]
APP = "walvault_receive_wal"


@dataclass
class Load:
    """Clients inserting one row per transaction, remembering every acknowledged commit."""

    conninfo: str
    acknowledged: set[int] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> None:
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error:
            return
        with conn:
            while not self.stop.is_set():
                with self.lock:
                    self.counter += 1
                    ident = self.counter
                try:
                    conn.execute("INSERT INTO quickstart VALUES (%s, repeat('w', 300))", (ident,))
                except psycopg.Error:
                    return
                with self.lock:
                    self.acknowledged.add(ident)


class Quickstart:
    """Everything the quickstart starts, so that it can all be cleaned up."""

    def __init__(self, base: str, echo: Echo, seconds: float) -> None:
        self.base = base
        self.echo = echo
        self.seconds = seconds
        self.owner = ensure_user()
        self.socket_dirs: list[str] = []
        self.bindir = find_bindir()
        self.primary = self._cluster("primary")
        self.restored: Cluster | None = None
        self.conf = os.path.join(base, "walvault.conf")
        self.home = os.path.join(base, "walvault")

    def _cluster(self, name: str) -> Cluster:
        # unix socket paths must stay short (~100 bytes): a private directory under /tmp
        socket_dir = tempfile.mkdtemp(prefix=f"wvqs-{name[:3]}-", dir="/tmp")
        os.chmod(socket_dir, 0o755)
        self.socket_dirs.append(socket_dir)
        cluster = Cluster(
            self.bindir, os.path.join(self.base, name, "data"), free_port(), socket_dir, self.owner
        )
        cluster.chown(socket_dir)
        return cluster

    def walvault(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run a walvault command against the quickstart's configuration."""
        command = [sys.executable, "-m", "walvault.cli.main", "-c", self.conf, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise WalvaultError(
                f"'walvault {' '.join(args)}' failed: {(result.stderr or result.stdout).strip()}"
            )
        return result

    def setup(self) -> None:
        self.echo(
            f"1. Creating a throwaway PostgreSQL in {self.primary.data} (port {self.primary.port})"
        )
        self.primary.initdb()
        self.primary.configure(
            {
                "wal_level": "replica",
                "max_wal_senders": "5",
                "max_replication_slots": "5",
            }
        )
        self.primary.start()
        with psycopg.connect(self.primary.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE quickstart (id int PRIMARY KEY, pad text)")
            # from now on every commit waits until walvault's receiver has flushed it
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ({APP})'")
            conn.execute("SELECT pg_reload_conf()")
        os.makedirs(self.home, exist_ok=True)
        with open(self.conf, "w", encoding="utf-8") as handle:
            handle.write(
                f"[walvault]\nwalvault_home = {self.home}\nlog_file = {self.home}/walvault.log\n\n"
                f"[quickstart]\ndescription = walvault quickstart\n"
                f"conninfo = {self.primary.conninfo()}\n"
                "backup_method = postgres\nstreaming_archiver = on\nslot_name = walvault\n"
                f"create_slot = auto\ncompression = zstd\nimmediate_checkpoint = true\n"
                f"path_prefix = {self.bindir}\n"
            )
        self.echo(
            "2. Configured walvault (streaming-only, replication slot, synchronous "
            f"streaming): {self.conf}"
        )

    def stream(self) -> None:
        self.walvault("cron")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with psycopg.connect(self.primary.conninfo(), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
                    (APP,),
                ).fetchone()
            if row and row[0] == "sync":
                self.echo("3. 'walvault cron' started receive-wal: streaming, synchronous")
                return
            time.sleep(0.2)
        raise WalvaultError("receive-wal did not start streaming within 60 s; see " + self.home)

    def backup(self) -> float:
        started = time.monotonic()
        self.walvault("backup", "--wait", "quickstart")
        elapsed = time.monotonic() - started
        self.echo(f"4. Took a base backup over the streaming connection in {elapsed:.1f} s")
        return elapsed

    def load(self) -> tuple[Load, list[int]]:
        load = Load(self.primary.conninfo())
        threads = [threading.Thread(target=load.client) for _ in range(2)]
        for thread in threads:
            thread.start()
        lags: list[int] = []
        tty = sys.stdout.isatty()
        self.echo(f"5. Writing for {self.seconds:.0f} s (2 clients, one row per commit):")
        end = time.monotonic() + self.seconds
        next_cron = 0.0
        while time.monotonic() < end:
            if time.monotonic() >= next_cron:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "walvault.cli.main",
                        "-c",
                        self.conf,
                        "-q",
                        "archive-wal",
                        "quickstart",
                    ],
                    capture_output=True,
                    check=False,
                )
                next_cron = time.monotonic() + 2
            with psycopg.connect(self.primary.conninfo(), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT pg_current_wal_lsn() - write_lsn, write_lsn::text "
                    "FROM pg_stat_replication WHERE application_name = %s",
                    (APP,),
                ).fetchone()
            if row:
                lags.append(int(row[0]))
            archived = _count_archived(self.home)
            line = (
                f"   commits acknowledged {len(load.acknowledged):7d} | streamed LSN "
                f"{row[1] if row else '?':>12} | lag {lags[-1] if lags else 0:8d} B | "
                f"segments archived {archived:4d}"
            )
            if tty:
                sys.stdout.write("\r" + line)
                sys.stdout.flush()
            elif len(lags) % 4 == 1:
                self.echo(line)
            time.sleep(0.5)
        if tty:
            sys.stdout.write("\n")
        self.echo("6. Killing the primary mid-load (pg_ctl stop -m immediate)")
        self.primary.crash()
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        return load, lags

    def recover(self) -> set[int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _receiver_running(self):
            time.sleep(0.2)
        self.restored = self._cluster("restored")
        result = self.walvault(
            "recover",
            "quickstart",
            "latest",
            self.restored.data,
            "--no-get-wal",
            "--port",
            str(self.restored.port),
        )
        tail = [line for line in result.stdout.splitlines() if "streamed tail" in line]
        self.echo(
            "7. Recovered the backup to "
            + self.restored.data
            + (" (with the streamed .partial tail)" if tail else "")
        )
        self.restored.chown(os.path.dirname(self.restored.data))
        self.restored.start()
        deadline = time.monotonic() + 120
        while True:
            with psycopg.connect(self.restored.conninfo(), autocommit=True) as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                    rows = conn.execute("SELECT id FROM quickstart").fetchall()
                    break
            if time.monotonic() > deadline:
                raise WalvaultError("the restored server did not finish recovery in 120 s")
            time.sleep(0.3)
        self.echo("8. Started it: recovery finished")
        return {int(r[0]) for r in rows}

    def cleanup(self) -> None:
        for cluster in (self.restored, self.primary):
            if cluster is not None:
                cluster.stop()
        _stop_receiver(self)
        shutil.rmtree(self.base, ignore_errors=True)
        for directory in self.socket_dirs:
            shutil.rmtree(directory, ignore_errors=True)


def _count_archived(home: str) -> int:
    wals = os.path.join(home, "quickstart", "wals")
    total = 0
    for directory in os.listdir(wals) if os.path.isdir(wals) else []:
        path = os.path.join(wals, directory)
        if os.path.isdir(path):
            total += sum(1 for n in os.listdir(path) if len(n) == 24)
    return total


def _archive_bytes(home: str) -> tuple[int, int]:
    from walvault.archive.catalogue import iter_entries

    entries = [
        e
        for e in iter_entries(os.path.join(home, "quickstart", "wals", "quickstart-xlog.db"))
        if len(e.name) == 24
    ]
    return len(entries), sum(e.size for e in entries)


def _receiver_running(qs: Quickstart) -> bool:
    from walvault import locks

    return locks.lock_holder(qs.home, "quickstart", locks.RECEIVE_WAL) is not None


def _stop_receiver(qs: Quickstart) -> None:
    from walvault import locks

    pid = locks.lock_holder(qs.home, "quickstart", locks.RECEIVE_WAL)
    if pid:
        locks.terminate(pid, timeout=10)


def walvault_command() -> str:
    """How to run this walvault from a shell: ``walvault`` when that is the one on PATH, else
    the ``walvault`` installed beside this interpreter, else ``python -m walvault.cli.main``."""
    beside = os.path.join(os.path.dirname(sys.executable), "walvault")
    if os.access(beside, os.X_OK):
        found = shutil.which("walvault")
        if found and os.path.realpath(found) == os.path.realpath(beside):
            return "walvault"
        return shlex.quote(beside)
    return shlex.join([sys.executable, "-m", "walvault.cli.main"])


def kept_instructions(qs: Quickstart) -> list[str]:
    """What ``--keep`` prints: commands that work as they are (``$ `` lines), what is still
    running, and how to stop and remove all of it."""
    wv = f"{walvault_command()} -c {shlex.quote(qs.conf)}"
    as_owner = f"runuser -u {QUICKSTART_USER} -- " if qs.owner is not None else ""
    restored = qs.restored
    lines = ["", f"Kept everything in {qs.base}. Look around with:"]
    lines += [f"  $ {wv} {command} quickstart" for command in ("status", "list-backups")]
    lines.append(f"  $ {wv} show-backup quickstart latest")
    if restored is not None:
        psql = shlex.quote(os.path.join(qs.bindir, "psql"))
        lines.append(
            f"  $ {psql} -h 127.0.0.1 -p {restored.port} -U postgres -c "
            "'SELECT count(*) FROM quickstart'"
        )
        lines.append(f"Still running: the restored PostgreSQL (127.0.0.1:{restored.port}).")
    receiving = _receiver_running(qs)
    if receiving:
        lines.append("Still running: walvault's receive-wal for the killed primary.")
    else:
        lines.append("The primary was killed and walvault's receiver stopped with it (no cron).")
    lines.append("To stop and remove it all:")
    if restored is not None:
        pg_ctl = shlex.quote(os.path.join(qs.bindir, "pg_ctl"))
        lines.append(f"  $ {as_owner}{pg_ctl} stop -m fast -D {shlex.quote(restored.data)}")
    if receiving:
        lines.append(f"  $ {wv} receive-wal --stop quickstart")
    dirs = " ".join(shlex.quote(d) for d in [qs.base, *qs.socket_dirs])
    lines.append(f"  $ rm -rf {dirs}")
    return lines


def run_quickstart(echo: Echo, *, seconds: float = 10.0, keep: bool = False) -> int:
    """The whole story; returns 0 when no acknowledged commit was lost."""
    find_bindir()  # a clear error before anything is created
    base = tempfile.mkdtemp(prefix="walvault-quickstart-")
    os.chmod(base, 0o755)
    qs = Quickstart(base, echo, seconds)
    try:
        qs.setup()
        qs.stream()
        backup_time = qs.backup()
        load, lags = qs.load()
        rows = qs.recover()
        segments, archived = _archive_bytes(qs.home)
        lost = len(load.acknowledged - rows)
        ratio = (segments * (1 << 20)) / archived if archived else 0.0
        echo("")
        echo("Summary")
        echo(f"  backup time                 {backup_time:.1f} s")
        echo(f"  WAL archived                {segments} segments, {archived} bytes (zstd)")
        echo(f"  compression ratio           {ratio:.1f}")
        if lags:
            echo(
                f"  streaming lag seen          median {statistics.median(lags):.0f} B, "
                f"max {max(lags)} B"
            )
        echo(f"  transactions acknowledged   {len(load.acknowledged)}")
        echo(f"  transactions recovered      {len(rows & load.acknowledged)}")
        echo(f"acknowledged commits lost: {lost}")
        if keep:
            for line in kept_instructions(qs):
                echo(line)
        return 0 if lost == 0 else 1
    finally:
        if not keep:
            qs.cleanup()
