"""``recover`` (alias ``restore``): prepare a backup in a local directory for recovery."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from walvault.cli.context import Context

if TYPE_CHECKING:
    from walvault.privileges import Account


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
    p.add_argument(
        "--recovery-owner",
        metavar="USER",
        help="the OS user PostgreSQL runs as: the restored files are given to USER (as root) "
        "and, with --get-wal, restore_command asks walvault's restore service (README, 'Two "
        "OS users')",
    )
    p.set_defaults(func=recover, privileged=hand_over_as_root)


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
    import os

    from walvault.backup.info import resolve_backup_id
    from walvault.backup.recover import RecoverOptions, tablespace_locations
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
    destination = os.path.abspath(args.destination_directory)
    protected = walvault_directories(ctx)
    # a wrong rule is named before any question about who may write where
    tablespace_locations(server, backup, destination, tuple(args.tablespace), protected)
    service = _owner_checks(ctx, args, get_wal)
    options = RecoverOptions(
        destination=args.destination_directory,
        target=target,
        get_wal=get_wal,
        standby_mode=args.standby_mode,
        port=args.port,
        config_file=ctx.config.path,
        tablespaces=tuple(args.tablespace),
        protected=protected,
        jobs=args.jobs,
        progress_stream=None if ctx.quiet else ctx.err,
        service=service,
    )
    try:
        code = do_recover(server, backup, options, ctx.info, ctx.warn)
    except WalvaultError as exc:  # 200 belongs to restore_command: recover's failures are 1
        raise WalvaultError(exc.message) from None
    if code == 0 and not getattr(args, "handover_by_root", False):
        from walvault.privileges import current_user

        owner = current_user()
        ctx.info(f"The restored files belong to {owner}: start PostgreSQL as {owner}")
    return code


def _owner_checks(
    ctx: Context, args: argparse.Namespace, get_wal: bool
) -> tuple[str, str, str] | None:
    """Checks made before anything is copied: the destination can be written by this user,
    and ``--recovery-owner`` can be honoured.  Returns the restore service (socket, walvault
    user, PostgreSQL's user) restore_command must ask, or None (PostgreSQL's user is
    walvault's)."""
    import os

    from walvault import privileges
    from walvault.errors import WalvaultError

    me = privileges.current_user()
    for path in (args.destination_directory, *_rule_locations(args.tablespace)):
        why = privileges.why_not_writable(path)
        if why is not None:
            raise WalvaultError(
                f"walvault runs as '{me}' and cannot create '{os.path.abspath(path)}': {why}. "
                "Run recover as root with --recovery-owner <PostgreSQL's user> (it prepares "
                f"the directory for '{me}' and gives the copy to that user), or choose a "
                f"directory '{me}' can write"
            )
    if not args.recovery_owner:
        return None
    owner = privileges.account(args.recovery_owner, "--recovery-owner")
    if owner.uid == os.geteuid():
        return None
    if not getattr(args, "handover_by_root", False) and os.geteuid() != 0:
        raise WalvaultError(
            f"only root can give the restored files to '{owner.name}' (walvault runs as "
            f"'{me}'): run recover as root (with walvault_user = {me}), or as '{owner.name}'"
        )
    if not get_wal:
        return None
    config = ctx.config
    if owner.name not in config.restore_users:
        listed = ", ".join(config.restore_users) or "none"
        raise WalvaultError(
            f"with --get-wal, '{owner.name}' runs restore_command through walvault's restore "
            f"service, which answers only restore_users ({listed}):"
            f" add 'restore_users = {owner.name}' to walvault's configuration, or use "
            "--no-get-wal (the WAL is then copied into the destination)"
        )
    from walvault.clients.transport import ServiceSource

    if not ServiceSource(config.restore_socket, me).answers():
        ctx.warn(
            f"no restore service answers at '{config.restore_socket}' now: it must run before "
            f"PostgreSQL starts ('systemctl enable --now walvault-restore.socket', or "
            f"'walvault restore-service' as {me})"
        )
    return config.restore_socket, me, owner.name


def _rule_locations(rules: list[str]) -> list[str]:
    return [rule.partition(":")[2] for rule in rules if rule.partition(":")[2].startswith("/")]


def hand_over_as_root(
    ctx: Context, args: argparse.Namespace, walvault: Account | None, work: Callable[[], int]
) -> int:
    """As root: prepare the destination for the copy, let ``work`` copy it (as walvault_user,
    in a child process), then give every file it created to ``--recovery-owner``."""
    import os

    from walvault import privileges

    if not args.recovery_owner:
        return work()
    owner = privileges.account(args.recovery_owner, "--recovery-owner")
    destination = os.path.abspath(args.destination_directory)
    spaces = f"{destination}_tablespaces"
    made: list[str] = []
    for path in (destination, spaces, *_rule_locations(args.tablespace)):
        if not os.path.lexists(path):
            made += privileges.make_destination(path, walvault)
    args.handover_by_root = True
    code = work()
    if code != 0:
        privileges.remove_if_empty(made)
        return code
    creator = walvault.uid if walvault is not None else 0
    tops = [destination]
    links = os.path.join(destination, "pg_tblspc")
    if os.path.isdir(links):
        tops += [os.path.realpath(os.path.join(links, oid)) for oid in sorted(os.listdir(links))]
    if os.path.isdir(spaces) and not os.listdir(spaces):
        os.rmdir(spaces)
    elif os.path.isdir(spaces):
        os.lchown(spaces, owner.uid, owner.gid)
    count = sum(privileges.hand_over(top, creator=creator, owner=owner) for top in tops)
    import logging

    from walvault.cli.context import setup_logging

    setup_logging(ctx.load_config(), ctx.quiet)  # root's line goes to the same log_file
    logging.getLogger("walvault").info(
        "recover: gave %d entries of %s to %s (uid %d), the PostgreSQL user",
        count,
        ", ".join(tops),
        owner.name,
        owner.uid,
    )
    ctx.info(
        f"The restored files ({count} entries) now belong to {owner.name}: start PostgreSQL "
        f"as {owner.name}"
    )
    return 0
