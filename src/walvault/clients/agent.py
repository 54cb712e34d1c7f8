"""The restore agent: a warm process per recovery that fetches WAL for walvault-wal-restore.

PostgreSQL starts restore_command once per segment; a cold process per segment pays the
interpreter, the configuration, the archive code, a new ssh or TLS connection.  The agent
pays them once.  The first restore that finds no agent starts one (detached, in its own
session; the caller goes on at once), one per spool directory
``<spool dir>/<server>@<source>/`` (0700, see :mod:`walvault.clients.spool`).  It:

* holds ``.prefetch.lock`` (flock; its PID inside; the file's mtime starts the *session*
  whose spool files may be served);
* listens on ``agent.sock`` in the spool directory (a Unix socket: only its owner can reach
  it) and answers ``FETCH`` requests of thin clients: from the spool when the segment was
  prefetched, else by fetching it there and then (:meth:`Agent.serve_one`), writing
  WAL_DEST itself and replying only once the file is whole and verified;
* keeps the source open: the configuration and the archive's store client (local mode), or
  one ssh master connection that every fetch goes through (OpenSSH ``ControlMaster``;
  unless the ``--ssh-command`` already chooses a ``ControlPath``);
* keeps the N segments after the last restored one in the spool (``-p N``), up to N
  fetches at a time, continuously, each checked before it is renamed into place; a segment
  not archived yet is retried with a growing delay and blocks the ones after it, so the
  spool never has holes; what recovery has passed, or what belongs to another timeline, is
  deleted;
* exits by itself after ``IDLE_EXIT`` seconds without a request, deleting what was not used.

The wire protocol is lines of ASCII: the client sends ``FETCH <name> <0|1: -P> <WAL_DEST
absolute path>``; the agent answers zero or more ``LOG <text>`` lines (messages for
PostgreSQL's log) and one ``EXIT <restore_command status>``.  An agent that dies before its
``EXIT`` line leaves the client to fetch in-process: a half-written WAL_DEST is never
reported as restored.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING

from walvault.clients.agentbase import AgentBase, Router, control_path, log, spawn
from walvault.clients.common import ABORT, OK
from walvault.clients.spool import LOCK, LOG, STATE, Spool, SpoolState, segment_problem
from walvault.wal.names import Segment, is_segment, validate_wal_name

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from walvault.clients.transport import Source

IDLE_EXIT = 30.0
POLL = 0.01
RETRY_FIRST, RETRY_MAX = 0.25, 4.0


def start(spool: Spool, source: Source, server: str, depth: int) -> None:
    """Start a detached agent unless one is running (the caller returns at once)."""
    if spool.session_start() is not None:
        return
    spawn(
        os.path.join(spool.path, LOG),
        lambda router: Agent(spool, source, server, depth, router).run(),
    )


class Agent(AgentBase):
    """One agent session (see the module docstring)."""

    lock_name = LOCK
    title = "restore agent"
    failure = ABORT

    def __init__(
        self,
        spool: Spool,
        source: Source,
        server: str,
        depth: int,
        router: Router | None = None,
    ) -> None:
        super().__init__(spool.path)
        self.spool = spool
        self.source = source
        self.server = server
        self.depth = max(0, depth)
        self.router = router  # None in-process (tests): messages stay on stderr
        self._state_lock = threading.Lock()

    def prepare(self) -> None:
        share = getattr(self.source, "share_connection", None)
        control = control_path(self.spool.path)
        if share is not None and control is not None and share(control):
            log("fetching through one shared ssh connection")
        stream = getattr(self.source, "stream", None)
        if stream is not None:
            stream()  # one remote stream-wal per fetching thread (falls back to get-wal)
        log(
            f"restore agent for '{self.server}' from {self.source.label}, "
            f"prefetching {self.depth} segments"
        )
        self._wipe()  # whatever is there predates this session

    def loop(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, self.depth)) as pool:
            self._loop(pool)

    def finish(self) -> None:
        self._wipe()
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    # ---------------------------------------------------------------- serving

    def answer(self, request: bytes) -> tuple[int, list[str]]:
        """Serve one request; the lines its fetch printed go back to the client."""
        lines = self.router.collect() if self.router is not None else []
        try:
            code = self.serve_one(request)
        except Exception as exc:  # one request must not take the agent down
            message = f"ERROR: restore agent: unexpected {type(exc).__name__}: {exc}"
            print(message, file=sys.stderr)
            code = ABORT
        finally:
            if self.router is not None:
                self.router.stop()
        return code, lines

    def serve_one(self, request: bytes) -> int:
        """Answer one request line (see the module docstring); returns the exit status."""
        from walvault.errors import InvalidWalName

        parts = request.decode("utf-8", "replace").rstrip("\n").split(" ", 3)
        if len(parts) != 4 or parts[0] != "FETCH" or parts[2] not in ("0", "1"):
            print("ERROR: restore agent: malformed request", file=sys.stderr)
            return ABORT
        _, name, partial, dest = parts
        try:
            validate_wal_name(name)
        except InvalidWalName as exc:
            print(f"ERROR: {exc.message}", file=sys.stderr)
            return ABORT
        if not os.path.isabs(dest) or "\0" in dest or "\n" in dest:
            message = f"ERROR: restore agent: WAL_DEST must be an absolute path: {dest!r}"
            print(message, file=sys.stderr)
            return ABORT
        if is_segment(name):
            state = self.spool.take(name, dest)
            if state is not None:
                self._progress(SpoolState(name, state.system_identifier, state.segment_size))
                log(f"served {name} from the spool")
                return OK
        code = self.source.fetch(self.server, name, dest, partial=partial == "1")
        if code == OK and is_segment(name):
            fresh = self.spool.record(name, dest)
            if fresh is not None:
                self._progress(fresh)
        log(f"fetched {name} on request: exit {code}")
        return code

    def _progress(self, state: SpoolState) -> None:
        """Where recovery is: the prefetch window follows."""
        with self._state_lock:
            try:
                self.spool.write_state(state)
            except OSError as exc:
                log(f"cannot update the spool state: {exc}")

    # ---------------------------------------------------------------- prefetching

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        inflight: dict[str, Future[int]] = {}
        retry_at: dict[str, float] = {}
        delay: dict[str, float] = {}
        seen: tuple[int, int] | None = None
        state: SpoolState | None = None
        while True:
            now = time.monotonic()
            signature = self._state_signature()
            if signature != seen:
                seen, state = signature, self.spool.read_state()
                self.last_activity = max(self.last_activity, now)
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
            if self.stopping or now - self.last_activity > IDLE_EXIT:
                break
            if state is not None and self.depth:
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
            log(f"fetching {name} failed: {exc!r}")
            return ABORT

    def _fetch_checked(self, name: str, state: SpoolState) -> int:
        """Fetch into a temporary file, check it, rename it into the spool."""
        tmp = self.spool.file(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
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
            log(f"rejected {name}: {problem}")
            self.spool.remove(os.path.basename(tmp))
            return ABORT
        os.rename(tmp, self.spool.file(name))
        log(f"spooled {name}")
        return OK

    def _drop_passed(self, wanted: str) -> None:
        """Delete segments recovery no longer needs: older ones and other timelines'.

        ``wanted`` itself stays: the client moves the window before it takes ``wanted``
        from the spool (and checks it then)."""
        current = Segment.from_name(wanted)
        for entry in self._entries():
            if not is_segment(entry):
                continue
            other = Segment.from_name(entry)
            if other.tli != current.tli or (other.log, other.seg) < (current.log, current.seg):
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
