"""``backup``, ``list-backups``, ``show-backup``, ``delete`` and ``check-backup``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from walvault.cli.context import Context, require_enabled, seconds_argument
from walvault.errors import WalvaultError
from walvault.humanize import pretty_size

if TYPE_CHECKING:
    from walvault.backup.catalog import BackupSummary
    from walvault.backup.info import BackupInfo
    from walvault.config import ServerConfig


def register(sub: Any) -> None:
    """Add the commands to the CLI."""
    from walvault.backup.info import DEFAULT_WAIT_TIMEOUT

    p = sub.add_parser("backup", help="take a base backup with pg_basebackup")
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.add_argument("--name", help="a name for the backup (usable wherever an id is)")
    p.add_argument(
        "--incremental",
        metavar="PARENT",
        help="an incremental backup (PostgreSQL 17+, summarize_wal = on) of PARENT: a backup "
        "id or name, latest/last or latest-full/last-full",
    )
    p.add_argument(
        "-w", "--wait", action="store_true", help="wait until every WAL it needs is archived"
    )
    p.add_argument(
        "--wait-timeout",
        type=seconds_argument,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long --wait waits (default: {DEFAULT_WAIT_TIMEOUT}; 0: no limit)",
    )
    p.add_argument(
        "--bwlimit",
        type=_bandwidth,
        metavar="KBPS",
        help="limit pg_basebackup to KBPS kB/s (its --max-rate; default: bandwidth_limit)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        metavar="N",
        help="refused: pg_basebackup copies over one connection (Barman's --jobs is rsync's)",
    )
    p.add_argument(
        "--immediate-checkpoint",
        dest="immediate_checkpoint",
        action="store_true",
        default=None,
        help="ask for a fast checkpoint (default: immediate_checkpoint)",
    )
    p.add_argument(
        "--no-immediate-checkpoint",
        dest="immediate_checkpoint",
        action="store_false",
        help="wait for a spread checkpoint",
    )
    p.set_defaults(func=backup)
    p = sub.add_parser("list-backups", aliases=["list-backup"], help="list the backups")
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.add_argument("--minimal", action="store_true", help="backup ids only")
    p.set_defaults(func=list_backups)
    p = sub.add_parser("show-backup", help="show one backup in detail")
    p.add_argument("server_name")
    p.add_argument("backup_id", help="id, name, latest/last or oldest/first")
    p.set_defaults(func=show_backup)
    p = sub.add_parser("delete", help="delete a backup and the WAL only it needed")
    p.add_argument("server_name")
    p.add_argument("backup_id", help="id, name, latest/last or oldest/first")
    p.add_argument(
        "--with-incrementals",
        action="store_true",
        help="also delete every incremental backup built on it (otherwise refused)",
    )
    p.set_defaults(func=delete)
    p = sub.add_parser(
        "check-backup", help="settle a WAITING_FOR_WALS backup: DONE when its WAL is archived"
    )
    p.add_argument("server_name")
    p.add_argument("backup_id", help="id, name, latest/last or oldest/first")
    p.set_defaults(func=check_backup)


def _bandwidth(text: str) -> int:
    from walvault.config.parsers import parse_bandwidth

    try:
        return parse_bandwidth(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def backup(ctx: Context, args: argparse.Namespace) -> int:
    """Back up each named server in turn; any failure makes the exit code 1."""
    from walvault.backup.basebackup import take_backup
    from walvault.backup.progress import Progress

    if args.jobs is not None and args.jobs != 1:
        raise WalvaultError(
            "--jobs: pg_basebackup (backup_method = postgres) copies over one connection; "
            "limit its bandwidth with --bwlimit instead"
        )

    def debug(line: str) -> None:
        if ctx.debug:
            print(line, file=ctx.err, flush=True)

    failed = False
    for server in ctx.servers(args.server_name):
        try:
            require_enabled(server)
            if not server.active:
                raise WalvaultError(f"server '{server.name}' is inactive (active = false)")
            if args.bwlimit is not None:
                server = server._replace(bandwidth_limit=args.bwlimit)
            if args.immediate_checkpoint is not None:
                server = server._replace(immediate_checkpoint=args.immediate_checkpoint)
            info = take_backup(
                server,
                ctx.info,
                ctx.warn,
                debug,
                name=args.name,
                wait=args.wait,
                wait_timeout=args.wait_timeout,
                progress=Progress("Backup", ctx.err, enabled=not ctx.quiet),
                incremental=args.incremental,
            )
            if args.wait:
                ctx.info(f"Backup {info.backup_id} of server {server.name}: {info.status}")
            elif info.status == "WAITING_FOR_WALS":
                ctx.info(
                    f"Backup {info.backup_id} of server {server.name}: WAITING_FOR_WALS -- "
                    f"waiting for its WAL up to {info.end_wal} to be archived; 'walvault cron' "
                    f"marks it DONE once it is (or 'walvault check-backup {server.name} "
                    f"{info.backup_id}'; 'backup --wait' waits)"
                )
        except WalvaultError as exc:
            failed = True
            ctx.error(exc.message)
    return 1 if failed else 0


def _when(summary: BackupSummary) -> str:
    moment = summary.info.end_time or summary.info.begin_time
    return moment.astimezone().ctime() if moment else "unknown time"


def list_line(server: str, summary: BackupSummary) -> str:
    """Barman's ``list-backups`` line."""
    info = summary.info
    name = f" '{info.backup_name}'" if info.backup_name else ""
    head = f"{server} {info.backup_id}{name} - {info.backup_type[0].upper()}"
    if info.status not in ("DONE", "WAITING_FOR_WALS"):
        return f"{head} - {info.status}"
    line = (
        f"{head} - {_when(summary)} - Size: {pretty_size(summary.total_size)} - "
        f"WAL Size: {pretty_size(summary.until_next.size)}"
    )
    if info.status != "DONE":
        line += f" - {info.status}"
    elif summary.retention == "OBSOLETE" or summary.retention.startswith("KEEP:"):
        line += f" - {summary.retention}"
    return line


