"""``list-files``: the files a backup is made of (Barman's targets, see walvault.backup.files)."""

from __future__ import annotations

import argparse
from typing import Any

from walvault.cli.context import Context


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    from walvault.backup.files import TARGETS

    p = sub.add_parser("list-files", help="list the files of a backup (data and/or WAL)")
    p.add_argument("server_name")
    p.add_argument("backup_id", help="id, name, latest/last or oldest/first")
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="standalone",
        help="data: the copy; standalone (default): the copy and the WAL it needs; wal: the "
        "WAL until the next backup; full: both",
    )
    p.set_defaults(func=list_files)


def list_files(ctx: Context, args: argparse.Namespace) -> int:
    """One path (or URL) per line."""
    from walvault.backup.files import backup_files
    from walvault.backup.info import resolve_backup_id

    server = ctx.server(args.server_name, allow_disabled=True)
    info = resolve_backup_id(server, args.backup_id)
    for path in backup_files(server, info, args.target):
        ctx.result(path)
    return 0
