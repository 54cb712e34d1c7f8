"""``status``: Barman's fields plus what Barman leaves empty for streaming (receiver, lag, gaps)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from walvault.cli.context import Context
from walvault.config import ServerConfig


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


def collect(server: ServerConfig) -> list[tuple[str, str, str]]:
    """(key, description, value) rows for one server."""
    from walvault.archive.layout import newest_archived_segment
    from walvault.checks import local as L
    from walvault.checks.facts import gather
    from walvault.receiver.gaps import load_gaps
    from walvault.receiver.state import load_state
    from walvault.wal.names import format_lsn

    rows: list[tuple[str, str, str]] = [
        ("description", "Description", server.description or ""),
        ("active", "Active", str(server.active)),
        ("disabled", "Disabled", str(server.disabled)),
    ]
    if server.disabled:
        rows += [("msg", "Configuration problem", m) for m in server.messages]
        return rows
    facts = gather(server)
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
    found = L.backups(server)
    done = [b for b in found if b[1] == "DONE"]
    rows.append(("backups", "No. of available backups", str(len(done))))
    rows.append(("first_backup", "First available backup", done[0][0] if done else "None"))
    rows.append(("last_backup", "Last available backup", done[-1][0] if done else "None"))
    ok = "satisfied" if len(done) >= server.minimum_redundancy else "FAILED"
    rows.append(
        (
            "minimum_redundancy",
            "Minimum redundancy requirements",
            f"{ok} ({len(done)}/{server.minimum_redundancy})",
        )
    )
    if server.streaming_archiver:
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
                lag = max(wal.info.current_lsn - (row.write_lsn or 0), 0)
                rows.append(("lag_bytes", "Streaming lag (bytes behind current LSN)", str(lag)))
            rows.append(("sync_state", "Replication sync state", row.sync_state))
        elif wal.error:
            rows.append(("streaming", "Streaming client", f"unknown: {wal.error}"))
        else:
            rows.append(("streaming", "Streaming client", "not connected"))
    newest = newest_archived_segment(server)
    if newest:
        path = os.path.join(server.wals_directory, newest[:16], newest)
        try:
            mtime: float | None = os.path.getmtime(path)
        except OSError:
            mtime = None
        rows.append(("last_archived_wal", "Last archived WAL", f"{newest}, at {_ago(mtime)}"))
    else:
        rows.append(("last_archived_wal", "Last archived WAL", "No WAL segment archived yet"))
    count, size = L.wal_archive_total(server)
    rows.append(("archive_size", "WAL archive", f"{count} files, {size} bytes"))
    waiting, incoming = L.staged_count(server)
    rows.append(("backlog_streaming", "Waiting in streaming/", str(waiting)))
    rows.append(("backlog_incoming", "Waiting in incoming/", str(incoming)))
    gaps = load_gaps(server)
    rows.append(("gaps", "Recorded WAL gaps", str(len(gaps))))
    rows += [("gap", "WAL gap", gap.describe()) for gap in gaps]
    rows += _fork_rows(server)
    errors = L.summarise_errors(server)
    rows.append(("archiver_errors", "Files in errors/", errors or "none"))
    return rows


def _fork_rows(server: ServerConfig) -> list[tuple[str, str, str]]:
    """Recorded timeline forks (a bad record file is one row naming it)."""
    from walvault.errors import WalvaultError
    from walvault.receiver.forks import load_forks

    try:
        forks = load_forks(server)
    except WalvaultError as exc:
        return [("timeline_forks", "Timeline forks", f"unknown: {exc.message}")]
    rows = [("timeline_forks", "Timeline forks", str(len(forks)))]
    return rows + [("timeline_fork", "Timeline fork", fork.describe()) for fork in forks]


def status(ctx: Context, args: argparse.Namespace) -> int:
    """Print the status of each server."""
    servers = ctx.servers(args.server_name)
    if ctx.output_format == "json":
        out: dict[str, Any] = {}
        for server in servers:
            entry: dict[str, Any] = {}
            for key, description, value in collect(server):
                if key in entry:  # repeated rows (lines, gaps) become lists
                    previous = entry[key]["message"]
                    values = previous if isinstance(previous, list) else [previous]
                    entry[key] = {"description": description, "message": [*values, value]}
                else:
                    entry[key] = {"description": description, "message": value}
            out[server.name] = entry
        ctx.emit_json(out)
        return 0
    for server in servers:
        ctx.result(f"Server {server.name}:")
        for _key, description, value in collect(server):
            ctx.result(f"\t{description}: {value}")
    return 0
