"""What walvault reads from a running server over a normal connection: settings, slots, LSNs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from walvault.wal.names import parse_lsn

if TYPE_CHECKING:  # psycopg is imported by whoever opens the connection
    import psycopg


@dataclass(frozen=True)
class SlotInfo:
    """A row of ``pg_replication_slots``."""

    slot_name: str
    slot_type: str
    active: bool
    active_pid: int | None
    restart_lsn: int | None
    wal_status: str | None


@dataclass(frozen=True)
class ServerInfo:
    """The facts about a server that receive-wal, check and status need."""

    version_num: int
    system_identifier: str
    in_recovery: bool
    timeline: int
    current_lsn: int | None
    wal_segment_size: int
    wal_level: str
    synchronous_standby_names: str
    summarize_wal: str | None = None  # None before PostgreSQL 17

    @property
    def major(self) -> int:
        """The major version (15 for 150018)."""
        return self.version_num // 10000


Conn: TypeAlias = "psycopg.Connection[tuple[object, ...]]"


def _one(conn: Conn, query: str) -> tuple[object, ...]:
    row = conn.execute(query).fetchone()
    assert row is not None, query
    return row


def server_info(conn: Conn) -> ServerInfo:
    """Read version, identity, role, position and WAL settings."""
    row = _one(
        conn,
        "SELECT current_setting('server_version_num')::int, "
        "(SELECT system_identifier::text FROM pg_control_system()), "
        "pg_is_in_recovery(), "
        "CASE WHEN pg_is_in_recovery() THEN "
        "  COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text "
        "ELSE pg_current_wal_lsn()::text END, "
        "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
        "current_setting('wal_level'), current_setting('synchronous_standby_names'), "
        "(SELECT timeline_id FROM pg_control_checkpoint()), "
        "current_setting('summarize_wal', true)",
    )
    lsn = str(row[3]) if row[3] is not None else None
    return ServerInfo(
        version_num=int(str(row[0])),
        system_identifier=str(row[1]),
        in_recovery=bool(row[2]),
        timeline=int(str(row[7])),
        current_lsn=parse_lsn(lsn) if lsn else None,
        wal_segment_size=int(str(row[4])),
        wal_level=str(row[5]),
        synchronous_standby_names=str(row[6]),
        summarize_wal=str(row[8]) if row[8] is not None else None,
    )


def get_slot(conn: Conn, slot_name: str) -> SlotInfo | None:
    """The slot named ``slot_name``, or None."""
    row = conn.execute(
        "SELECT slot_name::text, slot_type, active, active_pid, restart_lsn::text, wal_status "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot_name,),
    ).fetchone()
    if row is None:
        return None
    return SlotInfo(
        slot_name=str(row[0]),
        slot_type=str(row[1]),
        active=bool(row[2]),
        active_pid=int(str(row[3])) if row[3] is not None else None,
        restart_lsn=parse_lsn(str(row[4])) if row[4] is not None else None,
        wal_status=str(row[5]) if row[5] is not None else None,
    )


def has_monitoring_privileges(conn: Conn) -> bool:
    """Superuser, or ``pg_monitor``, or both ``pg_read_all_settings`` and ``pg_read_all_stats``."""
    row = _one(
        conn,
        "SELECT usesuper OR pg_has_role(CURRENT_USER, 'pg_monitor', 'MEMBER') OR "
        "(pg_has_role(CURRENT_USER, 'pg_read_all_settings', 'MEMBER') AND "
        " pg_has_role(CURRENT_USER, 'pg_read_all_stats', 'MEMBER')) "
        "FROM pg_user WHERE usename = CURRENT_USER",
    )
    return bool(row[0])
