"""``recover`` (alias ``restore``): prepare a backup in a local directory for recovery."""

from __future__ import annotations

import argparse
from typing import Any

from walvault.cli.context import Context


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "recover", aliases=["restore"], help="restore a backup to a local directory, with PITR"
    )
    p.add_argument("server_name")
    p.add_argument("backup_id", help="a backup id, a backup name, latest/last, oldest/first")
    p.add_argument("destination_directory")
    targets = p.add_argument_group("recovery target (at most one)")
    targets.add_argument("--target-time", help="an ISO 8601 time, e.g. '2026-11-25 16:00:00+00'")
    targets.add_argument("--target-xid", help="a transaction id")
    targets.add_argument("--target-lsn", help="an LSN such as 0/3000060")
    targets.add_argument("--target-name", help="a restore point (pg_create_restore_point)")
    targets.add_argument("--target-immediate", action="store_true", help="stop at consistency")
    p.add_argument("--target-tli", help="latest (default), current or a timeline number")
    p.add_argument("--target-action", help="pause, promote or shutdown (with a target)")
    p.add_argument("--exclusive", action="store_true", help="stop just before the target")
    p.add_argument("--standby-mode", action="store_true", help="start as a standby")
    wal = p.add_mutually_exclusive_group()
    wal.add_argument(
        "--get-wal",
        dest="get_wal",
        action="store_true",
        default=None,
        help="restore_command fetches WAL from walvault on demand",
    )
    wal.add_argument(
        "--no-get-wal",
        dest="get_wal",
        action="store_false",
        help="copy the WAL (streamed tail included) into the destination",
    )
    p.add_argument("--port", type=int, help="port for the restored server (postgresql.auto.conf)")
    p.add_argument(
        "--tablespace",
        action="append",
        default=[],
        metavar="NAME:LOCATION",
        help="restore tablespace NAME to LOCATION (repeatable; default: "
        "<destination>_tablespaces/<oid>)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=4,
        metavar="N",
        help="parallel downloads of a backup in object storage (default: 4)",
    )
    p.set_defaults(func=recover)


def walvault_directories(ctx: Context) -> tuple[str, ...]:
    """walvault's home and every directory of every configured server."""
    from walvault.config.options import DIRECTORY_OPTIONS

    config = ctx.config
    found = [config.walvault_home]
    for server in config.servers.values():
        found += [getattr(server, option) for option in DIRECTORY_OPTIONS]
        found += [server.xlogdb_directory, server.meta_directory]
    local = (path for path in found if path and path[:5].lower() != "s3://")
    return tuple(dict.fromkeys(local))


def recover(ctx: Context, args: argparse.Namespace) -> int:
    """Validate, copy and configure."""
    from walvault.backup.info import resolve_backup_id
    from walvault.backup.recover import RecoverOptions
    from walvault.backup.recover import recover as do_recover
    from walvault.backup.targets import parse_target
    from walvault.errors import WalvaultError

    server = ctx.server(args.server_name)
    target, warnings = parse_target(
        time=args.target_time,
        xid=args.target_xid,
        lsn=args.target_lsn,
        name=args.target_name,
        immediate=args.target_immediate,
        tli=args.target_tli,
        action=args.target_action,
        exclusive=args.exclusive,
    )
    for warning in warnings:
        ctx.warn(warning)
    if args.port is not None and not 1 <= args.port <= 65535:
        raise WalvaultError(f"invalid --port {args.port}: accepted: 1-65535")
    if not 1 <= args.jobs <= 64:
        raise WalvaultError(f"invalid --jobs {args.jobs}: accepted: 1-64")
    get_wal = args.get_wal if args.get_wal is not None else "get-wal" in server.recovery_options
    backup = resolve_backup_id(server, args.backup_id)
    options = RecoverOptions(
        destination=args.destination_directory,
        target=target,
        get_wal=get_wal,
        standby_mode=args.standby_mode,
        port=args.port,
        config_file=ctx.config.path,
        tablespaces=tuple(args.tablespace),
        protected=walvault_directories(ctx),
        jobs=args.jobs,
        progress_stream=None if ctx.quiet else ctx.err,
    )
    return do_recover(server, backup, options, ctx.info, ctx.warn)
