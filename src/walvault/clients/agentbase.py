"""What the restore agent and the archive agent share: a detached process behind a socket.

PostgreSQL starts restore_command and archive_command once per WAL file; each client is thin
and hands its work to a warm agent (:mod:`walvault.clients.agent` for restores,
:mod:`walvault.clients.archagent` for archiving).  Both agents are built the same way, here:

* **started once** (:func:`spawn`): the first client that finds no agent forks one, detached
  in its own session, working from ``/``, with stdin from /dev/null, stdout and stderr to
  its log file in the spool directory and no other descriptor inherited (PostgreSQL's pipes
  are never held); the client goes on at once;
* **one per spool directory**: the agent holds an ``flock`` on a lock file there, with its
  PID inside (:func:`take_lock`); the lock file's mtime stamps the start of its *session*
  (:func:`walvault.clients.agentclient.session_start`), and a second agent that cannot
  take the lock exits at once;
* **a Unix socket** ``agent.sock`` in the spool directory (mode 0600, in a 0700 directory:
  only its owner can reach it), bound and connected by its relative name from inside the
  directory, so a spool path longer than a socket path (~107 bytes) still works;
* **a line protocol**: one request line (at most :data:`MAX_REQUEST` bytes), answered by zero
  or more ``LOG <text>`` lines (for PostgreSQL's log) and one ``EXIT <status>`` line.  A
  client that gets no ``EXIT`` line (the agent died) takes nothing it may have done as done;
* **one ssh connection**: :func:`control_path` says where an OpenSSH ControlMaster socket
  may live (a path short enough for ssh, else none);
* **idle exit**: an agent's loop ends after its idle time; on SIGTERM too.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from walvault.clients.agentclient import SOCKET

#: the longest request line a client may send (a name and an absolute path)
MAX_REQUEST = 8192
#: the longest ControlPath an agent gives ssh (a Unix socket path, plus ssh's temporary
#: suffix of ~17 bytes while it sets the master up, must fit in ~107 bytes)
SSH_CONTROL_PATH_MAX = 90
#: the ControlMaster socket's name in the spool directory
SSH_SOCKET = "ssh.sock"


def control_path(spool_path: str) -> str | None:
    """Where the agent's shared ssh master listens, or None when that path is too long."""
    path = os.path.join(spool_path, SSH_SOCKET)
    return path if len(path) <= SSH_CONTROL_PATH_MAX else None


def take_lock(lock_path: str) -> int | None:
    """Hold the agent lock (the descriptor), writing our PID into it; None when held."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # also stamps the session start (mtime)
    return fd


def spawn(log_path: str, body: Callable[[Router], int]) -> None:
    """Run ``body`` in a detached grandchild (see the module docstring); return at once.

    ``body`` gets the :class:`Router` that became ``sys.stderr``; its return value is the
    agent's exit status.  Nothing it raises reaches the caller.
    """
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
        _redirect(log_path)
        router = Router(sys.stderr)  # type: ignore[arg-type]
        sys.stderr = router
        code = body(router)
    except BaseException as exc:  # a detached process must never raise into the client
        with contextlib.suppress(Exception):
            print(f"agent failed: {exc!r}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _redirect(log_path: str) -> None:
    """stdin from /dev/null, stdout and stderr to the log; nothing else inherited."""
    null = os.open(os.devnull, os.O_RDONLY)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.closerange(3, 65536)


def log(text: str) -> None:
    """A line of the agent's own log (never routed to a client)."""
    stream = sys.stderr
    target = stream.log if isinstance(stream, Router) else stream
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {text}", file=target, flush=True)


class Router(io.TextIOBase):
    """stderr of an agent: the lines a request's work prints go back to its client (for
    PostgreSQL's log), everything else to the agent's log."""

    def __init__(self, log: io.TextIOBase) -> None:
        self.log = log
        self._local = threading.local()

    def collect(self) -> list[str]:
        """Start collecting this thread's lines; returns the list they go to."""
        lines: list[str] = []
        self._local.lines = lines
        return lines

    def stop(self) -> None:
        self._local.lines = None

    def write(self, text: str) -> int:
        lines = getattr(self._local, "lines", None)
        if lines is None:
            return self.log.write(text)
        lines.extend(line for line in text.splitlines() if line)
        return len(text)

    def flush(self) -> None:
        self.log.flush()


class AgentBase:
    """The life of an agent: lock, socket, requests on their own threads, the loop, the end.

    A subclass gives :attr:`lock_name`, :attr:`title` and :attr:`failure` (the status of a
    request that raised) and implements :meth:`answer` and :meth:`loop`; :meth:`prepare`
    and :meth:`finish` run before the socket opens and after it closed.
    """

    lock_name = ".agent.lock"
    title = "agent"
    failure = 1

    def __init__(self, spool_path: str) -> None:
        self.spool_path = spool_path
        self.stopping = False
        self.last_activity = time.monotonic()

    def stop(self, *_: object) -> None:
        """Ask the loop to end (the SIGTERM handler)."""
        self.stopping = True

    def run(self) -> int:
        """Serve until the loop ends; 0 also when another agent holds the lock."""
        lock = take_lock(os.path.join(self.spool_path, self.lock_name))
        if lock is None:
            return 0
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
        try:
            self.prepare()
            listener = self._listen()
            try:
                threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
                self.loop()
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.spool_path, SOCKET))
                listener.close()
        finally:
            try:
                self.finish()
            finally:
                os.close(lock)
        log("idle: stopped")
        return 0

    def prepare(self) -> None:
        """Before the socket opens (the lock is held)."""

    def finish(self) -> None:
        """After the socket closed (the lock is still held)."""

    def loop(self) -> None:
        """The agent's own work, until :attr:`stopping` or idle."""
        raise NotImplementedError

    def answer(self, request: bytes) -> tuple[int, list[str]]:
        """The status and the lines for the client of one request line."""
        raise NotImplementedError

    def _listen(self) -> socket.socket:
        path = os.path.join(self.spool_path, SOCKET)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead agent's (we hold the lock)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(self.spool_path)  # bound by its relative name: no length limit on the
            listener.bind(SOCKET)  # spool path (a Unix socket path has ~107 bytes)
        finally:
            os.fchdir(here)
            os.close(here)
            os.umask(old)
        listener.listen(8)
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while not self.stopping:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            line = stream.readline(MAX_REQUEST)
            self.last_activity = time.monotonic()
            try:
                code, lines = self.answer(line)
            except Exception as exc:  # one request must not take the agent down
                message = f"ERROR: {self.title}: unexpected {type(exc).__name__}: {exc}"
                log(message)
                code, lines = self.failure, [message]
            reply = "".join(f"LOG {text}\n" for text in lines) + f"EXIT {code}\n"
            with contextlib.suppress(OSError):
                stream.write(reply.encode("utf-8", "replace"))
                stream.flush()
            self.last_activity = time.monotonic()
