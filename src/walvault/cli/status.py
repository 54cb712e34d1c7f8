"""``status``: Barman's fields plus what Barman leaves empty for streaming (receiver, lag, gaps)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from walvault.cli.context import Context
from walvault.config import ServerConfig
from walvault.humanize import pretty_size

if TYPE_CHECKING:
    from walvault.checks.facts import RemoteFacts


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser("status", help="show the state of servers")
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.set_defaults(func=status)


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    seconds = int(time.time() - timestamp)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    return f"{stamp} ({seconds} s ago)"


Row = tuple[str, str, str]


def _guarded(key: str, description: str, rows: Callable[[], list[Row]]) -> list[Row]:
    """``rows()``, or one row saying what could not be read and why (the others still show)."""
    from walvault.errors import WalvaultError, describe_os_error

    try:
        return rows()
    except OSError as exc:
        return [(key, description, f"cannot read: {describe_os_error(exc)}")]
    except WalvaultError as exc:
        return [(key, description, f"cannot read: {exc.message}")]


def collect(server: ServerConfig) -> list[Row]:
    """(key, description, value) rows for one server; what cannot be read is named in its row."""
    from walvault.checks.facts import gather

    rows: list[Row] = [
        ("description", "Description", server.description or ""),
        ("active", "Active", str(server.active)),
        ("disabled", "Disabled", str(server.disabled)),
    ]
    if server.disabled:
        rows += [("msg", "Configuration problem", m) for m in server.messages]
        return rows
    facts = gather(server)
    rows += _postgres_rows(server, facts)
    rows += _guarded("backups", "No. of available backups", lambda: _backup_rows(server))
    if server.streaming_archiver:
        rows += _guarded("receiver", "receive-wal", lambda: _receiver_rows(server, facts))
    rows += _guarded("last_archived_wal", "Last archived WAL", lambda: _last_archived_row(server))
    rows += _guarded("archive_size", "WAL archive", lambda: _archive_size_row(server))
    rows += _guarded("backlog_streaming", "Waiting in streaming/", lambda: _backlog_rows(server))
    rows += _guarded("gaps", "Recorded WAL gaps", lambda: _gap_rows(server))
    rows += _guarded("timeline_forks", "Timeline forks", lambda: _fork_rows(server))
    rows += _guarded("archiver_errors", "Files in errors/", lambda: _error_rows(server))
    return rows


def _postgres_rows(server: ServerConfig, facts: RemoteFacts) -> list[Row]:
    from walvault.wal.names import format_lsn

    rows: list[Row] = []
    info = facts.main.info
    if info is None:
        rows.append(("postgresql", "PostgreSQL", f"not reachable: {facts.main.error}"))
    else:
        rows.append(("pg_version", "PostgreSQL version", f"{info.version_num}"))
        state = "in archive recovery" if info.in_recovery else "in production"
        rows.append(("cluster_state", "Cluster state", state))
        if info.current_lsn is not None:
            rows.append(("current_lsn", "Current WAL position", format_lsn(info.current_lsn)))
    policy = str(server.retention_policy) if server.retention_policy else None
    rows.append(
        (
            "retention_policies",
            "Retention policies",
            f"enforced (retention: {policy})" if policy else "not enforced",
        )
    )
    return rows


def _backup_rows(server: ServerConfig) -> list[Row]:
    from walvault.backup.info import DONE, scan_backups

    found, problems = scan_backups(server)
    done = [b for b in found if b.status == DONE]
    rows: list[Row] = [
        ("backups", "No. of available backups", str(len(done))),
        ("first_backup", "First available backup", done[0].backup_id if done else "None"),
        ("last_backup", "Last available backup", done[-1].backup_id if done else "None"),
    ]
    ok = "satisfied" if len(done) >= server.minimum_redundancy else "FAILED"
    rows.append(
        (
            "minimum_redundancy",
            "Minimum redundancy requirements",
            f"{ok} ({len(done)}/{server.minimum_redundancy})",
        )
    )
    rows += [("bad_backup", "Unusable backup metadata", p.message) for p in problems]
    return rows


def _receiver_rows(server: ServerConfig, facts: RemoteFacts) -> list[Row]:
    from walvault.checks import local as L
    from walvault.errors import StateFileError
    from walvault.receiver.state import load_state
    from walvault.wal.names import format_lsn

    rows: list[Row] = []
    try:
        state_ = load_state(server, strict=True)
    except StateFileError as exc:
        rows.append(("receiver_record", "receive-wal record", f"cannot read: {exc.message}"))
        state_ = load_state(server)
    pid = L.receiver_pid(server)
    if pid:
        uptime = int(time.time() - state_.started_at) if state_.started_at else 0
        receiver = f"running, PID {pid}, child PID {state_.child_pid}, up {uptime} s"
    else:
        receiver = "NOT RUNNING"
    rows.append(("receiver", "receive-wal", receiver))
    rows.append(("receiver_started", "receive-wal started", _ago(state_.started_at)))
    rows.append(("receiver_restarts", "receive-wal restarts", str(state_.restarts)))
    rows.append(
        ("receiver_failures", "receive-wal failures in a row", str(state_.consecutive_failures))
    )
    rows.append(("synchronous", "Synchronous streaming", str(state_.synchronous)))
    if state_.exit_reason:
        rows.append(("last_exit", "Last exit of receive-wal", state_.exit_reason))
    if state_.cause and state_.exit_code and state_.cause != state_.exit_reason:
        rows.append(("last_error", "Cause of the last failure", state_.cause))
    for line in state_.last_lines[-5:]:
        rows.append(("last_line", "pg_receivewal said", line))
    wal = facts.wal_facts
    row = wal.receiver
    if row is not None:
        rows.append(("streamed_lsn", "Streamed (received) LSN", format_lsn(row.write_lsn or 0)))
        rows.append(("flushed_lsn", "Flushed LSN", format_lsn(row.flush_lsn or 0)))
        if wal.info and wal.info.current_lsn is not None:
            from walvault.checks.runner import receiver_lag

            lag = receiver_lag(wal.info.current_lsn, row)
            rows.append(("streaming_lag", "Streaming lag (behind current LSN)", lag.summary()))
        rows.append(("sync_state", "Replication sync state", row.sync_state))
    elif wal.error:
        rows.append(("streaming", "Streaming client", f"unknown: {wal.error}"))
    else:
        rows.append(("streaming", "Streaming client", "not connected"))
    return rows


def _last_archived_row(server: ServerConfig) -> list[Row]:
    from walvault.archive.walstore import WalArchive

    archive = WalArchive(server)
    newest = archive.newest_segment()
    if not newest:
        return [("last_archived_wal", "Last archived WAL", "No WAL segment archived yet")]
    stored = archive.find(newest)
    mtime = stored.info.mtime if stored is not None else None
    return [("last_archived_wal", "Last archived WAL", f"{newest}, at {_ago(mtime)}")]


def _archive_size_row(server: ServerConfig) -> list[Row]:
    from walvault.checks import local as L

    count, size = L.wal_archive_total(server)
    return [("archive_size", "WAL archive", f"{count} files, {pretty_size(size)}")]


def _backlog_rows(server: ServerConfig) -> list[Row]:
    from walvault.checks import local as L

    waiting, incoming = L.staged_count(server)
    return [
        ("backlog_streaming", "Waiting in streaming/", str(waiting)),
        ("backlog_incoming", "Waiting in incoming/", str(incoming)),
    ]


def _gap_rows(server: ServerConfig) -> list[Row]:
    from walvault.receiver.gaps import load_gaps

    gaps = load_gaps(server)
    rows: list[Row] = [("gaps", "Recorded WAL gaps", str(len(gaps)))]
    return rows + [("gap", "WAL gap", gap.describe()) for gap in gaps]


def _error_rows(server: ServerConfig) -> list[Row]:
    from walvault.checks import local as L

    errors = L.summarise_errors(server)
    return [("archiver_errors", "Files in errors/", errors or "none")]


def _fork_rows(server: ServerConfig) -> list[Row]:
    """Recorded timeline forks (a bad record file is one row naming it)."""
    from walvault.receiver.forks import load_forks

    forks = load_forks(server)
    rows: list[Row] = [("timeline_forks", "Timeline forks", str(len(forks)))]
    return rows + [("timeline_fork", "Timeline fork", fork.describe()) for fork in forks]


def rows_as_json(rows: list[Row]) -> dict[str, Any]:
    """``{key: {"description": ..., "message": ...}}``; repeated rows (lines, gaps) become
    lists of messages."""
    entry: dict[str, Any] = {}
    for key, description, value in rows:
        if key in entry:
            previous = entry[key]["message"]
            values = previous if isinstance(previous, list) else [previous]
            entry[key] = {"description": description, "message": [*values, value]}
        else:
            entry[key] = {"description": description, "message": value}
    return entry


def status(ctx: Context, args: argparse.Namespace) -> int:
    """Print the status of each server."""
    servers = ctx.servers(args.server_name)
    if ctx.output_format == "json":
        ctx.emit_json({server.name: rows_as_json(collect(server)) for server in servers})
        return 0
    for server in servers:
        ctx.result(f"Server {server.name}:")
        for _key, description, value in collect(server):
            ctx.result(f"\t{description}: {value}")
    return 0
