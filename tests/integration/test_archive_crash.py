"""archive-wal killed with SIGKILL at random instants: the next run always finishes the job."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from walsupply import archived_files, catalogue_lines, copy_closed_segments
from walvault.archive.archiver import archive_wal
from walvault.archive.layout import archive_journal_path
from walvault.compression import compress_bytes, decompress_bytes, identify
from walvault.config import ServerConfig
from wvharness import streaming_server

KILLS = 50
SEGMENTS = 20
COMPRESSIONS = ("zstd", None, "gzip")


def _stage(server: ServerConfig, originals: dict[str, bytes], live: str) -> None:
    """A fresh server directory: half the backlog streamed, half shipped (some gzipped)."""
    shutil.rmtree(server.backup_directory, ignore_errors=True)
    streaming = Path(server.streaming_wals_directory)
    incoming = Path(server.incoming_wals_directory)
    streaming.mkdir(parents=True)
    incoming.mkdir(parents=True)
    for i, (name, data) in enumerate(sorted(originals.items())):
        if i < SEGMENTS // 2:
            (incoming / name).write_bytes(compress_bytes("gzip", data, 1) if i % 3 == 0 else data)
        else:
            (streaming / name).write_bytes(data)
    (streaming / live).write_bytes(b"")


def _start_run(
    wv: Any, options: dict[str, Any], algo: str | None, originals: dict[str, bytes], live: str
) -> tuple[ServerConfig, subprocess.Popen[str]]:
    """Stage a fresh backlog and start archive-wal with ``algo``, holding its lock."""
    wv.write({"pg": {**options, "compression": algo or "none"}})
    server = wv.server()
    _stage(server, originals, live)
    return server, wv.spawn_locked("archive-wal", server)


def _check(server: ServerConfig, originals: dict[str, bytes], live: str, algo: str | None) -> None:
    files = archived_files(server)
    assert set(files) == set(originals)
    for name, data in originals.items():
        stored = files[name].read_bytes()
        found = identify(stored[:8])
        assert found in (algo, "gzip"), f"{name} is {found}"  # gzip: as a client sent it
        assert decompress_bytes(found, stored) == data, name
    names = [line[0] for line in catalogue_lines(server)]
    assert sorted(names) == sorted(originals), "catalogue lost or doubled a line"
    assert os.listdir(server.streaming_wals_directory) == [live]
    assert os.listdir(server.incoming_wals_directory) == []
    assert not os.path.exists(server.errors_directory) or os.listdir(server.errors_directory) == []
    assert not os.path.exists(archive_journal_path(server))
    temps = [
        os.path.join(root, n)
        for top in (server.wals_directory, server.backup_directory)
        for root, _, fs in os.walk(top)
        for n in fs
        if n.startswith(".")
    ]
    assert temps == []


def _state(server: ServerConfig, originals: dict[str, bytes]) -> str:
    """Where the killed run stopped, roughly ("mid-commit": files in the archive whose
    catalogue line is not written yet, their sources still staged)."""
    staged = set(os.listdir(server.incoming_wals_directory))
    staged |= set(os.listdir(server.streaming_wals_directory))
    archived = set(archived_files(server))
    if not archived:
        return "untouched"
    catalogued = {line[0] for line in catalogue_lines(server)}
    if not staged & set(originals) and catalogued == set(originals):
        return "done"
    if archived - catalogued and archived & staged:
        return "mid-commit"
    return "part archived"


def test_sigkill_at_random_instants(pg: Any, walvault_factory: Any, tmp_path: Path) -> None:
    names = copy_closed_segments(pg, SEGMENTS, tmp_path / "closed")
    originals = {n: (tmp_path / "closed" / n).read_bytes() for n in names}
    live = f"{pg.switch_wal()[:16]}000000FF.partial"  # sorts after every staged segment
    options = streaming_server(pg, archiver="on")
    wv = walvault_factory({"pg": options})
    rng = random.Random(int(os.environ.get("WALVAULT_CRASH_SEED", "4")))
    # how long a run works once it holds its lock (until its batch is committed)
    window: dict[str | None, float] = {}
    for algo in COMPRESSIONS:
        server, proc = _start_run(wv, options, algo, originals, live)
        start = time.monotonic()
        while _state(server, originals) != "done":
            time.sleep(0.0005)
        window[algo] = time.monotonic() - start
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        _check(server, originals, live, algo)
    interrupted = trials = 0
    states: Counter[str] = Counter()
    while interrupted < KILLS:
        trials += 1
        assert trials < KILLS * 4, f"only {interrupted} of {trials} kills interrupted the work"
        algo = COMPRESSIONS[trials % len(COMPRESSIONS)]
        server, proc = _start_run(wv, options, algo, originals, live)
        time.sleep(rng.uniform(0, window[algo] * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read() if proc.stderr else ""
        state = _state(server, originals)
        states[state] += 1
        interrupted += state != "done"
        result = archive_wal(server, lambda _line: None)
        assert result.exit_code == 0 and not result.failed, result
        _check(server, originals, live, algo)
    print(f"{trials} kills; where they left the work: {dict(states)}; windows: {window}")
    assert states["mid-commit"] and states["untouched"] and states["part archived"], states


def test_two_kills_in_a_row(pg: Any, walvault_factory: Any, tmp_path: Path) -> None:
    """Two kills in a row on one backlog (xz: slow enough to be caught mid-batch)."""
    names = copy_closed_segments(pg, 8, tmp_path / "closed")
    originals = {n: (tmp_path / "closed" / n).read_bytes() for n in names}
    live = f"{pg.switch_wal()[:16]}000000FF.partial"
    wv = walvault_factory({"pg": streaming_server(pg, archiver="on", compression="xz")})
    server = wv.server()
    _stage(server, originals, live)
    for delay in (0.05, 0.02):
        proc = wv.spawn_locked("archive-wal", server)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    result = archive_wal(server, lambda _line: None)
    assert result.exit_code == 0
    _check(server, originals, live, "xz")
