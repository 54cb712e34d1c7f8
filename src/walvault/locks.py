"""Barman-compatible per-server lock files (flock on ``.<server>-<task>.lock``) and processes.

Protocol, shared with Barman so both tools exclude each other: the file
``<lock_dir>/.<server>-<task>.lock`` is opened with ``O_CREAT|O_RDWR`` (mode 0600) and
``flock(LOCK_EX)``-ed, non-blocking except for ``xlogdb``; the holder then writes
``"<pid>\\n"`` and truncates.  Closing the descriptor (or dying) releases the lock; the
file is never deleted on release.

Caveats:

* Probing a lock (:func:`lock_holder`, :func:`list_processes`) takes it for an instant
  when it is free, so a concurrent non-blocking acquirer may fail spuriously then.
* :func:`cleanup_lock_directory` unlinks lock files while holding their lock.  A process
  that opened the old file just before the unlink could then lock the orphaned inode while
  a newcomer locks a fresh file at the same path.  :meth:`ServerLock.acquire` closes that
  window by checking, after ``flock``, that the path still names the locked inode (and
  retrying otherwise); Barman does not, so a Barman process sharing the directory keeps
  its (tiny) window: clean up only when the server is idle, as Barman's cron does.
* The descriptor is not inherited across ``exec``; a plain ``fork`` shares the lock.
* Taking a lock needs no free space: opening an existing lock file and ``flock`` allocate
  nothing.  Writing the PID may fail on a full disk (ENOSPC); the lock is then kept, with
  an empty file, and readers find the holder's PID in ``/proc/locks`` instead
  (:func:`flock_holder_pid`), so a full disk never makes a held lock look free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path
from types import TracebackType

from walvault.errors import LockBusy, WalvaultError

CRON = "cron"
ARCHIVE_WAL = "archive-wal"
RECEIVE_WAL = "receive-wal"
XLOGDB = "xlogdb"
BACKUP = "backup"
PROCESS_TASKS: tuple[str, ...] = (RECEIVE_WAL, BACKUP, CRON, ARCHIVE_WAL)
BLOCKING_TASKS = frozenset({XLOGDB})
_POLL = 0.05


def lock_path(lock_dir: str | os.PathLike[str], server: str, task: str) -> Path:
    """Return ``<lock_dir>/.<server>-<task>.lock`` (``task`` may be a backup ID)."""
    for label, value in (("server", server), ("task", task)):
        if not value or "/" in value or "\0" in value or value in (".", ".."):
            raise ValueError(f"invalid {label} name for a lock file: {value!r}")
    return Path(lock_dir) / f".{server}-{task}.lock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (EPERM counts as alive; zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return True  # no procfs (or it just vanished): trust kill()
    return state not in ([b"Z"], [b"X"])


def _parse_pid(data: bytes) -> int | None:
    first = data.split(b"\n", 1)[0].strip()
    if not first.isdigit():
        return None
    pid = int(first)
    return pid if pid > 0 else None


def read_lock_pid(path: str | os.PathLike[str]) -> int | None:
    """Return the PID recorded in a lock file, None if missing, empty or unreadable."""
    try:
        with open(path, "rb") as handle:
            return _parse_pid(handle.read(64))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not unlinked or replaced)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def flock_holder_pid(fd: int) -> int | None:
    """The PID holding an exclusive ``flock`` on the file open as ``fd``, from /proc/locks.

    For a holder that could not write its PID (a full disk).  None when /proc/locks is
    unreadable or lists no holder for that file.
    """
    held = os.fstat(fd)
    device = f"{os.major(held.st_dev):02x}:{os.minor(held.st_dev):02x}:{held.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters have "->" after "1:"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            pid = _parse_pid(fields[4].encode("ascii", "replace"))
            if pid is not None:
                return pid
    return None


def _busy_pid(fd: int, attempts: int = 20) -> int | None:
    """Read the holder's PID, giving a holder that has just locked time to write it; a
    holder whose PID never comes (it could not write it) is looked up in /proc/locks."""
    for _ in range(attempts):
        pid = _parse_pid(os.pread(fd, 64, 0)) or flock_holder_pid(fd)
        if pid is not None:
            return pid
        time.sleep(0.01)
    return None


def lock_file_holder(path: str | os.PathLike[str]) -> int | None:
    """PID holding the lock file at ``path``; None when nobody holds it (or PID unknown)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except PermissionError:  # another user's lock: flock works on a read-only fd locally
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return None if _try_flock(fd) else _busy_pid(fd)
    finally:
        os.close(fd)


