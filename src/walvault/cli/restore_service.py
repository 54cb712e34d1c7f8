"""``restore-service``: answer PostgreSQL's OS user's restore_command as walvault's user."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from walvault.cli.context import Context, seconds_argument

if TYPE_CHECKING:
    from walvault.config import Config


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "restore-service",
        help="serve WAL to PostgreSQL's OS user over a Unix socket (the two-user model)",
        description="Run as the walvault user (by systemd's socket activation, or any "
        "supervisor): answers 'walvault-wal-restore --service SOCKET local ...' for the OS "
        "users in restore_users, reading the archive itself and writing into the destination "
        "the client passes. See README, 'Two OS users'.",
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="where to listen (default: restore_socket, /run/walvault/restore.sock); "
        "ignored when systemd passes the socket",
    )
    p.add_argument(
        "--idle-exit",
        type=seconds_argument,
        default=0,
        metavar="SECONDS",
        help="stop after SECONDS without a request (0, the default: never)",
    )
    p.set_defaults(func=restore_service, prepare=prepare, owned_directories=owned_directories)


def prepare(ctx: Context, _args: argparse.Namespace) -> None:
    """The service never connects to PostgreSQL: libpq need not parse connection strings."""
    ctx.check_conninfo = False


def socket_path(config: Config, args: argparse.Namespace) -> str:
    """The socket to listen on: ``--socket``, else ``restore_socket``."""
    return os.path.abspath(args.socket) if args.socket else config.restore_socket


def owned_directories(config: Config, args: argparse.Namespace) -> list[tuple[str, int]]:
    """Started by root: the socket's directory, created for walvault_user, 0755 (PostgreSQL's
    user must be able to reach the socket in it)."""
    return [(os.path.dirname(socket_path(config, args)), 0o755)]


def restore_service(ctx: Context, args: argparse.Namespace) -> int:
    """Listen and answer until stopped."""
    from walvault.clients.transport import LocalSource
    from walvault.restore_service.server import (
        RestoreService,
        allowed_uids,
        install_signals,
        listen,
        systemd_listener,
    )

    config = ctx.config
    listener = systemd_listener()
    path = None if listener is not None else socket_path(config, args)
    allowed = allowed_uids(config.restore_users, ctx.warn)

    def source() -> LocalSource:
        """A fresh view of the configuration file (again on SIGHUP); a file that no longer
        loads fails here, not at the next request."""
        fresh = LocalSource(config.path)
        for name, server in config.servers.items():
            if not server.disabled:
                fresh.server(name)
        return fresh

    service = RestoreService(source, allowed, idle_exit=args.idle_exit or None)
    if listener is None:
        assert path is not None
        listener = listen(path)
    install_signals(service)  # SIGHUP: re-read the servers, reopen log_file
    where = path or "the socket systemd passed"
    users = ", ".join(f"{name} (uid {uid})" for uid, name in sorted(allowed.items()))
    ctx.info(f"restore service listening on {where} for {users}")
    import logging

    logging.getLogger("walvault").info(
        "restore-service: listening on %s for %s (pid %d)", where, users, os.getpid()
    )
    try:
        return service.run(listener)
    finally:
        listener.close()
        if path is not None:
            import contextlib

            with contextlib.suppress(OSError):
                os.unlink(path)
