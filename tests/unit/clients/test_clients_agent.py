"""The restore agent and the thin client, as real processes (walvault-wal-restore calls).

The first call starts the agent (detached); later calls are answered over its socket with
the same exit contract as an in-process fetch (0, 1 only for "not in the archive", 200 for
everything else).  A call that reaches the agent imports none of walvault's configuration,
archive or codec code.  An agent killed mid-recovery does not break the recovery: the next
call fetches in-process or starts a new agent, and a call whose agent dies before answering
never reports a restore.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakewal import archive_path, fake_segment, restore_in_a_fresh_interpreter, write_config
from walvault.clients.agentclient import SOCKET
from walvault.clients.spool import LOCK, spool_key
from walvault.compression import compress_bytes
from walvault.config import load_config
from walvault.wal.names import Segment

BIN = Path(sys.executable).parent
NAMES = [Segment(1, 0, n).name for n in range(5, 12)]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[list[str], Path, Path]]:
    """An archive of zstd segments, a client command line, and the agent's spool directory;
    the agent is stopped at the end."""
    conf = write_config(tmp_path / "home")
    server = load_config(str(conf)).servers["pg"]
    for name in NAMES:
        archive_path(server, name).write_bytes(compress_bytes("zstd", fake_segment(name)))
    spool_root = tmp_path / "spool"
    client = [str(BIN / "walvault-wal-restore"), "--spool-dir", str(spool_root), "-c", str(conf)]
    spool = spool_root / spool_key("pg", "local", str(conf))
    yield [*client, "local", "pg"], spool, tmp_path
    _kill_agent(spool)


def _agent_pid(spool: Path) -> int | None:
    try:
        text = (spool / LOCK).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _kill_agent(spool: Path, sig: int = signal.SIGTERM) -> None:
    pid = _agent_pid(spool)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"agent {pid} did not stop")


def _restore(client: list[str], name: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*client, name, str(dest)], capture_output=True, text=True)


def test_the_agent_answers_with_the_same_contract(setup: tuple[list[str], Path, Path]) -> None:
    client, spool, tmp = setup
    dest = tmp / "RECOVERYXLOG"
    first = _restore(client, NAMES[0], dest)
    assert first.returncode == 0, first.stderr
    assert dest.read_bytes() == fake_segment(NAMES[0])
    assert (spool / SOCKET).exists() and _agent_pid(spool)
    second = _restore(client, NAMES[1], dest)
    assert second.returncode == 0 and dest.read_bytes() == fake_segment(NAMES[1])
    missing = Segment(1, 0, 0x40).name
    absent = _restore(client, missing, dest)
    assert absent.returncode == 1
    assert f"WAL file '{missing}' not found in server 'pg'" in absent.stderr
    server = load_config(client[client.index("-c") + 1]).servers["pg"]
    victim = archive_path(server, NAMES[2])
    victim.write_bytes(compress_bytes("zstd", fake_segment(NAMES[3])))  # another segment's
    wrong = _restore(client, NAMES[2], dest)
    assert wrong.returncode == 200
    assert "does not match the start" in wrong.stderr
    assert "agent.log" in os.listdir(spool)


def test_a_call_answered_by_the_agent_imports_nothing_heavy(
    setup: tuple[list[str], Path, Path],
) -> None:
    client, _spool, tmp = setup
    dest = tmp / "RECOVERYXLOG"
    assert _restore(client, NAMES[0], dest).returncode == 0  # starts the agent
    argv = [*client[1:], NAMES[1], str(dest)]
    status, modules = restore_in_a_fresh_interpreter(argv)
    assert status == 0 and dest.read_bytes() == fake_segment(NAMES[1])
    heavy = {"re", "typing", "dataclasses", "enum", "json", "configparser", "zstandard"}
    heavy |= {"argparse", "logging", "socket", "subprocess", "threading"}
    assert not modules & heavy, modules & heavy
    assert not any(
        m.startswith(("walvault.config", "walvault.archive", "walvault.storage")) for m in modules
    )


def test_a_killed_agent_does_not_break_the_recovery(setup: tuple[list[str], Path, Path]) -> None:
    client, spool, tmp = setup
    dest = tmp / "RECOVERYXLOG"
    assert _restore(client, NAMES[0], dest).returncode == 0
    pid = _agent_pid(spool)
    assert pid is not None
    _kill_agent(spool, signal.SIGKILL)
    _wait_gone(pid)
    after = _restore(client, NAMES[1], dest)  # a stale socket, no listener: a new agent
    assert after.returncode == 0, after.stderr
    assert dest.read_bytes() == fake_segment(NAMES[1])
    assert _agent_pid(spool) not in (None, pid)


def test_prefetch_through_the_agent_serves_the_next_calls_from_the_spool(
    setup: tuple[list[str], Path, Path],
) -> None:
    client, spool, tmp = setup
    prefetching = [client[0], "-p", "3", *client[1:]]
    dest = tmp / "RECOVERYXLOG"
    assert _restore(prefetching, NAMES[0], dest).returncode == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all((spool / n).exists() for n in NAMES[1:4]):
        time.sleep(0.02)
    assert all((spool / n).exists() for n in NAMES[1:4])
    for name in NAMES[1:4]:
        result = _restore(prefetching, name, dest)
        assert result.returncode == 0, result.stderr
        assert dest.read_bytes() == fake_segment(name)
        deadline = time.monotonic() + 5  # handed over (renamed), never kept
        while (spool / name).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not (spool / name).exists()


def test_a_spool_path_longer_than_a_socket_path_still_works(tmp_path: Path) -> None:
    """A Unix socket's path holds ~107 bytes: the agent binds and the client connects by the
    socket's relative name, from inside the spool directory."""
    conf = write_config(tmp_path / "home")
    server = load_config(str(conf)).servers["pg"]
    archive_path(server, NAMES[0]).write_bytes(compress_bytes("zstd", fake_segment(NAMES[0])))
    archive_path(server, NAMES[1]).write_bytes(compress_bytes("zstd", fake_segment(NAMES[1])))
    spool_root = tmp_path / ("deep-" * 12) / ("deeper-" * 6)
    spool_root.mkdir(parents=True)
    spool = spool_root / spool_key("pg", "local", str(conf))
    assert len(str(spool / SOCKET)) > 110
    client = [str(BIN / "walvault-wal-restore"), "--spool-dir", str(spool_root), "-c", str(conf)]
    dest = tmp_path / "RECOVERYXLOG"
    try:
        for name in NAMES[:2]:
            result = _restore([*client, "local", "pg"], name, dest)
            assert result.returncode == 0, result.stderr
            assert "did not answer" not in result.stderr
            assert dest.read_bytes() == fake_segment(name)
        assert "agent failed" not in (spool / "agent.log").read_text()
    finally:
        _kill_agent(spool)
