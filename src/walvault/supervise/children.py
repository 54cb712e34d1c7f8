"""Forked workers of ``walvault serve``: each receiver, archive-wal run and probe is a child.

Why fork rather than start ``walvault receive-wal`` (what cron does): a fresh interpreter
costs ~35 MiB per streamed server; a child forked from the service shares the service's
pages and costs what it writes (measured: see ``bench/serve_scale.py``).  The child runs the
very functions the commands run (``receive_wal``, ``archive_wal``...), so there is one code
path, and one server's trouble (a hung connection, a crash) stays in its own process: the
service's loop never blocks on PostgreSQL or on compression.

Rules that make forking safe here:

* The parent forks only while it has a single thread (asserted): asyncio is used without
  executor threads (no ``getaddrinfo``, no ``run_in_executor``).
* ``gc.freeze()`` before each fork, so the child's collector does not touch (and copy) the
  parent's objects.
* In the child, first: every signal the service handles goes back to its default and
  ``signal.set_wakeup_fd(-1)``.  The child shares asyncio's wake-up socket with the parent;
  without this, a SIGTERM sent to the child would be written into it and the *parent*
  would act on it.  Then the child asks for SIGTERM when the service dies
  (``PR_SET_PDEATHSIG``, as pg_receivewal does with its own parent), takes its own process
  group (a Ctrl-C in the service's terminal reaches the service, which stops the children
  in order), and closes the listening sockets so that a lingering child never holds the
  service's port.
* Lock descriptors the parent holds at the fork are shared by the child; ``flock``'s
  ``LOCK_UN`` in the parent (:meth:`walvault.locks.ServerLock.release`) releases them for
  both, so an inherited descriptor never keeps a lock held.
* The child ends with ``os._exit``: no atexit handlers and no finalizers of the parent's
  objects run in it.

A child reports to the parent through a pipe, one JSON document per line, and its exit is
seen through a pidfd (``os.pidfd_open``), both watched by the parent's event loop.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from walvault.subprocesses import die_with_parent

log = logging.getLogger("walvault.serve")

#: Signals the service handles; a child gets their defaults back.
SERVICE_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGALRM)
PR_SET_NAME = 15
Emit = Callable[[dict[str, Any]], None]
Target = Callable[[Emit], int]


class Child:
    """A forked worker as the parent sees it."""

    def __init__(self, name: str, pid: int, pidfd: int, out_fd: int) -> None:
        self.name = name
        self.pid = pid
        self.pidfd = pidfd
        self.out_fd = out_fd
        self.started = time.time()
        self.exit_code: int | None = None
        self._buffer = b""

    def read_lines(self) -> tuple[list[dict[str, Any]], bool]:
        """What the child wrote since the last call (parsed lines) and whether it hit EOF."""
        lines: list[dict[str, Any]] = []
        eof = False
        while True:
            try:
                chunk = os.read(self.out_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        for raw in complete:
            try:
                value = json.loads(raw)
            except ValueError:
                log.warning("%s: ignoring a malformed report line", self.name)
                continue
            if isinstance(value, dict):
                lines.append(value)
        return lines, eof

    def reap(self) -> int:
        """Collect the exit status (the pidfd said the child ended): the exit code, or minus
        the signal that killed it."""
        _, status = os.waitpid(self.pid, 0)
        self.exit_code = os.waitstatus_to_exitcode(status)
        return self.exit_code

    def signal(self, signum: int) -> None:
        """Send ``signum`` unless the child is already reaped."""
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def close(self) -> None:
        """Release the parent's descriptors of this child."""
        for fd in (self.pidfd, self.out_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def fork_child(name: str, target: Target, *, sockets: Iterable[socket.socket] = ()) -> Child:
    """Fork a child that runs ``target(emit)`` and exits with its return value.

    ``emit(dict)`` sends one JSON line to the parent.  An exception in ``target`` is logged
    (with its traceback, in the log only) and ends the child with code 70.
    """
    if threading.active_count() != 1:
        raise RuntimeError(f"refusing to fork {name}: the service has several threads")
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 70
        try:
            os.close(read_fd)
            _child_setup(name, parent, sockets)
            code = target(_emitter(write_fd))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            log.error("%s failed: %s", name, traceback.format_exc().strip())
        finally:
            logging.shutdown()  # flush the log handlers the child inherited
            os._exit(code)
    gc.unfreeze()
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    pidfd = os.pidfd_open(pid)
    return Child(name, pid, pidfd, read_fd)


def _set_name(name: str) -> None:
    """The worker's name in ``top``, ``ps -o comm`` and ``/proc/PID/comm`` (15 bytes)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, f"wv {name}".encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _child_setup(name: str, parent: int, sockets: Iterable[socket.socket]) -> None:
    for signum in SERVICE_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    die_with_parent()
    if os.getppid() != parent:  # the service died before the line above
        os._exit(1)
    os.setpgid(0, 0)
    _set_name(name)
    for sock in sockets:
        with contextlib.suppress(OSError):
            os.close(sock.detach())


def _emitter(fd: int) -> Emit:
    def emit(value: dict[str, Any]) -> None:
        data = (json.dumps(value, separators=(",", ":")) + "\n").encode()
        while data:
            written = os.write(fd, data)
            data = data[written:]

    return emit
