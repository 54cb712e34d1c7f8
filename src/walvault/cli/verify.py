"""``verify`` (alias ``verify-backup``): prove the archive restorable; render like ``check``."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from walvault.cli.context import Context


def register(sub: Any) -> None:
    """Add the command (and Barman's name for it) to the CLI."""
    for name in ("verify", "verify-backup"):
        p = sub.add_parser(
            name,
            help="verify backups against their manifests and the WAL they need, record by record",
        )
        p.add_argument("server_name")
        p.add_argument(
            "backup_id",
            nargs="?",
            default="all",
            help="a backup id or name, latest, oldest, or all (default: every DONE backup)",
        )
        p.add_argument(
            "--wal-only",
            action="store_true",
            help="skip pg_verifybackup (the backups' files); verify the WAL only",
        )
        p.add_argument(
            "--incremental",
            action="store_true",
            help="one incremental pass over new segments (what cron runs); BACKUP_ID is ignored",
        )
        p.set_defaults(func=verify, prepare=prepare)


def prepare(ctx: Context, _args: argparse.Namespace) -> None:
    """verify never connects: libpq need not parse the connection strings."""
    ctx.check_conninfo = False


def verify(ctx: Context, args: argparse.Namespace) -> int:
    """Exit 0 when every line is OK, 1 otherwise (like ``check``)."""
    server = ctx.server(args.server_name)
    if args.incremental:
        return _incremental(ctx, server)
    from walvault.cli.check import json_key
    from walvault.verify.report import verify_server

    lines = verify_server(server, args.backup_id, files=not args.wal_only)
    failed = any(not line.result.ok for line in lines)
    if ctx.output_format == "json":
        ctx.emit_json(
            {
                server.name: {
                    json_key(line.result.name): {
                        "status": line.result.status,
                        "hint": line.result.hint,
                        **line.facts,
                    }
                    for line in lines
                }
            }
        )
        return 1 if failed else 0
    ctx.result(f"Server {server.name}:")
    for line in lines:
        hint = f" ({line.result.hint})" if line.result.hint else ""
        ctx.result(f"\t{line.result.name}: {line.result.status}{hint}")
    return 1 if failed else 0


def _incremental(ctx: Context, server: Any) -> int:
    from walvault.errors import LockBusy
    from walvault.verify.incremental import check_result, run_pass

    with contextlib.suppress(OSError):
        os.nice(10)  # a background pass yields the CPU to streaming and archiving
    try:
        run_pass(server, echo=ctx.info)
    except LockBusy:
        ctx.info(f"Another WAL verification is running for server {server.name}")
        return 0
    result = check_result(server)
    if ctx.output_format == "json":
        ctx.emit_json(
            {server.name: {"wal_verification": {"status": result.status, "hint": result.hint}}}
        )
    else:
        ctx.result(f"{result.name}: {result.status} ({result.hint})")
    return 0 if result.ok else 1
