"""PostgreSQL's client programs (pg_receivewal, pg_basebackup), started in one place.

The connection string goes on the command line without its password, which travels in
``PGPASSWORD`` so that it does not show in ``ps``; ``PATH`` is the server's search path
(``path_prefix``); the child gets SIGTERM when walvault dies, so no orphan keeps holding a
replication slot or writing a backup. Reading its output is left to the caller.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from walvault.conninfo import PHYSICAL_REPLICATION, parse_conninfo

if TYPE_CHECKING:
    from walvault.config import ServerConfig

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ClientCommand:
    """argv and the extra environment for a PostgreSQL client program."""

    argv: tuple[str, ...]
    env: dict[str, str]

    def shown(self) -> str:
        """The command line as it may be logged (it never holds a password)."""
        return " ".join(self.argv)


def streaming_dsn(conninfo: str, application_name: str) -> tuple[str, dict[str, str], str]:
    """The replication DSN, the environment carrying its password, and the application_name.

    ``replication=true`` and ``application_name`` are added only where the user did not set
    them, and ``dbname`` is ``replication`` (what pg_receivewal and pg_basebackup send
    whatever the user wrote: see :data:`walvault.conninfo.PHYSICAL_REPLICATION`); ``options``
    and everything else the user wrote are kept as they are. The password travels in
    ``PGPASSWORD`` so that it does not show in ``ps``.
    """
    from psycopg.conninfo import make_conninfo

    params = parse_conninfo(conninfo)
    params.setdefault("replication", "true")
    params["dbname"] = PHYSICAL_REPLICATION["dbname"]
    params.setdefault("application_name", application_name)
    env: dict[str, str] = {}
    if "password" in params:
        env["PGPASSWORD"] = params.pop("password")
    return make_conninfo("", **params), env, params["application_name"]


def client_connection(
    server: ServerConfig, conninfo: str, application_name: str
) -> tuple[str, dict[str, str], str]:
    """:func:`streaming_dsn` plus the environment every client program runs with.

    ``PATH`` is the server's search path and ``PGCONNECT_TIMEOUT`` defaults to 10 seconds.
    """
    dsn, env, app_name = streaming_dsn(conninfo, application_name)
    env["PATH"] = server.search_path
    env["PGCONNECT_TIMEOUT"] = os.environ.get("PGCONNECT_TIMEOUT", "10")
    return dsn, env, app_name


def die_with_parent() -> None:
    """In the child: get SIGTERM if walvault dies, so no orphan keeps running."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def start_client(command: ClientCommand) -> subprocess.Popen[str]:
    """Start ``command`` with its environment added to ours; stdout and stderr as one pipe
    of text lines, no stdin, and death with walvault."""
    return subprocess.Popen(
        list(command.argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **command.env},
        text=True,
        errors="replace",
        bufsize=1,
        preexec_fn=die_with_parent,
    )
