"""check and status facing unreadable directories, full filesystems and slow checks: each line
reports its own failure (what, which path, the OS reason) and the others still run."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from walsupply import make_server
from walvault.archive.catalogue import rebuild
from walvault.archive.layout import archived_path
from walvault.checks import CheckResult, space
from walvault.checks.runner import run_checks
from walvault.cli import check as check_cli
from walvault.cli.status import collect
from walvault.config import ServerConfig
from walvault.supervise.cron import prepare_directories

MiB = 1 << 20


def seg(n: int) -> str:
    return f"00000001{0:08X}{n:08X}"


def archive(server: ServerConfig, count: int) -> None:
    for n in range(1, count + 1):
        path = archived_path(server, seg(n))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_bytes(b"x")
    rebuild(server)


@pytest.fixture
def chmod_back() -> Iterator[list[Path]]:
    """Paths whose mode a test took away: given back so that tmp_path can be removed."""
    taken: list[Path] = []
    yield taken
    for path in taken:
        path.chmod(0o700)


def deny(path: str, taken: list[Path]) -> None:
    Path(path).chmod(0)
    taken.append(Path(path))


def by_name(results: list[CheckResult]) -> dict[str, tuple[bool, str]]:
    return {r.name: (r.ok, r.hint) for r in results}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
@pytest.mark.parametrize("what", ["streaming", "hash directory", "catalogue"])
def test_an_unreadable_path_fails_its_lines_only(
    tmp_path: Path, chmod_back: list[Path], what: str
) -> None:
    """Before: check and status died with 'unexpected PermissionError', or check said every
    line OK while no archived WAL could be read."""
    server = make_server(tmp_path, max_incoming_wals_queue=10, last_wal_maximum_age=3600)
    prepare_directories(server)
    archive(server, 3)
    healthy = by_name(run_checks(server))
    path = {
        "streaming": server.streaming_wals_directory,
        "hash directory": os.path.join(server.wals_directory, "0000000100000000"),
        "catalogue": server.xlogdb_path,
    }[what]
    deny(path, chmod_back)
    found = by_name(run_checks(server))
    assert set(healthy) - set(found) <= {"wal size"}, set(healthy) - set(found)
    failed = {name: hint for name, (ok, hint) in found.items() if not ok}
    expected = {
        "streaming": {"streaming WALs directory", "directories", "free space"},
        "hash directory": {"directories", "wal maximum age", "WAL catalogue"},
        "catalogue": {"WAL archive", "WAL catalogue"},
    }[what]
    ignored = {"PostgreSQL", "PostgreSQL streaming", "wal_level", "replication slot"}
    ignored |= {"pg_receivexlog", "pg_receivexlog compatible", "receive-wal running"}
    ignored |= {"streaming lag", "systemid coherence"}
    for name in expected & set(failed):
        assert path in failed[name] and "Permission denied" in failed[name], (name, failed)
    assert expected - {"free space"} <= set(failed), failed
    assert set(failed) - ignored <= expected, failed
    rows = {description: value for _key, description, value in collect(server)}
    assert "Recorded WAL gaps" in rows and "Files in errors/" in rows  # status went on
    if what == "catalogue":
        assert (
            "Permission denied" in rows["WAL archive"] and server.xlogdb_path in rows["WAL archive"]
        )
    if what == "streaming":
        assert "Permission denied" in rows["Waiting in streaming/"]


def test_free_space_figures_and_threshold(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    prepare_directories(server)
    result = space.check_free_space(server)
    free = space.measure(str(tmp_path)).free
    assert result.ok and result.hint.endswith("min_free_space 64.0 MiB")
    assert "free for home, wals, streaming, incoming (" in result.hint
    assert result.perfdata[0][0] == "free" and abs(result.perfdata[0][1] - free) < 64 * MiB
    full = server._replace(min_free_space=free + (1 << 40))
    result = space.check_free_space(full)
    assert not result.ok
    assert (
        "home, wals, streaming, incoming" in result.hint and "below min_free_space" in result.hint
    )
    assert "ENOSPC" in result.hint
    assert space.check_free_space(server._replace(min_free_space=0)).hint.endswith(
        "min_free_space off"
    )


def test_free_space_of_a_directory_cron_has_not_made_yet(tmp_path: Path) -> None:
    server = make_server(tmp_path, wals_directory=str(tmp_path / "not" / "yet"))
    assert space.check_free_space(server).ok


def test_free_space_fails_with_no_inode_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(tmp_path)
    real = os.statvfs

    class NoInodes:
        def __init__(self, path: str) -> None:
            self.stats = real(path)

        def __getattr__(self, name: str) -> int:
            if name == "f_favail":
                return 3
            return int(getattr(self.stats, name))

    monkeypatch.setattr(os, "statvfs", NoInodes)
    result = space.check_free_space(server)
    assert not result.ok and "3 inodes left" in result.hint


def test_a_timeout_keeps_the_lines_done_and_names_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 'FAILED (CheckTimeout)' (a query's 'except Exception' caught the alarm) and no
    'check timeout' line."""
    server = make_server(tmp_path)

    def slow_checks(_server: ServerConfig) -> Iterator[CheckResult]:
        yield CheckResult("first line", True)
        try:
            time.sleep(5)
        except Exception as exc:  # what a psycopg call inside a check does
            yield CheckResult("PostgreSQL", False, type(exc).__name__)
        yield CheckResult("never reached", True)

    monkeypatch.setattr("walvault.checks.runner.iter_checks", slow_checks)
    started = time.monotonic()
    results = check_cli.results_for(server, 1)
    assert time.monotonic() - started < 4
    assert [r.name for r in results] == ["first line", "check timeout"]
    assert not results[-1].ok and "timed out after 1 s" in results[-1].hint


