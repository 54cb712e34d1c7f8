"""The thin client's side of an agent's socket (see :mod:`walvault.clients.agentbase`).

Only built-in modules (``_socket``, not :mod:`socket`, whose enums cost a per-segment client
~2 ms): walvault-wal-restore and walvault-wal-archive import this on every call that is not
answered from their spool.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import sys
import time  # already loaded by the interpreter at start-up

# ``typing`` costs ~5 ms (it imports re): mypy reads this name as typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: the agent's socket, in the spool directory
SOCKET = "agent.sock"
#: How long a call that started the agent waits for its socket before working itself.
AGENT_START_WAIT = 5.0
_CHUNK = 65536


def session_start(lock_path: str) -> int | None:
    """mtime (ns) of an agent's lock file while a live agent holds it, or None when none
    runs (the agent writes its PID into the file when it starts: the mtime is the start of
    its *session*)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.fstat(fd).st_mtime_ns
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def plain_name(name: str) -> bool:
    """A name the one-line protocol can carry (the agent validates it strictly itself)."""
    return bool(name) and name.isascii() and name.isprintable() and " " not in name


def connect(client: _socket.socket, spool_path: str) -> None:
    """Connect to the socket in ``spool_path`` by its relative name, from inside the directory:
    a Unix socket's path is limited to ~107 bytes, and a spool path can be longer."""
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(spool_path)
        client.connect(SOCKET)
    finally:
        os.fchdir(here)
        os.close(here)


def ask(spool_path: str, request: str) -> int | None:
    """Send one request line (without its newline) to the agent of ``spool_path``; return
    the status of its ``EXIT`` line, or None when no agent answered (none runs, or it died
    before its ``EXIT`` line: then nothing it may have done counts).  Its ``LOG`` lines are
    printed on stderr, for PostgreSQL's log."""
    client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            connect(client, spool_path)
        except OSError:
            return None
        client.sendall(f"{request}\n".encode("utf-8", "surrogateescape"))
        pending = b""
        while True:
            data = client.recv(_CHUNK)
            if not data:
                return None  # the agent died before answering
            pending += data
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                line = raw.decode("utf-8", "replace")
                if line.startswith("LOG "):
                    print(line[4:], file=sys.stderr, flush=True)
                elif line.startswith("EXIT ") and line[5:].isdigit():
                    return int(line[5:])
    except OSError:
        return None
    finally:
        client.close()


def ask_starting(spool_path: str, request: str, start: Callable[[], None]) -> int | None:
    """:func:`ask`; when no agent answers, ``start()`` one and ask it as soon as its socket
    is there (for up to :data:`AGENT_START_WAIT` seconds).  None: no agent answered."""
    code = ask(spool_path, request)
    if code is not None:
        return code
    start()
    socket_path = os.path.join(spool_path, SOCKET)
    deadline = time.monotonic() + AGENT_START_WAIT
    while time.monotonic() < deadline:
        if os.path.exists(socket_path):  # a dead agent's socket refuses: None, keep waiting
            code = ask(spool_path, request)
            if code is not None:
                return code
        time.sleep(0.005)
    return None
