"""``replication-status``: a server's streaming clients, in Barman's full and minimal shapes."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from walvault.cli.context import Context, require_enabled
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.humanize import pretty_size
from walvault.postgres.replication_stats import (
    ALL,
    HOT_STANDBY,
    TARGETS,
    WAL_STREAMER,
    ReplicationStats,
    StreamingClient,
)
from walvault.wal.names import format_lsn

BACKUP_HOST = "backup-host"
WAL_HOST = "wal-host"
SOURCES = (BACKUP_HOST, WAL_HOST)

#: What the clients are called for each ``--target`` (Barman's words).
TITLES = {
    ALL: "streaming clients",
    HOT_STANDBY: "hot standby servers",
    WAL_STREAMER: "WAL streamers",
}


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "replication-status", help="show the streaming clients (standbys, WAL streamers)"
    )
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.add_argument("--minimal", action="store_true", help="one line per client")
    p.add_argument(
        "--target", choices=TARGETS, default=ALL, help="which clients to list (default: all)"
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        default=BACKUP_HOST,
        help="ask the server of 'conninfo' (backup-host, default) or the WAL source "
        "(wal-host: wal_conninfo, else wal_streaming_conninfo, else conninfo)",
    )
    p.set_defaults(func=replication_status)


def replication_status(ctx: Context, args: argparse.Namespace) -> int:
    """Show each server's clients; a server that fails says why and the others still show."""
    explicit = args.server_name != ["all"] and "all" not in args.server_name
    failed = False
    documents: dict[str, Any] = {}
    for server in ctx.servers(args.server_name):
        if not explicit and not server.active:
            ctx.info(f"Skipping inactive server '{server.name}'")
            continue
        try:
            stats = _read(server, args.target, args.source)
        except WalvaultError as exc:
            failed = True
            ctx.error(exc.message)
            continue
        if ctx.output_format == "json":
            documents[server.name] = _as_json(stats, args.target, args.source)
        elif args.minimal:
            _render_minimal(ctx, server.name, args.target, stats)
        else:
            _render_full(ctx, server.name, args.target, stats)
    if ctx.output_format == "json":
        ctx.emit_json(documents)
    return 1 if failed else 0


def _read(server: ServerConfig, target: str, source: str) -> ReplicationStats:
    """Connect to the chosen host of ``server`` and read its streaming clients."""
    from walvault.postgres.connection import connect
    from walvault.postgres.replication_stats import replication_stats

    require_enabled(server)
    if source == WAL_HOST:
        conninfo, which = server.wal_monitoring_conninfo, _wal_host_option(server)
    else:
        conninfo, which = server.conninfo, "conninfo"
    if not conninfo:
        raise WalvaultError(f"server '{server.name}' has no {which} configured")
    try:
        with connect(conninfo, timeout=server.check_timeout) as conn:
            return replication_stats(conn, target)
    except WalvaultError as exc:
        raise WalvaultError(
            f"replication-status of server '{server.name}' ({which}): {exc}"
        ) from None


def _wal_host_option(server: ServerConfig) -> str:
    if server.wal_conninfo:
        return "wal_conninfo"
    return "wal_streaming_conninfo" if server.wal_streaming_conninfo else "conninfo"


# ------------------------------------------------------------------------------ pure rendering


def lsn_text(lsn: int | None) -> str:
    """An LSN as PostgreSQL prints it, or ``-`` when unknown."""
    return format_lsn(lsn) if lsn is not None else "-"


def lsn_diff(lsn: int | None, current: int | None) -> int | None:
    """Bytes from the server's position to ``lsn`` (negative: the client is behind)."""
    if lsn is None or current is None:
        return None
    return lsn - current


def sync_stage(client: StreamingClient, current: int | None) -> str:
    """How far the client has gone with the server's latest WAL (Barman's stages).

    A WAL streamer has three stages (``1-safe``, WAL sent, remote write); a standby adds remote
    flush (``2-safe``) and replay (hot standby).
    """
    top = 5 if client.is_standby else 3
    if client.is_standby:
        if lsn_diff(client.replay_lsn, current) == 0:
            return "5/5 Hot standby (max)"
        if lsn_diff(client.flush_lsn, current) == 0:
            return "4/5 2-safe"
    if lsn_diff(client.write_lsn, current) == 0:
        return f"3/{top} Remote write"
    if lsn_diff(client.sent_lsn, current) == 0:
        return f"2/{top} WAL Sent (min)"
    return f"1/{top} 1-safe"


def client_title(client: StreamingClient) -> str:
    """``Async WAL streamer``, ``#1 Sync standby``..."""
    state = (client.sync_state or "unknown").capitalize()
    if client.sync_state == "sync":
        return f"#{client.sync_priority} {state} {client.kind}"
    return f"{state} {client.kind}"


def _lsn_line(label: str, lsn: int | None, current: int | None) -> str | None:
    if lsn is None:
        return None
    diff = lsn_diff(lsn, current)
    shown = pretty_size(diff) if diff is not None else "unknown"
    return f"     {label:<11}: {format_lsn(lsn)} (diff: {shown})"


