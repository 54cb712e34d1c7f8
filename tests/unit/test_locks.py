"""Tests for walvault.locks against real lock holders in other processes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from walvault import locks
from walvault.errors import LockBusy

# Takes the lock the way Barman does (flock, then "<pid>\n"), reports, then sleeps.
BARMAN_STYLE_HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
record = ("%d\n" % os.getpid()).encode()
os.write(fd, record)
os.ftruncate(fd, len(record))
print("ready", flush=True)
time.sleep(120)
"""
WALVAULT_HOLDER = r"""
import signal, sys, time
from walvault.locks import ServerLock
if sys.argv[4] == "ignore-int":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
with ServerLock(sys.argv[1], sys.argv[2], sys.argv[3]):
    print("ready", flush=True)
    time.sleep(120)
"""

Spawner = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    procs: list[subprocess.Popen[str]] = []

    def start(script: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(  # SIGINT as in a foreground start, whatever ran pytest
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def hold_barman_style(spawn: Spawner, lock_dir: Path, task: str) -> subprocess.Popen[str]:
    return spawn(BARMAN_STYLE_HOLDER, str(locks.lock_path(lock_dir, "main", task)))


def test_lock_path_names() -> None:
    assert locks.lock_path("/l", "main", "archive-wal") == Path("/l/.main-archive-wal.lock")
    assert locks.lock_path("/l", "pg", "20240102T030405").name == ".pg-20240102T030405.lock"
    for server, task in (("", "cron"), ("a/b", "cron"), ("main", ".."), ("main", "")):
        with pytest.raises(ValueError, match="invalid"):
            locks.lock_path("/l", server, task)


def test_acquire_writes_pid_and_keeps_file(tmp_path: Path) -> None:
    lock = locks.ServerLock(tmp_path, "main", "cron")
    with lock as held:
        assert held is lock and lock.held
        assert lock.path == tmp_path / ".main-cron.lock"
        assert lock.path.read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
        with pytest.raises(RuntimeError, match="already held"):
            lock.acquire()
    assert not lock.held
    assert lock.path.exists()
    lock.release()  # idempotent


def test_pid_record_is_truncated(tmp_path: Path) -> None:
    path = locks.lock_path(tmp_path, "main", "backup")
    path.write_text("123456789012\nstale\n")
    with locks.ServerLock(tmp_path, "main", "backup"):
        assert locks.read_lock_pid(path) == os.getpid()
        assert path.read_text() == f"{os.getpid()}\n"


def test_same_process_second_lock_is_busy(tmp_path: Path) -> None:
    with locks.ServerLock(tmp_path, "main", "archive-wal"):
        with pytest.raises(LockBusy, match=f"pid {os.getpid()}"):
            locks.ServerLock(tmp_path, "main", "archive-wal").acquire()
        assert locks.lock_holder(tmp_path, "main", "archive-wal") == os.getpid()
        with locks.ServerLock(tmp_path, "other", "archive-wal"):
            pass
    assert locks.lock_holder(tmp_path, "main", "archive-wal") is None


@pytest.mark.parametrize("task", ["receive-wal", "archive-wal", "cron", "backup"])
def test_lock_held_by_barman_style_process(spawn: Spawner, tmp_path: Path, task: str) -> None:
    proc = hold_barman_style(spawn, tmp_path, task)
    with pytest.raises(LockBusy, match=f"another {task} process \\(pid {proc.pid}\\)") as info:
        locks.ServerLock(tmp_path, "main", task).acquire()
    assert info.value.exit_code == 1
    assert locks.lock_holder(tmp_path, "main", task) == proc.pid
    assert locks.list_processes(tmp_path, "main") == [(proc.pid, task)]
    assert locks.list_processes(tmp_path, "other") == []
    proc.kill()
    proc.wait()
    assert locks.lock_holder(tmp_path, "main", task) is None
    with locks.ServerLock(tmp_path, "main", task) as lock:
        assert locks.read_lock_pid(lock.path) == os.getpid()


def test_list_processes_and_terminate(spawn: Spawner, tmp_path: Path) -> None:
    receiver = spawn(WALVAULT_HOLDER, str(tmp_path), "main", "receive-wal", "-")
    cron = spawn(WALVAULT_HOLDER, str(tmp_path), "main", "cron", "-")
    locks.lock_path(tmp_path, "main", "archive-wal").write_text("999999\n")  # stale, unheld
    assert locks.list_processes(tmp_path, "main") == [
        (receiver.pid, "receive-wal"),
        (cron.pid, "cron"),
    ]
    assert locks.terminate(receiver.pid, timeout=10) is True
    assert receiver.wait(5) != 0  # interrupted by SIGINT
    assert locks.list_processes(tmp_path, "main") == [(cron.pid, "cron")]


def test_terminate_times_out_when_signal_ignored(spawn: Spawner, tmp_path: Path) -> None:
    proc = spawn(WALVAULT_HOLDER, str(tmp_path), "main", "receive-wal", "ignore-int")
    start = time.monotonic()
    assert locks.terminate(proc.pid, timeout=0.3) is False
    assert time.monotonic() - start >= 0.3
    assert locks.lock_holder(tmp_path, "main", "receive-wal") == proc.pid
    assert locks.terminate(proc.pid, sig=signal.SIGKILL, timeout=5) is True  # zombie = gone
    assert locks.terminate(proc.pid) is True  # already gone
    with pytest.raises(ValueError, match="refusing"):
        locks.terminate(0)


def test_xlogdb_lock_blocks_until_released(spawn: Spawner, tmp_path: Path) -> None:
    proc = hold_barman_style(spawn, tmp_path, "xlogdb")
    acquired = threading.Event()
    waiter = locks.ServerLock(tmp_path, "main", "xlogdb")

    def take() -> None:
        waiter.acquire()
        acquired.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert not acquired.wait(0.5)
    with pytest.raises(LockBusy, match=f"pid {proc.pid}"):
        locks.ServerLock(tmp_path, "main", "xlogdb", timeout=0.2).acquire()
    with pytest.raises(LockBusy):
        locks.ServerLock(tmp_path, "main", "xlogdb", wait=False).acquire()
    proc.kill()
    assert acquired.wait(10)
    thread.join()
    assert locks.read_lock_pid(waiter.path) == os.getpid()
    waiter.release()


def test_pid_alive(spawn: Spawner, tmp_path: Path) -> None:
    assert locks.pid_alive(os.getpid())
    assert not locks.pid_alive(0)
    assert not locks.pid_alive(-5)
    proc = hold_barman_style(spawn, tmp_path, "cron")
    assert locks.pid_alive(proc.pid)
    proc.kill()
    time.sleep(0.2)
    assert not locks.pid_alive(proc.pid)  # an unreaped zombie is not alive
    proc.wait()
    assert not locks.pid_alive(proc.pid)


def test_read_lock_pid(tmp_path: Path) -> None:
    path = tmp_path / ".x.lock"
    assert locks.read_lock_pid(path) is None
    for content, expected in (("42\n", 42), ("", None), ("nope\n", None), ("0\n", None)):
        path.write_text(content)
        assert locks.read_lock_pid(path) == expected
    assert locks.read_lock_pid(tmp_path) is None


def test_cleanup_lock_directory(spawn: Spawner, tmp_path: Path) -> None:
    proc = hold_barman_style(spawn, tmp_path, "receive-wal")
    free = [locks.lock_path(tmp_path, "main", t) for t in ("cron", "xlogdb", "20240101T000000")]
    for path in free:
        path.write_text("1\n")
    (tmp_path / "not-a-lock").write_text("")
    (tmp_path / ".dir.lock").mkdir()
    assert locks.cleanup_lock_directory(tmp_path) == sorted(free)
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == [".dir.lock", ".main-receive-wal.lock", "not-a-lock"]
    assert locks.lock_holder(tmp_path, "main", "receive-wal") == proc.pid


def test_acquire_retries_when_file_unlinked_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = locks._try_flock
    calls: list[int] = []

    def racing_flock(fd: int) -> bool:
        got = real(fd)
        if not calls:  # a cleanup removes the file right after we locked it
            locks.lock_path(tmp_path, "main", "cron").unlink()
        calls.append(fd)
        return got

    monkeypatch.setattr(locks, "_try_flock", racing_flock)
    with locks.ServerLock(tmp_path, "main", "cron") as lock:
        assert len(calls) == 2
        assert lock.path.read_text() == f"{os.getpid()}\n"
        monkeypatch.setattr(locks, "_try_flock", real)
        with pytest.raises(LockBusy):
            locks.ServerLock(tmp_path, "main", "cron").acquire()


def test_missing_lock_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot open lock file") as info:
        locks.ServerLock(tmp_path / "missing", "main", "cron").acquire()
    assert not isinstance(info.value, LockBusy)


def test_a_lock_is_taken_on_a_full_disk_and_its_holder_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the PID write's ENOSPC escaped from acquire() as a traceback.  Now the lock
    is held with an empty file, and a reader in another process finds the holder through
    /proc/locks (so a held lock never looks free: cron would start a second receiver)."""
    import errno

    path = locks.lock_path(tmp_path, "pg", locks.CRON)
    path.write_bytes(b"999999\n")  # an earlier holder's PID must not stay behind

    def full(_fd: int, _data: bytes, _offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with locks.ServerLock(tmp_path, "pg", locks.CRON) as lock:
        assert lock.held and path.read_bytes() == b""
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from walvault import locks; "
                "print(locks.lock_holder(sys.argv[1], 'pg', 'cron'))",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stdout.strip() == str(os.getpid())
        with pytest.raises(LockBusy, match=f"pid {os.getpid()}"):
            locks.ServerLock(tmp_path, "pg", locks.CRON).acquire()
    assert locks.lock_holder(tmp_path, "pg", locks.CRON) is None