def _as_json(summary: BackupSummary) -> dict[str, Any]:
    info = summary.info
    moment = info.end_time or info.begin_time
    return {
        "backup_id": info.backup_id,
        "backup_name": info.backup_name,
        "status": info.status,
        "backup_type": info.backup_type,
        "parent_backup_id": info.parent_backup_id,
        "end_time": moment.astimezone().ctime() if moment else None,
        "end_time_timestamp": str(int(moment.timestamp())) if moment else None,
        "size": pretty_size(summary.total_size),
        "size_bytes": summary.total_size,
        "wal_size": pretty_size(summary.until_next.size),
        "wal_size_bytes": summary.until_next.size,
        "retention_status": summary.retention,
    }


def list_backups(ctx: Context, args: argparse.Namespace) -> int:
    """Newest first, one line per backup (``--minimal``: ids only; ``-f json``)."""
    from walvault.backup.catalog import server_backups
    from walvault.backup.info import scan_backups

    data: dict[str, list[dict[str, Any]]] = {}
    for server in ctx.servers(args.server_name):
        for problem in scan_backups(server)[1]:  # never a backup that vanishes without a word
            ctx.warn(f"backup not listed: {problem.message}")
        summaries = list(reversed(server_backups(server)))
        if ctx.output_format == "json":
            data[server.name] = [_as_json(s) for s in summaries]
            continue
        for summary in summaries:
            if args.minimal:
                ctx.result(summary.info.backup_id)
            else:
                ctx.result(list_line(server.name, summary))
    if ctx.output_format == "json":
        ctx.emit_json(data)
    return 0


def _find(ctx: Context, args: argparse.Namespace) -> tuple[ServerConfig, BackupInfo]:
    from walvault.backup.info import resolve_backup_id

    server = ctx.server(args.server_name, allow_disabled=True)
    return server, resolve_backup_id(server, args.backup_id)


