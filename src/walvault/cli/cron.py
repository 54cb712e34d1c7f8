"""``cron``: run every minute from the system's cron to keep every server's WAL moving."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from walvault.cli.context import Context
from walvault.errors import WalvaultError, describe_os_error

log = logging.getLogger("walvault.cron")


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser("cron", help="start archive-wal and keep receive-wal running")
    p.set_defaults(func=cron)


def cron(ctx: Context, args: argparse.Namespace) -> int:
    """One pass over every server; a failing server does not stop the others."""
    from walvault import locks
    from walvault.config import archivable_servers
    from walvault.supervise.cron import cron_server

    config = ctx.config
    failures = 0
    archivable: set[str] | None = None  # read again only if a server is disabled
    for server in config.servers.values():
        archive_only = False
        if server.disabled:
            if archivable is None:
                archivable = archivable_servers(config.path)
            if server.name not in archivable:
                ctx.info(f"Skipping temporarily disabled server '{server.name}'")
                continue
            ctx.warn(
                f"Server '{server.name}' is disabled ({'; '.join(server.messages)}): "
                "archiving only, as archive-wal never connects; no receive-wal, backup "
                "checks or retention until the configuration is fixed"
            )
            archive_only = True
        try:
            cron_server(config.path, server, ctx.info, archive_only=archive_only)
        except Exception as exc:  # one server's trouble must not stop the others
            failures += 1
            ctx.error(f"Unable to run cron on server '{server.name}': {_reason(exc)}")
            if not isinstance(exc, OSError | WalvaultError):  # a bug: keep its traceback
                log.exception("cron failed for server %s", server.name)
    if config.lock_directory_cleanup:
        locks.cleanup_lock_directory(config.lock_directory)
    return 1 if failures else 0


def _reason(exc: Exception) -> str:
    """One line: the path and errno of an OSError (a full disk...), else the message."""
    return describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
