"""The restore agent's long-lived ``stream-wal`` sessions over ssh (:mod:`.streamwire`).

One session per fetching thread (the agent's prefetch workers fetch in parallel), each an
``ssh ... walvault stream-wal SERVER`` kept for the whole recovery, so a file costs a request
and its bytes, not an ssh session and a new remote interpreter.  What never changes:

* the answers are restore_command's (0 written, 1 only for the archive's own "not found",
  200 otherwise), a copy is checked (:func:`segment_problem`) and a failed one removed;
* a remote end that does not greet (Barman, an older walvault, ssh failing at the start)
  makes every later fetch go through ``get-wal`` per file (:meth:`StreamSessions.fetch`
  returns None), and so does a session that breaks mid-answer, for that request; after
  :data:`MAX_BREAKS` broken sessions in a row the agent stops trying them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable

from walvault.clients.agentbase import log
from walvault.clients.common import ABORT, NOT_FOUND, OK, error
from walvault.clients.streamwire import GREETING, WireError, read_chunks, read_line

MAX_BREAKS = 3


class StreamSessions:
    """A pool of sessions (each used by one fetch at a time); ``command(server)`` is the ssh
    argv of one.  The agent answers every request on a thread of its own and prefetches on
    a few more, so sessions are lent, not tied to threads: as many stay open as fetches
    ever ran at once."""

    def __init__(self, command: Callable[[str], list[str]]) -> None:
        self._command = command
        self._lock = threading.Lock()
        self._idle: list[_Session] = []
        self._sessions: list[_Session] = []
        self._breaks = 0
        self.unavailable = False

    def fetch(self, server: str, name: str, dest: str, *, partial: bool) -> int | None:
        """restore_command's status, or None: fetch this one with get-wal instead."""
        if self.unavailable:
            return None
        session = self._take(server)
        if session is None:
            return None
        try:
            code = session.fetch(name, dest, partial)
        except (WireError, OSError) as exc:
            session.stop()
            with self._lock:
                self._breaks += 1
                self.unavailable = self._breaks >= MAX_BREAKS
            log(f"stream-wal session broke ({exc}); get-wal for {name}")
            return None
        with self._lock:
            self._breaks = 0
            self._idle.append(session)
        return code

    def _take(self, server: str) -> _Session | None:
        with self._lock:
            for session in self._idle:
                if session.server == server and not session.broken:
                    self._idle.remove(session)
                    return session
        try:
            session = _Session(self._command(server), server)
        except (WireError, OSError) as exc:
            self.unavailable = True
            log(f"no stream-wal on the other end ({exc}): get-wal per file")
            return None
        with self._lock:
            self._sessions.append(session)
        log("stream-wal session open")
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions, self._idle = self._sessions, [], []
        for session in sessions:
            session.stop()


class _Session:
    def __init__(self, argv: list[str], server: str) -> None:
        self.server = server
        self.broken = False
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._stdout = self.proc.stdout
        errors = self.proc.stderr
        threading.Thread(target=_relay, args=(errors,), daemon=True).start()
        try:
            greeting = read_line(self._stdout)
        except WireError:
            self.stop()
            raise WireError(f"it ended with exit status {self.proc.returncode}") from None
        if greeting + b"\n" != GREETING:
            self.stop()
            raise WireError(f"it said {greeting[:60]!r}")

    def fetch(self, name: str, dest: str, partial: bool) -> int:
        from walvault.clients.transport import (
            DestinationError,
            discard,
            open_destination,
            segment_problem,
        )
        from walvault.wal.names import is_segment

        assert self.proc.stdin is not None
        self.broken = True  # until the whole answer is read
        self.proc.stdin.write(b"GET %s %d\n" % (name.encode("ascii"), int(partial)))
        self.proc.stdin.flush()
        kind, _, message = read_line(self._stdout).partition(b" ")
        text = message.decode("utf-8", "replace")
        if kind == b"NOTFOUND":
            self.broken = False
            if name.endswith(".history"):  # the normal end of every recovery
                print(
                    f"{text} (the newest timeline's history is the last one)",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                error(text)
            return NOT_FOUND
        if kind == b"ERROR":
            self.broken = False
            error(text)
            return ABORT
        if kind != b"DATA":
            raise WireError(f"an answer {kind[:40]!r}")
        try:
            fd = open_destination(dest)
        except DestinationError as exc:
            read_chunks(self._stdout, lambda data: None)  # the answer still has to be read
            read_line(self._stdout)
            self.broken = False
            error(exc.message)
            return exc.exit_code
        try:
            read_chunks(self._stdout, lambda data: _write_all(fd, data))
        except BaseException:
            os.close(fd)
            discard(dest)
            raise
        os.close(fd)
        tail, _, message = read_line(self._stdout).partition(b" ")
        self.broken = False
        if tail != b"OK":
            discard(dest)
            error(message.decode("utf-8", "replace") or "stream-wal failed")
            return ABORT
        problem = segment_problem(dest, name) if is_segment(name) else None
        if problem is not None:
            discard(dest)
            error(f"received an unusable copy of '{name}': {problem}")
            return ABORT
        return OK

    def stop(self) -> None:
        self.broken = True
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _relay(stream: object) -> None:
    """The remote's stderr (warnings) into the agent's log, line by line."""
    for raw in stream:  # type: ignore[attr-defined]
        print(raw.decode("utf-8", "replace").rstrip("\n"), file=sys.stderr, flush=True)
