"""receive-wal: preflight, slots, following forks, gap-safe positioning, running pg_receivewal."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from walvault.config import ServerConfig
from walvault.errors import LockBusy, WalvaultError
from walvault.fs import durable_replace_bytes
from walvault.locks import ServerLock
from walvault.postgres.connection import connect_replication
from walvault.postgres.programs import (
    RECEIVEWAL_NAMES,
    ClientProgram,
    find_program,
    require_compatible,
)
from walvault.postgres.replication import (
    SlotExists,
    create_physical_slot,
    drop_physical_slot,
)
from walvault.postgres.sources import WalSource, check_or_record_identity, inspect_wal_source
from walvault.receiver.command import build_receiver_command
from walvault.receiver.failover import current_position, follow_fork, is_fork_refusal
from walvault.receiver.position import resume_segment, scan_streaming, truncate_bad_partial
from walvault.receiver.process import ReceiverFailed, run_receiver
from walvault.receiver.reset import reset_position
from walvault.receiver.state import ReceiverState, load_state, save_state
from walvault.receiver.sync import parse_sync_standby_names
from walvault.subprocesses import streaming_dsn

log = logging.getLogger("walvault.receiver")
Echo = Callable[[str], None]


def _require_streaming(server: ServerConfig) -> None:
    if not server.streaming_archiver:
        raise WalvaultError(
            "Unable to start receive-wal process: streaming_archiver option set to 'off' in "
            "walvault configuration file"
        )


def _require_slot_name(server: ServerConfig, action: str) -> str:
    if not server.slot_name:
        raise WalvaultError(
            f"Unable to {action} a physical replication slot: slot_name configuration "
            "option required"
        )
    return server.slot_name


def create_slot(server: ServerConfig, echo: Echo, *, if_not_exists: bool = False) -> None:
    """``receive-wal --create-slot``: a physical slot that reserves WAL immediately."""
    slot = _require_slot_name(server, "create")
    conninfo = server.wal_source_conninfo
    if not conninfo:
        raise WalvaultError(
            "Unable to create a physical replication slot: streaming connection not configured"
        )
    echo(f"Creating physical replication slot '{slot}' on server '{server.name}'")
    with connect_replication(conninfo) as conn:
        try:
            create_physical_slot(conn, slot, server.name)
        except SlotExists:
            if not if_not_exists:
                raise
            echo(
                f"Replication slot '{slot}' already exists and --if-not-exists was specified. "
                "Skipping creation"
            )
            return
    echo(f"Replication slot '{slot}' created")


def drop_slot(server: ServerConfig, echo: Echo) -> None:
    """``receive-wal --drop-slot``: refused while the slot is in use."""
    slot = _require_slot_name(server, "drop")
    conninfo = server.wal_source_conninfo
    if not conninfo:
        raise WalvaultError(
            "Unable to drop a physical replication slot: streaming connection not configured"
        )
    echo(f"Dropping physical replication slot '{slot}' on server '{server.name}'")
    with connect_replication(conninfo) as conn:
        drop_physical_slot(conn, slot, server.name)
    echo(f"Replication slot '{slot}' dropped")


def is_synchronous(server: ServerConfig, source: WalSource, application_name: str) -> bool:
    """``--synchronous`` when forced on, or when the server lists our application_name."""
    if server.streaming_archiver_synchronous != "auto":
        return server.streaming_archiver_synchronous == "on"
    try:
        names = parse_sync_standby_names(source.info.synchronous_standby_names)
    except ValueError:
        return False
    return names.lists(application_name)


def _receive_lock(server: ServerConfig, reset: bool) -> ServerLock:
    lock = ServerLock(server.lock_directory, server.name, "receive-wal")
    try:
        lock.acquire()
    except LockBusy:
        if reset:
            raise WalvaultError(
                f"Unable to reset the status of receive-wal for server {server.name}. "
                "Process is still running"
            ) from None
        raise WalvaultError(
            f"Another receive-wal process is already running for server {server.name}."
        ) from None
    return lock


def receive_wal(server: ServerConfig, echo: Echo, warn: Echo, *, reset: bool = False) -> int:
    """Run pg_receivewal for ``server`` in the foreground (or reposition it with ``reset``)."""
    _require_streaming(server)
    if not reset:
        echo(f"Starting receive-wal for server {server.name}")
    lock = _receive_lock(server, reset)
    try:
        return _locked_receive_wal(server, echo, warn, reset=reset)
    finally:
        lock.release()


def _record_failure(server: ServerConfig, reason: str) -> None:
    """Keep a start-up failure (wrong password, missing slot...) where status and check look."""
    state = load_state(server)
    now = time.time()
    state.pid, state.child_pid = os.getpid(), None
    state.started_at, state.ended_at = now, now
    state.exit_code, state.exit_reason = 1, reason
    state.error_line = reason  # not an older run's pg_receivewal line
    state.last_lines = [*state.last_lines[-10:], f"receive-wal could not start: {reason}"]
    save_state(server, state)


def _locked_receive_wal(server: ServerConfig, echo: Echo, warn: Echo, *, reset: bool) -> int:
    try:
        return _start_streaming(server, echo, warn, reset=reset)
    except WalvaultError as exc:
        if not reset and not isinstance(exc, ReceiverFailed):
            _record_failure(server, exc.message)
        raise


def _start_streaming(server: ServerConfig, echo: Echo, warn: Echo, *, reset: bool) -> int:
    os.makedirs(server.streaming_wals_directory, exist_ok=True)
    source = _inspect(server, warn)
    program = find_program(RECEIVEWAL_NAMES, server.search_path)
    require_compatible(program, "pg_receivewal", source.info.version_num)
    assert program is not None
    _ensure_slot(server, source, echo, reset)
    follow_fork(server, source, echo, warn, strict=not reset)
    if reset:
        return reset_position(server, source, echo, warn)
    try:
        return _stream(server, source, program, echo)
    except ReceiverFailed as exc:
        if not is_fork_refusal(exc.message):
            raise
        failure = exc
    # the server forked between our look at its history and pg_receivewal's start
    echo("pg_receivewal was refused a position past a fork of the server's history")
    source = _inspect(server, warn)
    if follow_fork(server, source, echo, warn) is None:
        raise failure
    return _stream(server, source, program, echo)


def _inspect(server: ServerConfig, warn: Echo) -> WalSource:
    source = inspect_wal_source(server)
    check_or_record_identity(server, source)
    if source.info.in_recovery:
        warn(
            f"streaming WAL of server '{server.name}' from a standby: its WAL stops "
            "at what it has replayed, and a promotion switches the timeline"
        )
    return source


def _stream(server: ServerConfig, source: WalSource, program: ClientProgram, echo: Echo) -> int:
    """Position ``streaming/`` and run pg_receivewal in the foreground."""
    _guard_against_silent_skip(server, source, echo)
    message = truncate_bad_partial(
        server.streaming_wals_directory,
        scan_streaming(server.streaming_wals_directory),
        source.info.wal_segment_size,
    )
    if message:
        echo(message)
    _, _, app_name = streaming_dsn(server.wal_source_conninfo or "", server.streaming_archiver_name)
    synchronous = is_synchronous(server, source, app_name)
    command = build_receiver_command(server, program.path, synchronous=synchronous)
    previous = load_state(server)
    state = ReceiverState(
        pid=os.getpid(),
        started_at=time.time(),
        program=program.path,
        version=program.version.full,
        synchronous=synchronous,
        application_name=command.application_name,
        restarts=previous.restarts,
        consecutive_failures=previous.consecutive_failures,
        next_start_after=previous.next_start_after,
        counted_start=previous.counted_start,
    )
    if synchronous:
        echo(f"Synchronous WAL streaming for {command.application_name}: True")
    return run_receiver(server, command, state, echo)


def _ensure_slot(server: ServerConfig, source: WalSource, echo: Echo, reset: bool) -> None:
    if not server.slot_name:
        return
    if source.slot is None:
        if server.create_slot == "auto" and not reset:
            echo(f"Creating replication slot '{server.slot_name}'")
            create_slot(server, echo, if_not_exists=True)
            return
        raise WalvaultError(
            f"replication slot '{server.slot_name}' doesn't exist. Please execute "
            f"'walvault receive-wal --create-slot {server.name}'"
        )
    if source.slot.active:
        raise WalvaultError(f"replication slot '{server.slot_name}' is already in use")


def _guard_against_silent_skip(server: ServerConfig, source: WalSource, echo: Echo) -> None:
    """With streaming/ empty, resume after the newest archived segment, never at the slot.

    pg_receivewal starts from the slot when its directory is empty, which would silently skip
    whatever lies between the archive and the slot. An empty ``.partial`` of the next segment
    makes it resume exactly where the archive ends (or fail loudly if that WAL is gone). The
    archive's end is judged by page headers: a newest archived file whose header contradicts
    its name is refused (:func:`walvault.receiver.failover.current_position`).
    """
    seg_size = source.info.wal_segment_size
    files = scan_streaming(server.streaming_wals_directory)
    if resume_segment(files, seg_size) is not None:
        return
    sysid = int(source.identity.system_identifier)
    start = current_position(server, seg_size, sysid, strict=True)
    if start is None:
        return
    path = os.path.join(server.streaming_wals_directory, f"{start.name}.partial")
    durable_replace_bytes(path, b"")
    previous = start.previous(seg_size).name if start.segno(seg_size) else "none"
    echo(f"Resuming streaming after the newest archived segment {previous}: created {path}")
