"""What ``walvault serve``'s workers run: each the function its command runs.

* a receiver: :func:`walvault.receiver.service.receive_wal`, as ``walvault receive-wal``;
* an archive-wal run: :func:`walvault.archive.archiver.archive_wal`, then cron's settling of
  WAITING_FOR_WALS backups; it reports what it archived, what it set aside and the storage
  requests it counted (:mod:`walvault.counters`);
* a maintenance pass, under the server's cron lock: cron's steps that need no supervisor
  (stop the receive-wal of an inactive server or one with ``streaming_archiver = off``,
  settle backups, apply retention).

Each is a ``target(emit) -> exit code`` for :func:`walvault.supervise.children.fork_child`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from walvault import counters, locks
from walvault.config import ServerConfig
from walvault.errors import LockBusy, WalvaultError
from walvault.supervise.children import Emit
from walvault.supervise.cron import apply_retention, settle_backups, stop_receiver

log = logging.getLogger("walvault.serve")


def receiver_target(server: ServerConfig) -> Callable[[Emit], int]:
    """receive-wal for ``server`` until pg_receivewal ends (its exit code)."""

    def run(_emit: Emit) -> int:
        from walvault.receiver.service import receive_wal

        already_logged = f"{server.name}: "  # run_receiver logs pg_receivewal's lines itself

        def echo(text: str) -> None:
            if not text.startswith(already_logged):
                log.info("%s", text)

        try:
            return receive_wal(server, echo, log.warning)
        except WalvaultError as exc:
            log.error("receive-wal for server %s: %s", server.name, exc.message)
            return exc.exit_code

    return run


def archive_target(server: ServerConfig, settle: bool) -> Callable[[Emit], int]:
    """One archive-wal run for ``server`` (then, with ``settle``, the backups' settling)."""

    def run(emit: Emit) -> int:
        from walvault.archive.archiver import archive_wal

        try:
            result = archive_wal(server, log.info, verbose=False, warn=log.warning)
            if result.archived and settle:
                settle_backups(server, log.info)
        except WalvaultError as exc:
            emit({"error": exc.message, "storage": counters.drain()})
            return exc.exit_code
        emit(
            {
                "archived": result.archived,
                "busy": result.busy,
                "errors": result.errors,
                "failed": [list(item) for item in result.failed],
                "storage": counters.drain(),
            }
        )
        return result.exit_code

    return run


def maintenance_target(server: ServerConfig) -> Callable[[Emit], int]:
    """cron's maintenance steps for ``server``, skipped while a cron pass holds its lock."""

    def run(emit: Emit) -> int:
        lock = locks.ServerLock(server.lock_directory, server.name, locks.CRON)
        try:
            lock.acquire()
        except LockBusy:
            return 0  # a cron pass is doing the same right now
        try:
            if not server.active:
                stop_receiver(server, log.info, "is inactive")
                return 0
            if not server.streaming_archiver:
                stop_receiver(server, log.info, "has streaming_archiver = off")
            settle_backups(server, log.info)
            apply_retention(server, log.info)
        except WalvaultError as exc:
            emit({"error": exc.message, "storage": counters.drain()})
            return exc.exit_code
        finally:
            lock.release()
        emit({"storage": counters.drain()})
        return 0

    return run


def preload() -> None:
    """Import what the workers run before the first fork, so that every worker shares these
    modules' pages instead of importing them again (each import costs CPU and memory)."""
    import psycopg  # noqa: F401

    import walvault.archive.archiver
    import walvault.backup.delete
    import walvault.backup.retention
    import walvault.backup.walcheck
    import walvault.checks.runner
    import walvault.receiver.service
    import walvault.supervise.probe  # noqa: F401