def show_sections(summary: BackupSummary) -> list[tuple[str, list[tuple[str, str]]]]:
    """The rows of ``show-backup``, grouped in Barman's sections."""
    info = summary.info
    head = [("Server Name", info.server_name)]
    if info.backup_name:
        head.append(("Backup Name", info.backup_name))
    head += [
        ("System Id", str(info.systemid)),
        ("Status", info.status),
        ("PostgreSQL Version", str(info.version)),
        ("Backup Type", info.backup_type),
        ("PGDATA directory", str(info.pgdata)),
    ]
    if info.error:
        head.append(("Error", info.error))
    copy = "-"
    if info.begin_time and info.end_time:
        from walvault.humanize import pretty_duration

        copy = pretty_duration((info.end_time - info.begin_time).total_seconds())
    size = pretty_size(info.size or 0)
    encryption = dict(info.extra).get("encryption")
    base = [("Encryption", encryption)] if encryption and encryption != "None" else []
    base += [
        ("Disk usage", f"{size} ({pretty_size(summary.total_size)} with WALs)"),
        ("Timeline", str(info.timeline)),
        ("Begin WAL", str(info.begin_wal)),
        ("End WAL", str(info.end_wal)),
        ("WAL number", str(summary.required.count)),
        ("Begin time", str(info.begin_time)),
        ("End time", str(info.end_time)),
        ("Copy time", copy),
        ("Begin Offset", str(info.begin_offset)),
        ("End Offset", str(info.end_offset)),
        ("Begin LSN", str(info.begin_xlog)),
        ("End LSN", str(info.end_xlog)),
    ]
    last = summary.until_next.last or summary.required.last
    wal = [
        ("No of files", str(summary.until_next.count)),
        ("Disk usage", pretty_size(summary.until_next.size)),
        ("Last available", str(last)),
    ]
    catalog = [
        ("Retention Policy", summary.retention),
        ("Previous Backup", summary.previous or "- (this is the oldest base backup)"),
        ("Next Backup", summary.next or "- (this is the latest base backup)"),
    ]
    if info.is_incremental:
        catalog += [
            ("Root Backup", summary.root or "- (missing)"),
            ("Parent Backup", str(info.parent_backup_id)),
            ("Backup chain size", pretty_size(summary.chain_size)),
        ]
    if info.children:
        catalog.append(("Children Backup(s)", ",".join(info.children)))
    return [
        ("", head),
        ("Base backup information", base),
        ("WAL information", wal),
        ("Catalog information", catalog),
    ]


def show_backup(ctx: Context, args: argparse.Namespace) -> int:
    """Every field of one backup, with its WAL and its place among the others."""
    from walvault.backup.catalog import server_backups

    server, info = _find(ctx, args)
    summaries = server_backups(server)
    summary = next(s for s in summaries if s.info.backup_id == info.backup_id)
    if args.backup_id in ("latest", "last"):
        newer = [s.info for s in summaries if s.info.backup_id > info.backup_id]
        for other in newer:
            ctx.warn(
                f"backup {other.backup_id}, newer than {info.backup_id}, is {other.status}: "
                "'latest' names the newest DONE backup"
            )
    sections = show_sections(summary)
    if ctx.output_format == "json":
        data: dict[str, Any] = {"backup_id": info.backup_id}
        for title, rows in sections:
            target = data.setdefault(title.lower().replace(" ", "_"), {}) if title else data
            for key, value in rows:
                target[key.lower().replace(" ", "_")] = value
        ctx.emit_json({server.name: data})
        return 0
    ctx.result(f"Backup {info.backup_id}:")
    for title, rows in sections:
        indent = "  "
        if title:
            ctx.result("")
            ctx.result(f"  {title}:")
            indent = "    "
        width = 25 - len(indent)
        for key, value in rows:
            ctx.result(f"{indent}{key:<{width}}: {value}")
    return 0


def delete(ctx: Context, args: argparse.Namespace) -> int:
    """Delete the backup, then the WAL no remaining backup needs."""
    from walvault.backup.delete import delete_backup, delete_with_incrementals

    server, info = _find(ctx, args)
    if args.with_incrementals:
        delete_with_incrementals(server, info.backup_id, ctx.info)
    else:
        delete_backup(server, info.backup_id, ctx.info)
    return 0


def check_backup(ctx: Context, args: argparse.Namespace) -> int:
    """Re-check a WAITING_FOR_WALS backup (what cron does); exit 1 when it is FAILED."""
    from walvault.backup.walcheck import check_backup as run

    server, info = _find(ctx, args)
    after = run(server, info.backup_id, wait=30)
    detail = f" ({after.error})" if after.error else ""
    ctx.result(f"Backup {after.backup_id} of server {server.name}: {after.status}{detail}")
    return 1 if after.status == "FAILED" else 0
