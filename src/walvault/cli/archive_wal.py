"""``archive-wal`` and ``rebuild-xlogdb``: feed the WAL archive and rebuild its catalogue."""

from __future__ import annotations

import argparse
from typing import Any

from walvault.cli.context import Context


def register(sub: Any) -> None:
    """Add the commands to the CLI."""
    p = sub.add_parser(
        "archive-wal",
        help="move finished WAL files from streaming/ and incoming/ into the archive",
    )
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.set_defaults(func=archive_wal)
    p = sub.add_parser("rebuild-xlogdb", help="rebuild the WAL catalogue from the archive")
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.set_defaults(func=rebuild_xlogdb)


def archive_wal(ctx: Context, args: argparse.Namespace) -> int:
    """Archive one batch per staging directory of each server; exit 1 if any was left behind."""
    from walvault.archive.archiver import archive_wal as run

    code = 0
    for server in ctx.servers(args.server_name):
        if server.disabled:
            ctx.warn(f"Skipping disabled server '{server.name}': {'; '.join(server.messages)}")
            code = 1
            continue
        if not server.active:
            ctx.info(f"Skipping inactive server '{server.name}'")
            continue
        result = run(server, ctx.info, verbose=True, warn=ctx.warn)
        code = max(code, result.exit_code)
    return code


def rebuild_xlogdb(ctx: Context, args: argparse.Namespace) -> int:
    """Rewrite ``<server>-xlog.db`` from the files of ``wals/`` (keeping ``.partial`` ones)."""
    from walvault.archive.archiver import rebuild_xlogdb as rebuild

    code = 0
    for server in ctx.servers(args.server_name):
        if server.disabled:
            ctx.warn(f"Skipping disabled server '{server.name}': {'; '.join(server.messages)}")
            code = 1
            continue
        ctx.info(f"Rebuilding xlogdb for server {server.name}")
        result = rebuild(server)
        for path in result.unexpected:
            ctx.warn(f"unexpected file in the WAL archive, not catalogued: {path}")
        ctx.info(result.summary(server.name))
    return code
