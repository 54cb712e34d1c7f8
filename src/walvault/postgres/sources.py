"""The WAL source of a server, inspected and verified before anything streams from it.

``wal_streaming_conninfo`` (else ``streaming_conninfo``) is the replication source;
``wal_conninfo`` (else ``wal_streaming_conninfo``, else ``conninfo``) monitors it. Both must reach
the same cluster as ``conninfo``, and the monitoring user needs monitoring privileges.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.identity import read_identity, write_identity
from walvault.postgres.connection import connect, connect_replication, describe_error
from walvault.postgres.replication import SystemIdentity, identify_system, timeline_history
from walvault.postgres.status import ServerInfo, SlotInfo, get_slot, has_monitoring_privileges
from walvault.postgres.status import server_info as read_server_info
from walvault.wal.history import HistoryEntry, history_name, parse_history
from walvault.wal.names import is_segment


@dataclass(frozen=True)
class WalSource:
    """What the WAL source told us."""

    identity: SystemIdentity
    info: ServerInfo
    slot: SlotInfo | None


def inspect_wal_source(server: ServerConfig, timeout: int = 10) -> WalSource:
    """Connect to the WAL source (replication and monitoring) and verify it.

    Raises :class:`WalvaultError` naming the problem: a connection failure, missing monitoring
    privileges, or sources that do not reach the same cluster as ``conninfo``.
    """
    stream_dsn = server.wal_source_conninfo
    monitor_dsn = server.wal_monitoring_conninfo
    if not stream_dsn or not monitor_dsn or not server.conninfo:
        raise WalvaultError(f"server '{server.name}' has no streaming connection configured")
    with connect_replication(stream_dsn, timeout=timeout) as repl:
        identity = identify_system(repl)
    with connect(monitor_dsn, timeout=timeout) as conn:
        if not has_monitoring_privileges(conn):
            which = "wal_conninfo" if server.wal_conninfo else "conninfo"
            raise WalvaultError(
                f"the user of '{which}' of server '{server.name}' lacks monitoring privileges: "
                "grant it pg_monitor (or both pg_read_all_settings and pg_read_all_stats), "
                "or use a superuser"
            )
        info = read_server_info(conn)
        slot = get_slot(conn, server.slot_name) if server.slot_name else None
    if info.system_identifier != identity.system_identifier:
        raise WalvaultError(
            f"the monitoring connection of server '{server.name}' reaches system "
            f"{info.system_identifier} but the streaming connection reaches system "
            f"{identity.system_identifier}: they must be the same cluster"
        )
    if server.has_separate_wal_source and monitor_dsn != server.conninfo:
        with connect(server.conninfo, timeout=timeout) as conn:
            backup_info = read_server_info(conn)
        if backup_info.system_identifier != identity.system_identifier:
            raise WalvaultError(
                f"wal_streaming_conninfo/wal_conninfo of server '{server.name}' reach system "
                f"{identity.system_identifier} but conninfo reaches system "
                f"{backup_info.system_identifier}: they must point at the same cluster "
                "(a primary and its standby share one system identifier)"
            )
    return WalSource(identity, info, slot)


def check_or_record_identity(server: ServerConfig, source: WalSource) -> None:
    """Record the system identifier on first contact; refuse a different cluster afterwards."""
    stored = read_identity(server)
    systemid = source.identity.system_identifier
    if stored is None:
        write_identity(server, systemid, source.info.major)
        return
    if stored.get("systemid") != systemid:
        raise WalvaultError(
            f"the system identifier of the PostgreSQL server ({systemid}) differs from the one "
            f"stored in {server.identity_path} ({stored.get('systemid')}): is the "
            "configuration pointing at another cluster?"
        )


def source_history(
    server: ServerConfig, tli: int, timeout: int = 10
) -> tuple[bytes, list[HistoryEntry]]:
    """The history file of timeline ``tli`` on the WAL source: its bytes and its entries.

    Timeline 1 has none: ``(b"", [])``.  A file PostgreSQL would not accept is an error.
    """
    if tli == 1:
        return b"", []
    conninfo = server.wal_source_conninfo
    if not conninfo:
        raise WalvaultError(f"server '{server.name}' has no streaming connection configured")
    with connect_replication(conninfo, timeout=timeout) as repl:
        content = timeline_history(repl, tli)
    try:
        return content, parse_history(content, timeline=tli)
    except ValueError as exc:
        raise WalvaultError(
            f"the WAL source of server '{server.name}' sent an invalid {history_name(tli)}: {exc}"
        ) from None


def source_wal_files(server: ServerConfig, timeout: int = 10) -> set[str]:
    """The WAL segment files the WAL source still has in ``pg_wal`` (``pg_ls_waldir()``).

    The monitoring user needs ``pg_monitor`` (or superuser): ``pg_ls_waldir`` is granted to
    nobody else by default.  This, not the slot's ``restart_lsn``, tells what the server can
    still send: a pg_receivewal that asked for removed WAL drags the slot's ``restart_lsn``
    back to that position.
    """
    monitor_dsn = server.wal_monitoring_conninfo
    if not monitor_dsn:
        raise WalvaultError(f"server '{server.name}' has no monitoring connection configured")
    which = "wal_conninfo" if server.wal_conninfo else "conninfo"
    with connect(monitor_dsn, timeout=timeout) as conn:
        try:
            rows = conn.execute("SELECT name FROM pg_ls_waldir()").fetchall()
        except psycopg.errors.InsufficientPrivilege:
            raise WalvaultError(
                f"the user of '{which}' of server '{server.name}' may not list the server's "
                "WAL (pg_ls_waldir): grant it pg_monitor, or use a superuser"
            ) from None
        except psycopg.Error as exc:
            raise WalvaultError(
                f"cannot list the WAL of server '{server.name}': {describe_error(exc, monitor_dsn)}"
            ) from None
    return {str(row[0]) for row in rows if is_segment(str(row[0]))}
