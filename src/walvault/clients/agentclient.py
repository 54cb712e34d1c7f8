"""The thin client's side of the restore agent's socket (see :mod:`walvault.clients.agent`).

Only built-in modules (``_socket``, not :mod:`socket`, whose enums cost a per-segment client
~2 ms): walvault-wal-restore imports this on every call that misses the spool.
"""

from __future__ import annotations

import _socket
import os
import sys

#: the agent's socket, in the spool directory
SOCKET = "agent.sock"
_CHUNK = 65536


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


def ask(spool_path: str, name: str, dest: str, *, partial: bool) -> int | None:
    """Ask the agent of ``spool_path`` for ``name`` into the absolute path ``dest``; return
    its restore_command status, or None when no agent answered (none runs, or it died
    before its ``EXIT`` line: then nothing it may have written counts).  Its ``LOG`` lines
    are printed on stderr, for PostgreSQL's log."""
    client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            connect(client, spool_path)
        except OSError:
            return None
        request = f"FETCH {name} {1 if partial else 0} {dest}\n"
        client.sendall(request.encode("utf-8", "surrogateescape"))
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
