"""The prefetch spool: directory safety, validation of spooled segments, the prefetcher loop."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakewal import (
    MIB,
    OTHER_SYSID,
    SYSID,
    archive_path,
    fake_segment,
    restore_in_a_fresh_interpreter,
    write_config,
)
from walvault.clients import agent
from walvault.clients.spool import LOCK, Spool, SpoolError, SpoolState, spool_key
from walvault.clients.transport import LocalSource
from walvault.config import load_config
from walvault.wal.names import Segment

NAME = "000000010000000000000005"
NEXT = "000000010000000000000006"
STATE = SpoolState(NAME, SYSID, MIB)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(str(tmp_path / "spool"), spool_key("pg", "local"))


@pytest.fixture
def session(spool: Spool) -> Iterator[int]:
    """Pretend a prefetcher is running: hold the lock; yields the session start (ns)."""
    fd = os.open(os.path.join(spool.path, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"1\n")
    spool.write_state(STATE)
    yield os.fstat(fd).st_mtime_ns
    os.close(fd)


def put(spool: Spool, name: str, data: bytes) -> Path:
    path = Path(spool.file(name))
    path.write_bytes(data)
    return path


def test_directories_are_private(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    spool = Spool(str(root), "pg@local")
    assert (root.stat().st_mode & 0o777) == 0o700
    assert (Path(spool.path).stat().st_mode & 0o777) == 0o700


def test_symlink_spool_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SpoolError, match="symbolic link"):
        Spool(str(tmp_path / "link"), "pg@local")
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match="not a directory"):
        Spool(str(tmp_path / "file"), "pg@local")


@pytest.mark.skipif(os.geteuid() == 0, reason="root owns everything")
def test_someone_elses_spool_is_refused() -> None:
    with pytest.raises(SpoolError, match="belongs to uid 0"):
        Spool("/tmp", "pg@local")  # /tmp belongs to root


def test_key_is_reduced_to_safe_characters() -> None:
    assert spool_key("pg", "barman@backup.example:22") == "pg@barman@backup.example_22"
    assert spool_key("..", "x/../y") == "@x_.._y"


def test_state_round_trip(spool: Spool) -> None:
    assert spool.read_state() is None
    spool.write_state(STATE)
    assert spool.read_state() == STATE
    Path(spool.path, ".state").write_text("garbage")
    assert spool.read_state() is None


def test_nothing_is_served_without_a_live_session(spool: Spool, tmp_path: Path) -> None:
    spool.write_state(STATE)
    put(spool, NEXT, fake_segment(NEXT))
    assert spool.take(NEXT, str(tmp_path / "dest")) is None
    assert not (tmp_path / "dest").exists()


def test_valid_segment_is_delivered(spool: Spool, session: int, tmp_path: Path) -> None:
    data = fake_segment(NEXT)
    put(spool, NEXT, data)
    dest = tmp_path / "dest"
    assert spool.take(NEXT, str(dest)) == STATE
    assert dest.read_bytes() == data
    assert not os.path.exists(spool.file(NEXT))
    assert spool.take(NEXT, str(dest)) is None  # consumed


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (fake_segment(NEXT, sysid=OTHER_SYSID), "system identifier"),
        (fake_segment(NEXT, pageaddr=0x5000000), "page address"),
        (fake_segment(NEXT, header_tli=2), "timeline 2"),
        (fake_segment(NEXT)[: MIB // 2], "size"),
        (fake_segment(NEXT, seg_size=2 * MIB), "size"),
        (bytes(MIB), "all zeros"),
    ],
    ids=["other-cluster", "recycled", "other-timeline", "short", "other-size", "zeros"],
)
def test_stale_or_broken_segment_is_discarded(
    spool: Spool,
    session: int,
    tmp_path: Path,
    data: bytes,
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    put(spool, NEXT, data)
    assert spool.take(NEXT, str(tmp_path / "dest")) is None
    assert not (tmp_path / "dest").exists()
    assert not os.path.exists(spool.file(NEXT))
    assert why in capsys.readouterr().err


def test_copy_from_before_the_session_is_discarded(
    spool: Spool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = put(spool, NEXT, fake_segment(NEXT))
    old = time.time() - 60
    os.utime(path, (old, old))
    fd = os.open(os.path.join(spool.path, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"1\n")
        spool.write_state(STATE)
        assert spool.take(NEXT, str(tmp_path / "dest")) is None
    finally:
        os.close(fd)
    assert "older copy" in capsys.readouterr().err


def test_record_reads_the_facts_of_a_fetched_segment(spool: Spool, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.write_bytes(fake_segment(NAME, seg_size=2 * MIB))
    assert spool.record(NAME, str(dest)) == SpoolState(NAME, SYSID, 2 * MIB)
    dest.write_bytes(fake_segment(NAME)[:1000])
    assert spool.record(NAME, str(dest)) is None


# ------------------------------------------------------------------ the prefetcher


@pytest.fixture
def local(tmp_path: Path) -> tuple[LocalSource, list[str]]:
    """A local source over an archive of 12 consecutive segments; returns it and the names."""
    conf = write_config(tmp_path / "home")
    server = load_config(str(conf)).servers["pg"]
    names = []
    segment = Segment.from_name(NAME)
    for _ in range(12):
        archive_path(server, segment.name).write_bytes(fake_segment(segment.name))
        names.append(segment.name)
        segment = segment.next(MIB)
    return LocalSource(str(conf)), names


def spooled(spool: Spool) -> list[str]:
    return sorted(
        n
        for n in os.listdir(spool.path)
        if not n.startswith(".") and n not in ("agent.log", "agent.sock")
    )


def test_prefetcher_keeps_the_window_full_and_drops_what_was_passed(
    spool: Spool, local: tuple[LocalSource, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, names = local
    monkeypatch.setattr(agent, "IDLE_EXIT", 1.0)
    put(spool, names[9], fake_segment(names[9]))  # a leftover: wiped when the session starts
    spool.write_state(SpoolState(names[0], SYSID, MIB))
    worker = agent.Agent(spool, source, "pg", 3)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while spooled(spool) != names[1:4] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert spooled(spool) == names[1:4]
        assert spool.session_start() is not None
        spool.write_state(SpoolState(names[2], SYSID, MIB))  # recovery moved on
        # names[1] was passed and goes; names[2] (the one being restored) stays for the client
        while spooled(spool) != names[2:6] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert spooled(spool) == names[2:6]
        spool.write_state(SpoolState(names[10], SYSID, MIB))  # the end of the archive
        while spooled(spool) != names[11:] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert spooled(spool) == names[11:]
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive()  # idle: stopped by itself
    assert spooled(spool) == []  # and took its unconsumed files with it
    assert spool.session_start() is None


def test_prefetcher_started_by_the_client_serves_later_calls(
    tmp_path: Path, local: tuple[LocalSource, list[str]]
) -> None:
    """Real processes: the first call forks the prefetcher; later calls come from the spool."""
    source, names = local
    conf = str(source.config)
    spool_dir = tmp_path / "spool"
    dest = tmp_path / "RECOVERYXLOG"
    client = [sys.executable, "-m", "walvault.clients.walrestore", "-p", "3"]
    client += ["--spool-dir", str(spool_dir), "-c", conf, "local", "pg"]
    assert subprocess.run([*client, names[0], str(dest)]).returncode == 0
    spool = Spool(str(spool_dir), spool_key("pg", "local", conf))
    try:
        deadline = time.monotonic() + 20
        while spooled(spool) != names[1:4] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert spooled(spool) == names[1:4]
        server = load_config(conf).servers["pg"]
        expected = archive_path(server, names[1]).read_bytes()
        archive_path(server, names[1]).unlink()  # only the spool has it now
        assert subprocess.run([*client, names[1], str(dest)]).returncode == 0
        assert dest.read_bytes() == expected
        # a stale copy from another cluster planted in the live spool is not served
        planted = Path(spool.path, ".planted")
        planted.write_bytes(fake_segment(names[2], sysid=OTHER_SYSID))
        os.replace(planted, spool.file(names[2]))
        result = subprocess.run([*client, names[2], str(dest)], capture_output=True, text=True)
        assert result.returncode == 0
        assert "discarding spooled" in result.stderr and "system identifier" in result.stderr
        assert dest.read_bytes() == archive_path(server, names[2]).read_bytes()
    finally:
        pid = int(Path(spool.path, LOCK).read_text() or 0)
        if pid:
            os.kill(pid, 15)


def test_a_spool_hit_imports_nothing_heavy(spool: Spool, session: int, tmp_path: Path) -> None:
    """The README's start-up claim: a restore served from the spool loads no configuration,
    no archive code, and none of re, typing, dataclasses or enum."""
    put(spool, NEXT, fake_segment(NEXT))
    spool_dir = os.path.dirname(spool.path)
    dest = tmp_path / "dest"
    argv = ["-p", "4", "--spool-dir", spool_dir, "local", "pg"]
    status, modules = restore_in_a_fresh_interpreter([*argv, NEXT, str(dest)])
    assert status == 0 and dest.read_bytes() == fake_segment(NEXT)
    heavy = {"re", "typing", "dataclasses", "enum", "configparser", "argparse", "zstandard"}
    assert not modules & heavy, modules & heavy
    assert not any(m.startswith(("walvault.config", "walvault.archive")) for m in modules)
