"""The streaming clients of a server (``pg_stat_replication`` with their physical slots)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from walvault.errors import WalvaultError
from walvault.postgres.status import Conn, has_monitoring_privileges
from walvault.wal.names import parse_lsn

#: ``--target`` values: every client, only standbys (they replay), only WAL streamers.
ALL = "all"
HOT_STANDBY = "hot-standby"
WAL_STREAMER = "wal-streamer"
TARGETS = (ALL, HOT_STANDBY, WAL_STREAMER)

_TARGET_FILTERS = {
    ALL: "",
    HOT_STANDBY: " AND r.replay_lsn IS NOT NULL",
    WAL_STREAMER: " AND r.replay_lsn IS NULL",
}

# Logical walsenders (logical slots) are not streaming clients of the physical kind: left out.
_CLIENTS_QUERY = (
    "SELECT r.pid, r.usename::text, r.application_name, host(r.client_addr), "
    "r.client_hostname, r.client_port, r.backend_start, r.backend_xmin::text, r.state, "
    "r.sent_lsn::text, r.write_lsn::text, r.flush_lsn::text, r.replay_lsn::text, "
    "r.write_lag, r.flush_lag, r.replay_lag, r.sync_priority, r.sync_state, r.reply_time, "
    "rs.slot_name::text "
    "FROM pg_stat_replication r "
    "LEFT JOIN pg_replication_slots rs ON r.pid = rs.active_pid "
    "WHERE (rs.slot_type IS NULL OR rs.slot_type = 'physical'){filter} "
    "ORDER BY r.sync_state DESC, r.sync_priority, r.pid"
)

_POSITION_QUERY = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() "
    "THEN COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) "
    "ELSE pg_current_wal_lsn() END::text"
)


@dataclass(frozen=True)
class StreamingClient:
    """One row of ``pg_stat_replication``; LSNs as integers, ``None`` where PostgreSQL has none."""

    pid: int
    usename: str | None
    application_name: str
    client_addr: str | None
    client_hostname: str | None
    client_port: int | None
    backend_start: datetime.datetime | None
    backend_xmin: str | None
    state: str | None
    sent_lsn: int | None
    write_lsn: int | None
    flush_lsn: int | None
    replay_lsn: int | None
    write_lag: datetime.timedelta | None
    flush_lag: datetime.timedelta | None
    replay_lag: datetime.timedelta | None
    sync_priority: int | None
    sync_state: str | None
    reply_time: datetime.datetime | None
    slot_name: str | None

    @property
    def is_standby(self) -> bool:
        """A standby replays WAL; a client that never reports a replay position streams only."""
        return self.replay_lsn is not None

    @property
    def kind(self) -> str:
        """``standby`` or ``WAL streamer`` (Barman's words)."""
        return "standby" if self.is_standby else "WAL streamer"


@dataclass(frozen=True)
class ReplicationStats:
    """The server's position and its streaming clients, as seen in one look."""

    in_recovery: bool
    current_lsn: int | None
    clients: tuple[StreamingClient, ...]


def _lsn(value: object) -> int | None:
    return parse_lsn(str(value)) if value is not None else None


def _int(value: object) -> int | None:
    return int(str(value)) if value is not None else None


def _str(value: object) -> str | None:
    return str(value) if value is not None else None


def _timestamp(value: object) -> datetime.datetime | None:
    return value if isinstance(value, datetime.datetime) else None


def _interval(value: object) -> datetime.timedelta | None:
    return value if isinstance(value, datetime.timedelta) else None


def _client(row: tuple[object, ...]) -> StreamingClient:
    return StreamingClient(
        pid=int(str(row[0])),
        usename=_str(row[1]),
        application_name=str(row[2] or ""),
        client_addr=_str(row[3]),
        client_hostname=_str(row[4]),
        client_port=_int(row[5]),
        backend_start=_timestamp(row[6]),
        backend_xmin=_str(row[7]),
        state=_str(row[8]),
        sent_lsn=_lsn(row[9]),
        write_lsn=_lsn(row[10]),
        flush_lsn=_lsn(row[11]),
        replay_lsn=_lsn(row[12]),
        write_lag=_interval(row[13]),
        flush_lag=_interval(row[14]),
        replay_lag=_interval(row[15]),
        sync_priority=_int(row[16]),
        sync_state=_str(row[17]),
        reply_time=_timestamp(row[18]),
        slot_name=_str(row[19]),
    )


def replication_stats(conn: Conn, target: str = ALL) -> ReplicationStats:
    """The streaming clients of the server behind ``conn`` (filtered by ``target``).

    Needs monitoring privileges: without them PostgreSQL hides the positions of other users'
    clients, so a :class:`WalvaultError` is raised instead of a misleading answer. The
    server's position is read after the clients, so a client is never shown ahead of it.
    """
    if target not in _TARGET_FILTERS:
        raise WalvaultError(f"invalid target '{target}' (accepted: {', '.join(TARGETS)})")
    if not has_monitoring_privileges(conn):
        raise WalvaultError(
            "replication-status requires superuser rights or monitoring privileges: grant the "
            "user pg_monitor (or both pg_read_all_settings and pg_read_all_stats)"
        )
    rows = conn.execute(_CLIENTS_QUERY.format(filter=_TARGET_FILTERS[target])).fetchall()
    position = conn.execute(_POSITION_QUERY).fetchone()
    assert position is not None
    return ReplicationStats(
        in_recovery=bool(position[0]),
        current_lsn=_lsn(position[1]),
        clients=tuple(_client(row) for row in rows),
    )