def test_a_hanging_postgresql_connection_ends_in_a_check_timeout_line(tmp_path: Path) -> None:
    """A real psycopg connection to a listener that never answers: the alarm must end the
    checks with 'check timeout', not be swallowed by the connection's error handling (which
    printed 'FAILED (CheckTimeout)')."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    conninfo = f"host=127.0.0.1 port={port} user=x dbname=y sslmode=disable"
    server = make_server(tmp_path, conninfo=conninfo, streaming_conninfo=conninfo)
    try:
        started = time.monotonic()
        results = check_cli.results_for(server, 2)
        assert time.monotonic() - started < 10
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    assert results[-1].name == "check timeout" and not results[-1].ok
    assert all("Timeout" not in r.hint for r in results), results


def test_queue_lines_keep_barmans_rules(tmp_path: Path) -> None:
    from walvault.checks.local import check_queues

    server = make_server(tmp_path, max_incoming_wals_queue=1)
    incoming, streaming = (
        Path(server.incoming_wals_directory),
        Path(server.streaming_wals_directory),
    )
    for directory in (incoming, streaming):
        (directory / f"{seg(1)}.partial").write_bytes(b"")
        (directory / seg(2)).write_bytes(b"")
    by = {r.name: (r.ok, r.hint) for r in check_queues(server)}
    assert by == {
        "incoming WALs directory": (False, "there are too many WALs in queue: 2, max 1"),
        "streaming WALs directory": (True, ""),  # the live .partial is not waiting
    }
    off = server._replace(archiver=False, streaming_archiver=False)
    (incoming / seg(2)).unlink()
    (streaming / seg(2)).unlink()
    by = {r.name: (r.ok, r.hint) for r in check_queues(off)}
    assert by == {  # a .partial in incoming/ may wait; nothing may in streaming/
        "empty streaming directory": (
            False,
            f"'{streaming}' must be empty when streaming_archiver=off",
        )
    }
    assert check_queues(server._replace(max_incoming_wals_queue=None)) == []
