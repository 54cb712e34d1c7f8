"""``receive-wal``: stream WAL with pg_receivewal; slots; stop; reset."""

from __future__ import annotations

import argparse
from typing import Any

from walvault.cli.context import Context
from walvault.errors import WalvaultError


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "receive-wal", help="stream WAL from the server with pg_receivewal (foreground)"
    )
    p.add_argument("server_name")
    p.add_argument("--stop", action="store_true", help="stop the running receive-wal")
    p.add_argument("--reset", action="store_true", help="reposition streaming, recording gaps")
    p.add_argument("--create-slot", action="store_true", help="create the replication slot")
    p.add_argument(
        "--if-not-exists", action="store_true", help="with --create-slot: fine if it exists"
    )
    p.add_argument("--drop-slot", action="store_true", help="drop the replication slot")
    p.set_defaults(func=receive_wal)


def receive_wal(ctx: Context, args: argparse.Namespace) -> int:
    """Dispatch in Barman's order: --stop, --create-slot, --drop-slot, then stream or reset."""
    from walvault.receiver import service

    maintenance = args.stop or args.reset or args.create_slot or args.drop_slot
    server = ctx.server(args.server_name)
    if not server.active and not maintenance:
        ctx.info(f"Skipping inactive server '{server.name}'")
        return 0
    if args.stop and args.reset:
        raise WalvaultError("--stop and --reset options are not compatible")
    if args.if_not_exists and not args.create_slot:
        raise WalvaultError("--if-not-exists is only valid with --create-slot")
    if args.stop:
        from walvault.cli.processes import terminate_task

        return terminate_task(ctx, server, "receive-wal")
    if args.create_slot:
        service.create_slot(server, ctx.info, if_not_exists=args.if_not_exists)
        return 0
    if args.drop_slot:
        service.drop_slot(server, ctx.info)
        return 0
    if not args.reset:  # a long-running process: logrotate's SIGHUP reopens log_file
        from walvault.cli.context import reopen_logs_on_sighup

        reopen_logs_on_sighup()
    return service.receive_wal(server, ctx.info, ctx.warn, reset=args.reset)