def lock_holder(lock_dir: str | os.PathLike[str], server: str, task: str) -> int | None:
    """PID of the process holding ``server``'s ``task`` lock, None when it is free."""
    return lock_file_holder(lock_path(lock_dir, server, task))


def list_processes(
    lock_dir: str | os.PathLike[str], server: str, tasks: tuple[str, ...] = PROCESS_TASKS
) -> list[tuple[int, str]]:
    """``(pid, task)`` for each of ``tasks`` whose lock is currently held for ``server``."""
    found: list[tuple[int, str]] = []
    for task in tasks:
        pid = lock_holder(lock_dir, server, task)
        if pid is not None:
            found.append((pid, task))
    return found


def terminate(pid: int, *, sig: int = signal.SIGINT, timeout: float = 10.0) -> bool:
    """Send ``sig`` to ``pid`` and wait up to ``timeout`` seconds; True once it is gone."""
    if pid <= 0:
        raise ValueError(f"refusing to signal pid {pid}")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def cleanup_lock_directory(lock_dir: str | os.PathLike[str]) -> list[Path]:
    """Unlink every ``.*.lock`` file nobody holds (locking it first); return those removed."""
    removed: list[Path] = []
    for path in sorted(Path(lock_dir).glob(".*.lock")):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:  # vanished, a directory, or not ours
            continue
        try:
            if _try_flock(fd) and _same_file(fd, path):
                path.unlink()  # while holding the lock: see the module docstring
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def _record_pid(fd: int) -> None:
    """Write ``"<pid>\\n"`` into a lock file we hold; on a full disk leave it empty instead.

    A stale PID of an earlier holder must not stay behind (readers would name a dead or
    unrelated process), so a failed write truncates the file to nothing, which needs no space.
    """
    record = f"{os.getpid()}\n".encode("ascii")
    try:
        os.pwrite(fd, record, 0)
        os.ftruncate(fd, len(record))
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)


class ServerLock:
    """An exclusive Barman-compatible lock on one task of one server (a context manager).

    ``wait=None`` means blocking for ``xlogdb`` and non-blocking otherwise; ``timeout``
    bounds a wait.  A busy lock raises :class:`~walvault.errors.LockBusy`.
    """

    def __init__(
        self,
        lock_dir: str | os.PathLike[str],
        server: str,
        task: str,
        *,
        wait: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        self.server = server
        self.task = task
        self._path = lock_path(lock_dir, server, task)
        self._wait = task in BLOCKING_TASKS if wait is None else wait
        self._timeout = timeout
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return self._path

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def _lock(self, fd: int, deadline: float | None) -> bool:
        if self._wait and deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
        while not _try_flock(fd):
            if not self._wait or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(_POLL)
        return True

    def acquire(self) -> ServerLock:
        """Take the lock, write our PID into it; raise LockBusy if another process holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self._path} is already held by this object")
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            try:
                fd = os.open(self._path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise WalvaultError(f"cannot open lock file {self._path}: {exc}") from exc
            try:
                if not self._lock(fd, deadline):
                    pid = _busy_pid(fd, attempts=5)
                    who = f" (pid {pid})" if pid is not None else ""
                    raise LockBusy(
                        f"another {self.task} process{who} is already running "
                        f"for server '{self.server}' (lock file {self._path})"
                    )
                if _same_file(fd, self._path):
                    _record_pid(fd)
                    self._fd = fd
                    return self
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the file was unlinked by a cleanup meanwhile: lock the new one

    def release(self) -> None:
        """Release the lock (the file stays, as with Barman)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> ServerLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
