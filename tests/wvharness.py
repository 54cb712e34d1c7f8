"""Running walvault itself in integration tests: configuration files and the CLI as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from walvault.config import ServerConfig, load_config

WALVAULT = [sys.executable, "-m", "walvault.cli.main"]
PG_BIN = "/usr/lib/postgresql/15/bin"


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGINT a still-running process (a graceful stop), SIGKILL it after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Walvault:
    """A walvault home with a configuration file, and ways to run the CLI against it."""

    def __init__(self, home: Path, servers: Mapping[str, Mapping[str, Any]]) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.conf = home / "walvault.conf"
        self.procs: list[subprocess.Popen[str]] = []
        self.write(servers)

    def write(self, servers: Mapping[str, Mapping[str, Any]]) -> None:
        """(Re)write the configuration file."""
        text = f"[walvault]\nwalvault_home = {self.home}\nlog_file = {self.home}/walvault.log\n"
        for name, options in servers.items():
            text += f"\n[{name}]\n"
            for key, value in options.items():
                text += f"{key} = {value}\n"
        self.conf.write_text(textwrap.dedent(text))

    def server(self, name: str = "pg") -> ServerConfig:
        """The resolved configuration of a server."""
        return load_config(str(self.conf)).servers[name]

    def run(self, *args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``walvault -c CONF ARGS`` to completion."""
        return subprocess.run(
            [*WALVAULT, "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Start ``walvault -c CONF ARGS`` in the background (stopped at teardown)."""
        proc = subprocess.Popen(
            [*WALVAULT, "-c", str(self.conf), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def spawn_locked(self, command: str, server: ServerConfig) -> subprocess.Popen[str]:
        """Start ``walvault COMMAND SERVER`` and return once it holds its lock file (or has
        already exited): a kill after this lands inside the command's real work."""
        proc = self.spawn(command, server.name)
        lock = Path(server.lock_directory, f".{server.name}-{command}.lock")
        while proc.poll() is None:
            try:
                if lock.read_text().strip() == str(proc.pid):
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.0005)
        return proc

    def cleanup(self) -> None:
        """Stop every spawned process."""
        for proc in self.procs:
            stop_process(proc)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def streaming_server(pg: Any, **overrides: Any) -> dict[str, Any]:
    """Options of a streaming-only server for the harness cluster ``pg``."""
    options: dict[str, Any] = {
        "conninfo": pg.conninfo(),
        "streaming_conninfo": pg.streaming_conninfo(),
        "backup_method": "postgres",
        "streaming_archiver": "on",
        "slot_name": "walvault",
        "create_slot": "auto",
        "archiver": "off",
        "path_prefix": PG_BIN,
    }
    options.update(overrides)
    return {k: v for k, v in options.items() if v is not None}


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def segment_names(directory: Path | str) -> list[str]:
    """Complete WAL segment names in a directory, sorted."""
    import re

    return sorted(n for n in os.listdir(directory) if re.fullmatch(r"[0-9A-F]{24}", n))


def restored_cluster(template: Any, cluster_dir: Path, name: str) -> Any:
    """The PostgreSQL data directory ``cluster_dir/data`` (e.g. made by ``recover``) as a
    cluster of its own (port, socket directory), not started; destroyed with ``template``."""
    cluster = template.sibling(name, cluster_dir)
    cluster._write_settings()
    return cluster


def start_restored(template: Any, cluster_dir: Path, name: str) -> Any:
    """:func:`restored_cluster`, started."""
    cluster = restored_cluster(template, cluster_dir, name)
    cluster.start()
    return cluster


class WriteLoad:
    """Clients that insert one row per transaction and remember every acknowledged commit."""

    def __init__(self, conninfo: str, clients: int = 2) -> None:
        import threading

        self.conninfo = conninfo
        self.acknowledged: set[int] = set()
        self.attempted: set[int] = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]
        self.next_id = 0

    def _take_id(self) -> int:
        with self.lock:
            self.next_id += 1
            self.attempted.add(self.next_id)
            return self.next_id

    def _run(self, _client: int) -> None:
        import psycopg

        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error:
            return
        with conn:
            while not self.stop.is_set():
                ident = self._take_id()
                try:
                    conn.execute(
                        "INSERT INTO load (id, pad) VALUES (%s, repeat('x', 200))", (ident,)
                    )
                except psycopg.Error:
                    return  # the server died: this one was not acknowledged
                with self.lock:
                    self.acknowledged.add(ident)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def slot_active(pg: Any, slot: str = "walvault") -> bool:
    """Whether a walsender streams on the replication slot ``slot`` of ``pg``."""
    rows = pg.sql("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    return bool(rows and rows[0][0])


def start_receiver(wv: Walvault, pg: Any) -> subprocess.Popen[str]:
    """``receive-wal pg`` in the background, once it streams on its slot on ``pg``."""
    proc = wv.spawn("receive-wal", "pg")
    wait_for(lambda: slot_active(pg) or proc.poll() is not None, what="slot active")
    if proc.poll() is not None:
        out, err = proc.communicate()
        raise AssertionError(f"receive-wal ended: {out} {err}")
    return proc


def archive_last(wv: Walvault, pg: Any, timeout: float = 90) -> str:
    """Close ``pg``'s current segment and wait until walvault's archive-wal archived it."""
    last = pg.switch_wal()
    pg.sql("SELECT txid_current()")
    wals = Path(wv.server().wals_directory)

    def archived() -> bool:
        assert wv.run("archive-wal", "pg").returncode == 0
        return (wals / last[:16] / last).exists()

    wait_for(archived, what=f"{last} archived", timeout=timeout)
    return str(last)


def make_segments(pg: Any, count: int) -> list[str]:
    """Write and switch ``count`` times; return the names of the closed segments."""
    pg.sql("CREATE TABLE IF NOT EXISTS t (i int, pad text)")
    closed = []
    for _ in range(count):
        pg.sql("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 500) g")
        closed.append(pg.switch_wal())
    return closed
