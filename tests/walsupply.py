"""WAL files for archive tests: synthetic segments, and real ones from a test cluster."""

from __future__ import annotations

import builtins
import os
import shutil
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from walvault.config import ServerConfig
from wvharness import stop_process

MiB = 1 << 20
SYSID = 7712154413990288428
PG15_MAGIC = 0xD110
PG_BIN = "/usr/lib/postgresql/15/bin"
_LONG_HEADER = struct.Struct("<HHIQI4xQII")


def segment_name(tli: int, segno: int, seg_size: int = MiB) -> str:
    per_log = 0x100000000 // seg_size
    return f"{tli:08X}{segno // per_log:08X}{segno % per_log:08X}"


def synthetic_segment(
    name: str, *, sysid: int = SYSID, seg_size: int = MiB, filler: bytes | None = None
) -> bytes:
    """A segment whose long page header matches ``name`` (the rest is filler, not WAL)."""
    tli, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    pageaddr = (log * (0x100000000 // seg_size) + seg) * seg_size
    header = _LONG_HEADER.pack(PG15_MAGIC, 0x0002, tli, pageaddr, 0, sysid, seg_size, 8192)
    body = filler if filler is not None else (name.encode() * 64 + bytes(range(256)) * 8)
    data = (header + body * (seg_size // len(body) + 1))[:seg_size]
    return data


def write_segments(
    directory: Path | str, first: int, count: int, *, tli: int = 1, **kw: Any
) -> list[str]:
    """Write ``count`` synthetic consecutive segments; return their names."""
    os.makedirs(directory, exist_ok=True)
    names = []
    for segno in range(first, first + count):
        name = segment_name(tli, segno)
        Path(directory, name).write_bytes(synthetic_segment(name, **kw))
        names.append(name)
    return names


def make_server(root: Path, name: str = "pg", **overrides: Any) -> ServerConfig:
    """A ServerConfig with Barman's directory layout under ``root``."""
    home = root / "home"
    backup = home / name
    options: dict[str, Any] = {
        "name": name,
        "walvault_home": str(home),
        "lock_directory": str(home),
        "backup_directory": str(backup),
        "wals_directory": str(backup / "wals"),
        "incoming_wals_directory": str(backup / "incoming"),
        "streaming_wals_directory": str(backup / "streaming"),
        "errors_directory": str(backup / "errors"),
        "xlogdb_directory": str(backup / "wals"),
        "basebackups_directory": str(backup / "base"),
        "streaming_archiver": True,
        "archiver": True,
    }
    options.update(overrides)
    server = ServerConfig(**options)
    for path in (server.incoming_wals_directory, server.streaming_wals_directory):
        os.makedirs(path, exist_ok=True)
    return server


def archived_files(server: ServerConfig) -> dict[str, Path]:
    """Every regular non-dot file under wals/ (but the catalogue), by name."""
    found: dict[str, Path] = {}
    for root, _dirs, files in os.walk(server.wals_directory):
        for name in files:
            if name.startswith(".") or name.endswith("-xlog.db"):
                continue
            assert name not in found, f"{name} archived twice"
            found[name] = Path(root) / name
    return found


def catalogue_lines(server: ServerConfig) -> list[list[str]]:
    path = Path(server.xlogdb_path)
    return [line.split("\t") for line in path.read_text().splitlines()] if path.exists() else []


class Calls:
    """Counts the per-file system calls a piece of code makes."""

    NAMES = ("stat", "lstat", "open", "listdir", "rename", "unlink", "fsync")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        for name in self.NAMES:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        monkeypatch.setattr(builtins, "open", self._wrap("builtins.open", builtins.open))

    def _wrap(self, label: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[label] += 1
            return func(*args, **kwargs)

        return counted

    def total(self) -> int:
        return sum(self.counts.values())


# ------------------------------------------------------------------ real clusters


def copy_closed_segments(pg: Any, count: int, dest: Path) -> list[str]:
    """Switch WAL ``count`` times, copying each closed segment from pg_wal into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    pg.sql("CREATE TABLE IF NOT EXISTS supply (i int, pad text)")
    names = []
    for i in range(count):
        pg.sql(f"INSERT INTO supply SELECT g, md5(g::text) FROM generate_series(1, {50 + i}) g")
        name = pg.switch_wal()
        shutil.copyfile(pg.wal_dir / name, dest / name)
        names.append(name)
    return names


@contextmanager
def receivewal(pg: Any, directory: Path, slot: str = "supply") -> Iterator[subprocess.Popen[str]]:
    """Run pg_receivewal on a fresh slot into ``directory``; SIGINT it on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    pg.sql("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
    proc = subprocess.Popen(
        [
            f"{PG_BIN}/pg_receivewal",
            f"--dbname={pg.streaming_conninfo()} replication=true",
            f"--directory={directory}",
            f"--slot={slot}",
            "--no-loop",
            "--no-password",
            "--status-interval=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        stop_process(proc)


def stream_segments(pg: Any, directory: Path, count: int, timeout: float = 60) -> list[str]:
    """Produce ``count`` closed segments streamed by a real pg_receivewal into ``directory``.

    On return pg_receivewal has stopped and left the ``.partial`` of the next segment.
    """
    with receivewal(pg, directory) as proc:
        deadline = time.monotonic() + timeout
        while not any(n.endswith(".partial") for n in os.listdir(directory)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"pg_receivewal did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        pg.sql("CREATE TABLE IF NOT EXISTS supply (i int, pad text)")
        names = []
        for i in range(count):
            pg.sql(f"INSERT INTO supply SELECT g, md5(g::text) FROM generate_series(1, {50 + i}) g")
            names.append(pg.switch_wal())
        pg.sql("INSERT INTO supply VALUES (0, 'open the next segment')")

        def done() -> bool:
            present = os.listdir(directory)
            partials = [n for n in present if n.endswith(".partial") and n > max(names)]
            return set(names) <= set(present) and bool(partials)

        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"segments not streamed: {sorted(os.listdir(directory))}")
            time.sleep(0.05)
    return names
