"""What check and status learn from PostgreSQL, gathered once, with every failure kept as text."""

from __future__ import annotations

from dataclasses import dataclass, field

from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.postgres.connection import connect, connect_replication, describe_error
from walvault.postgres.replication import SystemIdentity, identify_system
from walvault.postgres.status import (
    ServerInfo,
    SlotInfo,
    get_slot,
    has_monitoring_privileges,
    server_info,
)
from walvault.subprocesses import streaming_dsn


@dataclass
class ReceiverRow:
    """Our receiver's row of ``pg_stat_replication``."""

    pid: int
    state: str
    sync_state: str
    sent_lsn: int | None
    write_lsn: int | None
    flush_lsn: int | None


@dataclass
class Endpoint:
    """One connection's outcome: facts, or the error text."""

    error: str | None = None
    info: ServerInfo | None = None
    identity: SystemIdentity | None = None
    monitoring: bool | None = None
    slot: SlotInfo | None = None
    receiver: ReceiverRow | None = None


@dataclass
class RemoteFacts:
    """Facts about the backup source (conninfo) and the WAL source."""

    main: Endpoint = field(default_factory=Endpoint)
    streaming: Endpoint = field(default_factory=Endpoint)
    wal_monitor: Endpoint | None = None  # only with a separate WAL source
    wal_streaming: Endpoint | None = None

    @property
    def wal_facts(self) -> Endpoint:
        """Where slot, lag and settings of the WAL source come from."""
        return self.wal_monitor if self.wal_monitor is not None else self.main


def _sql_endpoint(conninfo: str | None, server: ServerConfig, timeout: int) -> Endpoint:
    endpoint = Endpoint()
    if not conninfo:
        endpoint.error = "not configured"
        return endpoint
    try:
        with connect(conninfo, timeout=timeout) as conn:
            if timeout:
                conn.execute(f"SET statement_timeout = {int(timeout) * 1000}")
            endpoint.monitoring = has_monitoring_privileges(conn)
            endpoint.info = server_info(conn)
            if server.slot_name:
                endpoint.slot = get_slot(conn, server.slot_name)
            endpoint.receiver = receiver_row(conn, server)
    except WalvaultError as exc:
        endpoint.error = exc.message
    except Exception as exc:  # a query failing: report, keep checking
        endpoint.error = describe_error(exc, conninfo)
    return endpoint


def receiver_row(conn: object, server: ServerConfig) -> ReceiverRow | None:
    from psycopg import Connection

    from walvault.wal.names import parse_lsn

    assert isinstance(conn, Connection)
    _, _, app_name = streaming_dsn(server.wal_source_conninfo or "", server.streaming_archiver_name)
    row = conn.execute(
        "SELECT pid, state, sync_state, sent_lsn::text, write_lsn::text, flush_lsn::text "
        "FROM pg_stat_replication WHERE application_name = %s ORDER BY backend_start DESC",
        (app_name,),
    ).fetchone()
    if row is None:
        return None

    def lsn(value: object) -> int | None:
        return parse_lsn(str(value)) if value is not None else None

    return ReceiverRow(
        int(str(row[0])), str(row[1]), str(row[2]), lsn(row[3]), lsn(row[4]), lsn(row[5])
    )


def _replication_endpoint(conninfo: str | None, timeout: int) -> Endpoint:
    endpoint = Endpoint()
    if not conninfo:
        endpoint.error = "not configured"
        return endpoint
    try:
        with connect_replication(conninfo, timeout=timeout) as conn:
            endpoint.identity = identify_system(conn)
    except WalvaultError as exc:
        endpoint.error = exc.message
    except Exception as exc:
        endpoint.error = describe_error(exc, conninfo)
    return endpoint


def gather(server: ServerConfig) -> RemoteFacts:
    """Open each configured connection once (each bounded by ``check_timeout``)."""
    timeout = server.check_timeout or 30
    facts = RemoteFacts()
    facts.main = _sql_endpoint(server.conninfo, server, timeout)
    if server.streaming_archiver or server.backup_method == "postgres":
        facts.streaming = _replication_endpoint(server.streaming_conninfo, timeout)
    if server.has_separate_wal_source:
        facts.wal_monitor = _sql_endpoint(server.wal_monitoring_conninfo, server, timeout)
        facts.wal_streaming = _replication_endpoint(server.wal_source_conninfo, timeout)
    return facts