def full_lines(name: str, target: str, stats: ReplicationStats) -> list[str]:
    """The full (default) output for one server."""
    title = TITLES[target]
    role = "standby" if stats.in_recovery else "master"
    lines = [
        f"Status of {title} for server '{name}':",
        f"  Current LSN on {role}: {lsn_text(stats.current_lsn)}",
    ]
    if not stats.clients:
        lines.append(f"  No {title} attached")
        return lines
    lines.append(f"  Number of {title}: {len(stats.clients)}")
    current = stats.current_lsn
    for number, client in enumerate(stats.clients, start=1):
        lines += [
            "",
            f"  {number}. {client_title(client)}",
            f"     Application name: {client.application_name}",
            f"     Sync stage      : {sync_stage(client, current)}",
        ]
        if client.client_addr:
            lines += [
                "     Communication   : TCP/IP",
                f"     IP Address      : {client.client_addr} / Port: {client.client_port} / "
                f"Host: {client.client_hostname or '-'}",
            ]
        else:
            lines.append("     Communication   : Unix domain socket")
        lines += [
            f"     User name       : {client.usename or '-'}",
            f"     Current state   : {client.state or '-'} ({client.sync_state or '-'})",
        ]
        if client.slot_name:
            lines.append(f"     Replication slot: {client.slot_name}")
        lines += [
            f"     WAL sender PID  : {client.pid}",
            f"     Started at      : {client.backend_start or '-'}",
        ]
        if client.backend_xmin:
            lines.append(f"     Standby's xmin  : {client.backend_xmin}")
        for label, lsn in (
            ("Sent LSN", client.sent_lsn),
            ("Write LSN", client.write_lsn),
            ("Flush LSN", client.flush_lsn),
            ("Replay LSN", client.replay_lsn),
        ):
            line = _lsn_line(label, lsn, current)
            if line:
                lines.append(line)
    return lines


def minimal_lines(name: str, target: str, stats: ReplicationStats) -> list[str]:
    """``--minimal``: a header and one line per client."""
    role = "standby" if stats.in_recovery else "master"
    title = TITLES[target]
    lines = [
        f"{title[0].upper()}{title[1:]} for {role} '{name}' (LSN @ {lsn_text(stats.current_lsn)}):"
    ]
    if not stats.clients:
        lines.append(f"  No {title} attached")
    for number, client in enumerate(stats.clients, start=1):
        where = f"{client.usename or '-'}@{client.client_addr or 'socket'}"
        tail = f"P:{client.sync_priority if client.sync_priority is not None else '-'} "
        tail += f"AN:{client.application_name}"
        if client.is_standby:
            letter = (client.sync_state or "?")[0].upper()
            lines.append(
                f"  {number}. {letter}) {where} S:{lsn_text(client.sent_lsn)} "
                f"F:{lsn_text(client.flush_lsn)} R:{lsn_text(client.replay_lsn)} {tail}"
            )
        else:
            lines.append(
                f"  {number}. W) {where} S:{lsn_text(client.sent_lsn)} "
                f"W:{lsn_text(client.write_lsn)} {tail}"
            )
    return lines


def _render_full(ctx: Context, name: str, target: str, stats: ReplicationStats) -> None:
    for line in full_lines(name, target, stats):
        ctx.result(line)


def _render_minimal(ctx: Context, name: str, target: str, stats: ReplicationStats) -> None:
    for line in minimal_lines(name, target, stats):
        ctx.result(line)


def _seconds(value: datetime.timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _as_json(stats: ReplicationStats, target: str, source: str) -> dict[str, Any]:
    """The JSON document of one server: positions as text and differences in bytes."""
    current = stats.current_lsn
    clients = []
    for client in stats.clients:
        entry: dict[str, Any] = {
            "kind": client.kind,
            "application_name": client.application_name,
            "sync_stage": sync_stage(client, current),
            "sync_state": client.sync_state,
            "sync_priority": client.sync_priority,
            "communication": "TCP/IP" if client.client_addr else "Unix domain socket",
            "client_addr": client.client_addr,
            "client_port": client.client_port,
            "client_hostname": client.client_hostname,
            "usename": client.usename,
            "state": client.state,
            "slot_name": client.slot_name,
            "wal_sender_pid": client.pid,
            "backend_start": _iso(client.backend_start),
            "backend_xmin": client.backend_xmin,
            "reply_time": _iso(client.reply_time),
            "write_lag_seconds": _seconds(client.write_lag),
            "flush_lag_seconds": _seconds(client.flush_lag),
            "replay_lag_seconds": _seconds(client.replay_lag),
        }
        for key, lsn in (
            ("sent", client.sent_lsn),
            ("write", client.write_lsn),
            ("flush", client.flush_lsn),
            ("replay", client.replay_lsn),
        ):
            entry[f"{key}_lsn"] = format_lsn(lsn) if lsn is not None else None
            entry[f"{key}_diff_bytes"] = lsn_diff(lsn, current)
        clients.append(entry)
    return {
        "target": target,
        "source": source,
        "in_recovery": stats.in_recovery,
        "current_lsn": format_lsn(current) if current is not None else None,
        "clients": clients,
    }
