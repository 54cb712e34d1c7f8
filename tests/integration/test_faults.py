"""Faults an operator meets, on a real cluster streaming into walvault: a full filesystem and
unreadable directories.  While it lasts, every command says so in one line (no traceback);
once it is over, cron heals by itself and every segment an independent pg_receivewal (the
oracle: its own slot, its own directory on another disk) received is archived byte for byte.

The full filesystem is a real one: a small tmpfs that scripts/test.sh mounts as root for the
test user (``WALVAULT_TEST_FULL_FS``).  Where none can be mounted the test is skipped, saying
so; the unit tests inject the same errors (ENOSPC from writes and the PID write of locks).
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from walsupply import receivewal
from wvharness import Walvault, segment_names, slot_active, streaming_server, wait_for

FULL_FS = os.environ.get("WALVAULT_TEST_FULL_FS")


def check_lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    lines = {}
    for line in result.stdout.splitlines()[1:]:
        if line.startswith("\t") and not line.startswith("\t\t"):
            name, _, rest = line.strip().partition(": ")
            lines[name] = rest
    return lines


def one_line_errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The stderr lines, after checking that none is part of a traceback."""
    text = result.stderr
    assert "Traceback" not in text and "Logging error" not in text, text
    lines = text.splitlines()
    assert all(line.startswith(("ERROR: ", "WARNING: ")) for line in lines), lines
    return lines


def archived(server: Any) -> dict[str, bytes]:
    """Every archived segment, decompressed, by name."""
    found = {}
    for directory in Path(server.wals_directory).iterdir():
        if directory.is_dir():
            for path in directory.iterdir():
                if len(path.name) == 24:
                    found[path.name] = gzip.decompress(path.read_bytes())
    return found


def assert_oracle_archived(wv: Walvault, pg: Any, oracle: Path, first: str) -> None:
    """Every complete segment the oracle holds from ``first`` on, archived byte for byte."""
    pg.sql("INSERT INTO t VALUES (0, 'push')")
    closed = pg.switch_wal()
    server = wv.server()

    def done() -> bool:
        wv.run("cron")
        wv.run("archive-wal", "pg")
        wanted = [n for n in segment_names(oracle) if first <= n <= closed]
        have = archived(server)
        return closed in segment_names(oracle) and all(n in have for n in wanted)

    wait_for(done, timeout=120, what=f"every segment up to {closed} archived")
    have = archived(server)
    wanted = [n for n in segment_names(oracle) if first <= n <= closed]
    assert wanted and wanted[-1] == closed
    for name in wanted:
        assert have[name] == (oracle / name).read_bytes(), name
    assert not Path(server.backup_directory, "walvault-gaps.json").exists()


def write_wal(pg: Any, switches: int) -> list[str]:
    pg.sql("CREATE TABLE IF NOT EXISTS t (i int, pad text)")
    closed = []
    for _ in range(switches):
        pg.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 300) g")
        closed.append(pg.switch_wal())
    return closed


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to its last byte; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    if not FULL_FS:
        pytest.skip(
            "no small filesystem to fill: scripts/test.sh mounts a tmpfs as root and sets "
            "WALVAULT_TEST_FULL_FS (here it could not, or the tests run without it)"
        )
    root = Path(FULL_FS) / tmp_path.name
    root.mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def streaming(wv: Walvault, pg: Any) -> None:
    assert wv.run("cron").returncode == 0
    wait_for(lambda: slot_active(pg), what="receiver streaming")


