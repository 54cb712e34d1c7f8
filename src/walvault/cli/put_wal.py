"""``put-wal``: receive WAL files (Barman's tar stream on stdin) into a server's incoming/."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from walvault.cli.context import Context
from walvault.errors import WalvaultError

if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "put-wal",
        help="receive WAL files from walvault-wal-archive (a tar stream on stdin) into incoming/",
    )
    p.add_argument("server_name")
    p.add_argument(
        "-t", "--test", action="store_true", help="only check the server accepts WAL files"
    )
    p.set_defaults(func=put_wal, prepare=prepare)


def prepare(ctx: Context, args: argparse.Namespace) -> None:
    """put-wal never connects to PostgreSQL: skip libpq's conninfo parsing."""
    ctx.check_conninfo = False


def put_wal(ctx: Context, args: argparse.Namespace) -> int:
    """Land the stream's files durably (exit 0) or refuse them with one message (exit 1)."""
    from walvault.archive import putwal

    server = ctx.server(args.server_name, allow_inactive=False)
    putwal.check_accepting(server)
    if args.test:
        ctx.result(f"Ready to accept WAL files for the server {server.name}")
        return 0
    if sys.stdin.isatty():
        raise WalvaultError(
            "put-wal reads a tar stream of WAL files on stdin (sent by walvault-wal-archive "
            "or barman-wal-archive), not from a terminal"
        )
    putwal.put_wal(server, sys.stdin.buffer, suffix=putwal.ssh_suffix(), warn=ctx.warn)
    return 0
