"""``archive-wal`` and ``rebuild-xlogdb``: feed the WAL archive and rebuild its catalogue."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from walvault.cli.context import Context
from walvault.config import ServerConfig

if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> None:
    """Add the commands to the CLI."""
    p = sub.add_parser(
        "archive-wal",
        help="move finished WAL files from streaming/ and incoming/ into the archive",
    )
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.set_defaults(func=archive_wal, prepare=prepare)
    p = sub.add_parser("rebuild-xlogdb", help="rebuild the WAL catalogue from the archive")
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.set_defaults(func=rebuild_xlogdb, prepare=prepare)


def prepare(ctx: Context, args: argparse.Namespace) -> None:
    """Before the configuration is read: these commands never connect to PostgreSQL, so
    its connection strings are not parsed (that would load libpq through psycopg)."""
    ctx.check_conninfo = False


def _enabled(ctx: Context, names: list[str]) -> tuple[list[ServerConfig], int]:
    """The named servers that are not disabled, and 1 if any was skipped (with a warning)."""
    servers: list[ServerConfig] = []
    code = 0
    for server in ctx.servers(names):
        if server.disabled:
            ctx.warn(f"Skipping disabled server '{server.name}': {'; '.join(server.messages)}")
            code = 1
        else:
            servers.append(server)
    return servers, code


def archive_wal(ctx: Context, args: argparse.Namespace) -> int:
    """Archive one batch per staging directory of each server; exit 1 if any was left behind."""
    from walvault.archive.archiver import archive_wal as run

    servers, code = _enabled(ctx, args.server_name)
    for server in servers:
        if not server.active:
            ctx.info(f"Skipping inactive server '{server.name}'")
            continue
        result = run(server, ctx.info, verbose=True, warn=ctx.warn)
        code = max(code, result.exit_code)
    return code


def rebuild_xlogdb(ctx: Context, args: argparse.Namespace) -> int:
    """Rewrite ``<server>-xlog.db`` from the files of ``wals/`` (keeping ``.partial`` ones)."""
    from walvault.archive.archiver import rebuild_xlogdb as rebuild

    servers, code = _enabled(ctx, args.server_name)
    for server in servers:
        ctx.info(f"Rebuilding xlogdb for server {server.name}")
        result = rebuild(server)
        for path in result.unexpected:
            ctx.warn(f"unexpected file in the WAL archive, not catalogued: {path}")
        ctx.info(result.summary(server.name))
    return code
