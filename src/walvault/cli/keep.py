"""``keep``: keep a backup out of retention's reach (Barman's command and annotation file)."""

from __future__ import annotations

import argparse
from typing import Any

from walvault.cli.context import Context
from walvault.errors import WalvaultError


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "keep",
        help="keep a backup forever (retention never deletes it), show or release the keep",
    )
    p.add_argument("server_name")
    p.add_argument("backup_id", help="id, name, latest/last or oldest/first")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--target",
        choices=("full", "standalone"),
        help="full: for point-in-time recovery after it; standalone: to restore it alone "
        "(walvault keeps every WAL from its begin on in both cases)",
    )
    what.add_argument("--status", action="store_true", help="print the keep (or 'nokeep')")
    what.add_argument("--release", action="store_true", help="remove the keep")
    p.set_defaults(func=keep)


def keep(ctx: Context, args: argparse.Namespace) -> int:
    """Set, show or release the keep of one backup."""
    from walvault.backup.info import DONE, resolve_backup_id
    from walvault.backup.keep import keep_target, release_keep, set_keep

    server = ctx.server(args.server_name, allow_disabled=True)
    info = resolve_backup_id(server, args.backup_id)
    if args.status:
        ctx.result(f"Keep: {keep_target(server, info.backup_id) or 'nokeep'}")
        return 0
    if args.release:
        if release_keep(server, info.backup_id):
            ctx.info(f"Keep released for backup {info.backup_id} of server {server.name}")
        else:
            ctx.info(f"Backup {info.backup_id} of server {server.name} was not kept")
        return 0
    if not args.target:
        raise WalvaultError("keep needs one of --target full|standalone, --status, --release")
    if info.status != DONE:
        raise WalvaultError(
            f"Cannot add keep to backup {info.backup_id} because it has status {info.status}. "
            "Only backups with status DONE can be kept."
        )
    if info.is_incremental:  # as Barman: a kept link would pin a chain nobody asked for
        raise WalvaultError(
            f"Unable to keep backup {info.backup_id}: it is an incremental backup; only full "
            "backups can be kept (keep the chain's full backup, "
            f"{info.parent_backup_id} or an older one)"
        )
    set_keep(server, info.backup_id, args.target)
    ctx.info(
        f"Backup {info.backup_id} of server {server.name} is kept ({args.target}): retention "
        "will not delete it"
    )
    return 0
