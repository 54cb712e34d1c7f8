"""The background prefetcher of walvault-wal-restore: keeps the spool N segments ahead.

Started (detached, in its own session) by a restore that found no live prefetcher, it
holds the spool's lock and loops: it reads ``.state`` (the last restored segment and the
reference facts), drops spool files recovery has passed, and keeps up to N fetches in
flight for the missing segments among the N that follow -- continuously, not in bursts.
A segment that is not found (yet) is retried with a growing delay and blocks the ones
after it, so the spool never has holes.  It stops when no restore happened for
``IDLE_EXIT`` seconds, deleting what was not consumed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from walvault.clients.common import OK
from walvault.clients.spool import LOCK, LOG, STATE, Spool, SpoolState, segment_problem
from walvault.wal.names import Segment, is_segment

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from walvault.clients.transport import Source

IDLE_EXIT = 30.0
POLL = 0.01
RETRY_FIRST, RETRY_MAX = 0.25, 4.0


def start(spool: Spool, source: Source, server: str, depth: int) -> None:
    """Start a detached prefetcher unless one is running (the caller returns at once)."""
    if spool.session_start() is not None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)  # the intermediate child exits at once
        return
    code = 1
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir("/")
        _redirect(os.path.join(spool.path, LOG))
        code = Prefetcher(spool, source, server, depth).run()
    except BaseException as exc:  # a detached process must never raise into the client
        with contextlib.suppress(Exception):
            print(f"prefetcher failed: {exc!r}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _redirect(log_path: str) -> None:
    """stdin from /dev/null, stdout and stderr to the log; nothing else inherited."""
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, 65536)


def _log(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {text}", flush=True)


class Prefetcher:
    """The loop of one prefetch session."""

    def __init__(self, spool: Spool, source: Source, server: str, depth: int) -> None:
        self.spool = spool
        self.source = source
        self.server = server
        self.depth = max(1, depth)
        self.stopping = False

    def stop(self, *_: object) -> None:
        """Ask the loop to end (SIGTERM handler): unconsumed files are still removed."""
        self.stopping = True

    def _lock(self) -> int | None:
        fd = os.open(os.path.join(self.spool.path, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # also stamps the session start (mtime)
        return fd

    def run(self) -> int:
        """Prefetch until idle; return an exit status (0 also when another one runs)."""
        lock = self._lock()
        if lock is None:
            return 0
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
        _log(f"prefetching up to {self.depth} segments of '{self.server}' from {self.source.label}")
        self._wipe()  # whatever is there predates this session
        from concurrent.futures import ThreadPoolExecutor

        try:
            with ThreadPoolExecutor(max_workers=self.depth) as pool:
                self._loop(pool)
        finally:
            self._wipe()
            os.close(lock)
        _log("idle: stopped")
        return 0

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        inflight: dict[str, Future[int]] = {}
        retry_at: dict[str, float] = {}
        delay: dict[str, float] = {}
        seen: tuple[int, int] | None = None
        state: SpoolState | None = None
        last_activity = time.monotonic()
        while True:
            now = time.monotonic()
            signature = self._state_signature()
            if signature != seen:
                seen, state = signature, self.spool.read_state()
                last_activity = now
                if state is not None:
                    self._drop_passed(state.wanted)
            for name, future in list(inflight.items()):
                if future.done():
                    del inflight[name]
                    if future.result() == OK:
                        delay.pop(name, None)
                        continue
                    wait = min(delay.get(name, RETRY_FIRST / 2) * 2, RETRY_MAX)
                    delay[name], retry_at[name] = wait, now + wait
            if self.stopping or now - last_activity > IDLE_EXIT:
                break
            if state is not None:
                for name in self._window(state):
                    if len(inflight) >= self.depth or retry_at.get(name, 0.0) > now:
                        break
                    if name not in inflight and not os.path.exists(self.spool.file(name)):
                        inflight[name] = pool.submit(self._fetch, name, state)
            time.sleep(POLL)
        for future in inflight.values():
            future.cancel()

    def _state_signature(self) -> tuple[int, int] | None:
        try:
            info = os.stat(os.path.join(self.spool.path, STATE))
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns

    def _window(self, state: SpoolState) -> list[str]:
        names: list[str] = []
        current = Segment.from_name(state.wanted)
        try:
            for _ in range(self.depth):
                current = current.next(state.segment_size)
                names.append(current.name)
        except ValueError:
            pass
        return names

    def _fetch(self, name: str, state: SpoolState) -> int:
        """Fetch one segment into the spool; a failure is logged and counts as "retry"."""
        try:
            return self._fetch_checked(name, state)
        except Exception as exc:
            _log(f"fetching {name} failed: {exc!r}")
            return 2

    def _fetch_checked(self, name: str, state: SpoolState) -> int:
        """Fetch into a temporary file, check it, rename it into the spool."""
        tmp = self.spool.file(f".{name}.{os.getpid()}.tmp")
        code = self.source.fetch(self.server, name, tmp, partial=False)
        if code != OK:
            self.spool.remove(os.path.basename(tmp))
            return code
        fd = os.open(tmp, os.O_RDONLY)
        try:
            problem = segment_problem(fd, name, state)
        finally:
            os.close(fd)
        if problem is not None:
            _log(f"rejected {name}: {problem}")
            self.spool.remove(os.path.basename(tmp))
            return 2
        os.rename(tmp, self.spool.file(name))
        _log(f"spooled {name}")
        return OK

    def _drop_passed(self, wanted: str) -> None:
        """Delete segments recovery no longer needs: older ones and other timelines'."""
        current = Segment.from_name(wanted)
        for entry in self._entries():
            if not is_segment(entry):
                continue
            other = Segment.from_name(entry)
            if other.tli != current.tli or (other.log, other.seg) <= (current.log, current.seg):
                self.spool.remove(entry)

    def _wipe(self) -> None:
        """Delete every spooled segment and our temporary files (not the client's .state)."""
        for entry in self._entries():
            ours = entry.endswith(".tmp") and not entry.startswith(STATE)
            if is_segment(entry) or ours:
                self.spool.remove(entry)

    def _entries(self) -> list[str]:
        try:
            return os.listdir(self.spool.path)
        except OSError:
            return []