def test_a_full_disk_says_so_in_one_line_and_heals(pg: Any, tmp_path: Path, full_fs: Path) -> None:
    oracle = tmp_path / "oracle"
    with receivewal(pg, oracle, slot="oracle"):
        options = streaming_server(pg, compression="gzip", min_free_space="8 MiB")
        wv = Walvault(full_fs / "wv", {"pg": options})
        try:
            streaming(wv, pg)
            first = write_wal(pg, 2)[0]
            wait_for(
                lambda: wv.run("archive-wal", "pg") and first in archived(wv.server()),
                what="archived",
            )
            assert "free space: OK" in wv.run("check", "pg").stdout
            filler = fill(full_fs)
            write_wal(pg, 4)  # pg_receivewal cannot start the next segment's .partial
            wait_for(lambda: not slot_active(pg), what="the receiver to stop", timeout=60)

            check = wv.run("check", "pg")
            print(f"full disk, walvault check:\n{check.stdout}{check.stderr}")
            lines = check_lines(check)
            assert check.returncode == 1
            assert lines["free space"].startswith("FAILED (home, wals, streaming, incoming (")
            assert "only 0 B free, below min_free_space 8.0 MiB" in lines["free space"]
            assert lines["receive-wal running"].startswith("FAILED")
            assert "No space left on device" in lines["receive-wal running"]
            one_line_errors(check)
            for args in (("archive-wal", "pg"), ("-q", "cron"), ("receive-wal", "pg")):
                result = wv.run(*args, timeout=90)
                print(f"full disk, walvault {' '.join(args)}: {result.stderr}")
                errors = one_line_errors(result)
                if args[-1] == "cron" and result.returncode == 0:
                    # the receiver's record was saved in place: cron reports the receiver's
                    # failures through its back-off, which does not change its exit code
                    continue
                assert result.returncode == 1, (args, result.stdout, result.stderr)
                assert any("No space left on device" in e and str(full_fs) in e for e in errors), (
                    args,
                    errors,
                )
            status = wv.run("status", "pg")
            assert status.returncode == 0 and "receive-wal: NOT RUNNING" in status.stdout
            one_line_errors(status)

            filler.unlink()  # space returns: cron alone heals
            wait_for(
                lambda: wv.run("cron").returncode == 0 and slot_active(pg),
                what="cron restarting the receiver",
                timeout=120,
            )
            assert_oracle_archived(wv, pg, oracle, first)
            after = check_lines(wv.run("check", "pg"))
            for name in ("free space", "WAL catalogue", "state files", "receive-wal running"):
                assert after[name].startswith("OK"), (name, after[name])
        finally:
            wv.run("receive-wal", "--stop", "pg")
            wv.cleanup()


def test_unreadable_directories_fail_their_lines_and_heal(
    pg: Any, tmp_path: Path, walvault_factory: Any
) -> None:
    oracle = tmp_path / "oracle"
    with receivewal(pg, oracle, slot="oracle"):
        wv = walvault_factory({"pg": streaming_server(pg, compression="gzip")})
        try:
            streaming(wv, pg)
            first = write_wal(pg, 2)[0]
            wait_for(
                lambda: wv.run("archive-wal", "pg") and first in archived(wv.server()),
                what="archived",
            )
            server = wv.server()
            hash_dir = Path(server.wals_directory, first[:16])
            catalogue = Path(server.xlogdb_path)
            for path in (hash_dir, catalogue):
                path.chmod(0)
            try:
                write_wal(pg, 2)
                time.sleep(1)
                check = wv.run("check", "pg")
                print(f"unreadable directories, walvault check:\n{check.stdout}{check.stderr}")
                lines = check_lines(check)
                one_line_errors(check)
                assert check.returncode == 1
                for name, path in (
                    ("directories", hash_dir),
                    ("WAL archive", catalogue),
                    ("WAL catalogue", catalogue),
                ):
                    assert lines[name].startswith("FAILED") and str(path) in lines[name], name
                    assert "Permission denied" in lines[name], name
                for name in ("PostgreSQL", "receive-wal running", "streaming lag", "WAL gaps"):
                    assert lines[name].startswith("OK"), (name, lines[name])
                status = wv.run("status", "pg")
                assert status.returncode == 0, status.stderr
                assert f"WAL archive: cannot read: {catalogue}: Permission denied" in status.stdout
                assert "receive-wal: running" in status.stdout
                rebuild = wv.run("rebuild-xlogdb", "pg")
                assert rebuild.returncode == 1
                assert one_line_errors(rebuild) == [
                    f"ERROR: cannot list {hash_dir}: Permission denied (EACCES)"
                ]
                archive = wv.run("archive-wal", "pg")
                assert archive.returncode == 1 and "Permission denied" in archive.stderr
                one_line_errors(archive)
            finally:
                hash_dir.chmod(0o700)
                catalogue.chmod(0o600)
            assert_oracle_archived(wv, pg, oracle, first)
            assert check_lines(wv.run("check", "pg"))["WAL catalogue"].startswith("OK")
        finally:
            wv.run("receive-wal", "--stop", "pg")
