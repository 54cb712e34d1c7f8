"""``switch-wal`` (alias ``switch-xlog``): close the current WAL segment, optionally wait for it."""

from __future__ import annotations

import argparse
from typing import Any

from walvault.cli.context import Context, require_enabled, seconds_argument
from walvault.config import ServerConfig
from walvault.errors import WalvaultError

DEFAULT_ARCHIVE_TIMEOUT = 30


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "switch-wal",
        aliases=["switch-xlog"],
        help="close the current WAL segment of the server (pg_switch_wal)",
    )
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.add_argument(
        "--force",
        action="store_true",
        help="run CHECKPOINT first, so a switch happens even when no WAL was written "
        "(superuser or pg_checkpoint)",
    )
    p.add_argument(
        "--archive", action="store_true", help="wait until the closed WAL file is archived"
    )
    p.add_argument(
        "--archive-timeout",
        type=seconds_argument,
        default=DEFAULT_ARCHIVE_TIMEOUT,
        metavar="TIMEOUT",
        help=f"seconds --archive waits (default: {DEFAULT_ARCHIVE_TIMEOUT}; 0: no limit)",
    )
    p.set_defaults(func=switch_wal)


def switch_wal(ctx: Context, args: argparse.Namespace) -> int:
    """Switch every named server in turn; any failure makes the exit code 1."""
    failed = False
    for server in ctx.servers(args.server_name):
        try:
            require_enabled(server)
            if not server.active:
                ctx.info(f"Skipping inactive server '{server.name}'")
                continue
            _switch_one(ctx, server, args.force, args.archive, args.archive_timeout)
        except WalvaultError as exc:
            failed = True
            ctx.error(exc.message)
    return 1 if failed else 0


def _switch_one(
    ctx: Context, server: ServerConfig, force: bool, archive: bool, timeout: int
) -> None:
    """CHECKPOINT (with ``force``), switch, report; then wait for the archive (``archive``)."""
    from walvault.postgres import switch
    from walvault.postgres.connection import connect

    if not server.conninfo:
        raise WalvaultError(f"server '{server.name}' has no conninfo configured")
    try:
        with connect(server.conninfo, timeout=server.check_timeout) as conn:
            result = switch.switch_wal(conn, force=force)
    except switch.CheckpointPrivilegesRequired:
        raise
    except switch.SwitchPrivilegesRequired as exc:
        raise WalvaultError(
            f"Unable to perform pg_switch_wal for server '{server.name}'. {exc.message}"
        ) from None
    except WalvaultError as exc:
        raise WalvaultError(
            f"Unable to perform pg_switch_wal for server '{server.name}': {exc.message}"
        ) from None
    closed: str | None = result.closed_wal
    if result.in_recovery:
        ctx.info(f"No switch performed because server '{server.name}' is a standby.")
    elif closed:
        ctx.result(f"The WAL file {closed} has been closed on server '{server.name}'")
    else:
        ctx.info(f"No switch required for server '{server.name}'")
    if archive:
        _wait_for_archive(ctx, server, closed or None, timeout)


def _wait_for_archive(ctx: Context, server: ServerConfig, wal: str | None, timeout: int) -> None:
    """Run archive-wal until ``wal`` (or, unnamed, any new WAL) is in the archive."""
    from walvault import locks
    from walvault.archive.wait import wait_for_wal

    limit = f" (max: {timeout} seconds)" if timeout else ""
    if wal:
        ctx.info(f"Waiting for the WAL file {wal} from server '{server.name}'{limit}")
    else:
        ctx.info(f"Waiting for a WAL file from server '{server.name}' to be archived{limit}")
    streaming_only = server.streaming_archiver and not server.archiver
    if streaming_only and not locks.lock_holder(
        server.lock_directory, server.name, locks.RECEIVE_WAL
    ):
        ctx.warn(
            f"receive-wal is not running for server '{server.name}': streamed WAL reaches "
            f"the archive only through it (start it with 'walvault receive-wal {server.name}' "
            "or let 'walvault cron' do it)"
        )
    if wait_for_wal(server, wal, timeout, ctx.info, ctx.warn):
        if wal:
            ctx.info(f"The WAL file {wal} has been archived for server '{server.name}'")
        else:
            ctx.info(f"A new WAL file has been archived for server '{server.name}'")
        return
    if wal:
        raise WalvaultError(f"The WAL file {wal} has not been received in {timeout} seconds")
    ctx.warn(f"A WAL file has not been received in {timeout} seconds")
