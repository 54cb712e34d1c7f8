"""The pg_receivewal command line: built in one place, with the password kept out of argv."""

from __future__ import annotations

import os
from dataclasses import dataclass

from psycopg.conninfo import make_conninfo

from walvault.config import ServerConfig
from walvault.conninfo import parse_conninfo


@dataclass(frozen=True)
class ReceiverCommand:
    """argv and the extra environment for pg_receivewal."""

    argv: tuple[str, ...]
    env: dict[str, str]
    application_name: str

    def shown(self) -> str:
        """The command line as it may be logged (it never holds a password)."""
        return " ".join(self.argv)


def streaming_dsn(conninfo: str, application_name: str) -> tuple[str, dict[str, str], str]:
    """The replication DSN, the environment carrying its password, and the application_name.

    ``replication=true`` and ``application_name`` are added only where the user did not set
    them; ``options`` and everything else the user wrote are kept as they are. The password
    travels in ``PGPASSWORD`` so that it does not show in ``ps``.
    """
    params = parse_conninfo(conninfo)
    params.setdefault("replication", "true")
    params.setdefault("application_name", application_name)
    env: dict[str, str] = {}
    if "password" in params:
        env["PGPASSWORD"] = params.pop("password")
    return make_conninfo("", **params), env, params["application_name"]


def build_receiver_command(
    server: ServerConfig, program_path: str, *, synchronous: bool
) -> ReceiverCommand:
    """pg_receivewal's arguments for ``server``."""
    conninfo = server.wal_source_conninfo
    assert conninfo, "a server without a streaming conninfo is disabled"
    dsn, env, app_name = streaming_dsn(conninfo, server.streaming_archiver_name)
    argv = [
        program_path,
        f"--dbname={dsn}",
        "--verbose",
        "--no-loop",
        "--no-password",
        f"--directory={server.streaming_wals_directory}",
        f"--status-interval={server.streaming_status_interval}",
    ]
    if server.slot_name:
        argv.append(f"--slot={server.slot_name}")
    if synchronous:
        argv.append("--synchronous")
    env["PATH"] = server.search_path
    env.setdefault("PGAPPNAME", app_name)
    env["PGCONNECT_TIMEOUT"] = os.environ.get("PGCONNECT_TIMEOUT", "10")
    return ReceiverCommand(tuple(argv), env, app_name)
