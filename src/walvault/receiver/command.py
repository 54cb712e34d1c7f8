"""The pg_receivewal command line: built in one place, with the password kept out of argv."""

from __future__ import annotations

from dataclasses import dataclass

from walvault.config import ServerConfig
from walvault.subprocesses import ClientCommand, client_connection


@dataclass(frozen=True)
class ReceiverCommand(ClientCommand):
    """argv and the extra environment for pg_receivewal."""

    application_name: str


def build_receiver_command(
    server: ServerConfig, program_path: str, *, synchronous: bool
) -> ReceiverCommand:
    """pg_receivewal's arguments for ``server``."""
    conninfo = server.wal_source_conninfo
    assert conninfo, "a server without a streaming conninfo is disabled"
    dsn, env, app_name = client_connection(server, conninfo, server.streaming_archiver_name)
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
    env.setdefault("PGAPPNAME", app_name)
    return ReceiverCommand(tuple(argv), env, app_name)
