"""``walvault cron``: for each server, keep archive-wal and receive-wal going, never silently.

A receive-wal that keeps failing is restarted with a growing delay (the first failure is
retried at once, then 1, 2, 4... minutes, at most 30); every start after the first counts as a
restart; the failures and the last reason stay in the receiver state for status and check.
A configuration file changed since the last failure (a conninfo repointed at a promoted
standby, a typo fixed) ends the wait: the next pass starts receive-wal at once.
Then, in-process: WAITING_FOR_WALS backups are settled (check-backup) and the retention policy
is applied (obsolete backups and the WAL only they needed are deleted). Last, an incremental
WAL verification pass is started in the background, like archive-wal (walvault.verify).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from walvault import locks
from walvault.config import ServerConfig
from walvault.errors import LockBusy
from walvault.fs import ensure_dir
from walvault.receiver.state import ReceiverState, load_state, save_state
from walvault.supervise.spawn import spawn_walvault, wait_for_lock_or_exit

Echo = Callable[[str], None]
HEALTHY_RUN = 300.0  # a run this long resets the failure count
MAX_DELAY = 1800.0


def backoff_delay(consecutive_failures: int) -> float:
    """Seconds to wait before the next start: 0 after one failure, then 60, 120, ... 1800."""
    if consecutive_failures <= 1:
        return 0.0
    return float(min(60.0 * 2 ** (consecutive_failures - 2), MAX_DELAY))


def account_last_run(state: ReceiverState) -> None:
    """Fold the last finished run into the failure count (once per run)."""
    if state.started_at is None or state.ended_at is None:
        return
    if state.counted_start == state.started_at:
        return
    state.counted_start = state.started_at
    ran = state.ended_at - state.started_at
    if state.exit_code == 0:
        state.consecutive_failures = 0
    elif ran >= HEALTHY_RUN:
        state.consecutive_failures = 1
    else:
        state.consecutive_failures += 1
    delay = backoff_delay(state.consecutive_failures)
    state.next_start_after = state.ended_at + delay if delay else 0.0


def configuration_changed_since(server: ServerConfig, moment: float | None) -> bool:
    """True when the file that defines ``server`` was modified after ``moment``."""
    if moment is None or not server.config_file:
        return False
    try:
        return os.stat(server.config_file).st_mtime > moment
    except OSError:
        return False


def receiver_start_due(server: ServerConfig, echo: Echo) -> float | None:
    """Fold the last run into the failure count and decide whether to start receive-wal now.

    None when a start is due now: a start after the first is counted as a restart and the
    state is saved, so the caller must start the receiver.  Otherwise (backing off after
    repeated failures, said through ``echo``) the time of the next attempt.  The caller
    holds the server's cron lock and has seen no receive-wal running (cron and serve).
    """
    state = load_state(server)
    account_last_run(state)
    now = time.time()
    if now < state.next_start_after and configuration_changed_since(server, state.ended_at):
        echo(
            f"The configuration of server {server.name} changed since receive-wal last failed: "
            "starting it now"
        )
        state.next_start_after = 0.0
    if now < state.next_start_after:
        when = time.strftime("%H:%M:%S", time.localtime(state.next_start_after))
        last = state.exit_reason or "unknown"
        if state.cause and state.cause not in last:
            last += f": {state.cause}"
        echo(
            f"receive-wal for server {server.name} failed {state.consecutive_failures} times "
            f"in a row (last: {last}); next attempt after {when}"
        )
        save_state(server, state)
        return state.next_start_after
    if state.started_at is not None:
        state.restarts += 1
    save_state(server, state)
    return None


def ensure_receiver(config_path: str, server: ServerConfig, echo: Echo) -> None:
    """Start receive-wal unless it runs or is backing off after repeated failures."""
    if locks.lock_holder(server.lock_directory, server.name, locks.RECEIVE_WAL):
        return
    if receiver_start_due(server, echo) is not None:
        return
    echo(f"Starting streaming archiver for server {server.name}")
    proc = spawn_walvault(config_path, "receive-wal", server.name)
    wait_for_lock_or_exit(proc, server.lock_directory, server.name, locks.RECEIVE_WAL)


def ensure_archiver(config_path: str, server: ServerConfig, echo: Echo) -> None:
    """Start archive-wal in the background unless one is running."""
    if locks.lock_holder(server.lock_directory, server.name, locks.ARCHIVE_WAL):
        echo(
            f"Another archive-wal process is already running on server {server.name}. "
            "Skipping to the next server"
        )
        return
    echo(f"Starting WAL archiving for server {server.name}")
    spawn_walvault(config_path, "archive-wal", server.name)


def stop_receiver(server: ServerConfig, echo: Echo, why: str) -> None:
    """Stop a running receive-wal (the slot is kept)."""
    pid = locks.lock_holder(server.lock_directory, server.name, locks.RECEIVE_WAL)
    if pid is None:
        return
    echo(f"Server '{server.name}' {why}: stopping receive-wal subprocess")
    locks.terminate(pid)


def prepare_directories(server: ServerConfig) -> None:
    """Create the server's directories (durably) so receive-wal and archive-wal find them
    (not ``wals_directory`` when the archive is in object storage)."""
    for path in (
        server.backup_directory,
        *(() if server.wals_in_object_storage else (server.wals_directory,)),
        server.streaming_wals_directory,
        server.incoming_wals_directory,
        server.errors_directory,
        server.meta_directory,
        *(() if server.basebackups_in_object_storage else (server.basebackups_directory,)),
    ):
        ensure_dir(path)


def cron_server(
    config_path: str, server: ServerConfig, echo: Echo, *, archive_only: bool = False
) -> None:
    """One cron pass for one server, under its cron lock.

    ``archive_only``: only start archive-wal (a server whose conninfo cannot be parsed:
    nothing that connects is started or stopped).
    """
    lock = locks.ServerLock(server.lock_directory, server.name, locks.CRON)
    try:
        lock.acquire()
    except LockBusy:
        echo(
            f"Another cron process is already running on server {server.name}. "
            "Skipping to the next server"
        )
        return
    try:
        if not server.active:
            stop_receiver(server, echo, "is inactive")
            return
        prepare_directories(server)
        ensure_archiver(config_path, server, echo)
        if archive_only:
            return
        if server.streaming_archiver:
            ensure_receiver(config_path, server, echo)
        else:
            stop_receiver(server, echo, "has streaming_archiver = off")
        settle_backups(server, echo)
        apply_retention(server, echo)
        ensure_wal_verification(config_path, server, echo)
    finally:
        lock.release()


def settle_backups(server: ServerConfig, echo: Echo) -> None:
    """Barman's check-backup step: WAITING_FOR_WALS backups become DONE (or FAILED)."""
    from walvault.backup.walcheck import check_waiting_backups

    check_waiting_backups(server, echo)


def apply_retention(server: ServerConfig, echo: Echo) -> None:
    """Delete the backups ``retention_policy`` makes obsolete, and the WAL only they needed."""
    from walvault.backup.retention import enforce_retention

    enforce_retention(server, echo)


def ensure_wal_verification(config_path: str, server: ServerConfig, echo: Echo) -> None:
    """Start an incremental WAL verification pass in the background unless one is running
    (``verify --incremental``: new segments only, bounded in time; see walvault.verify)."""
    from walvault.verify.incremental import LOCK_TASK, needs_pass

    if locks.lock_holder(server.lock_directory, server.name, LOCK_TASK) or not needs_pass(server):
        return
    spawn_walvault(config_path, "verify", "--incremental", server.name)
