"""``check``'s list for one server, in Barman's order, with walvault's own lines added.

Each line is computed on its own: a line that cannot be computed (an unreadable directory, a
malformed state file) is that line FAILED with what and why, and the other lines still run.
The lines come one by one (:func:`iter_checks`), so a time limit keeps those already made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from walvault.backup.info import BackupInfo, scan_backups
from walvault.checks import CheckResult
from walvault.checks import local as L
from walvault.checks.catalogue import check_catalogue
from walvault.checks.continuity import check_continuity
from walvault.checks.encryption import check_encryption
from walvault.checks.facts import Endpoint, ReceiverRow, RemoteFacts, gather
from walvault.checks.lag import StreamingLag
from walvault.checks.space import check_free_space, free_for
from walvault.checks.statefiles import check_state_files
from walvault.config import ServerConfig
from walvault.errors import WalvaultError, describe_os_error
from walvault.humanize import pretty_size
from walvault.postgres.programs import (
    RECEIVEWAL_NAMES,
    find_program,
    major_name,
    served_range,
    server_major_num,
    serves,
)
from walvault.receiver.state import load_state


def guarded(name: str, compute: Callable[[], CheckResult | list[CheckResult]]) -> list[CheckResult]:
    """``compute()``'s lines, or the line ``name`` FAILED with why it could not be computed."""
    try:
        found = compute()
    except OSError as exc:
        return [CheckResult(name, False, f"cannot check: {describe_os_error(exc)}")]
    except WalvaultError as exc:
        return [CheckResult(name, False, f"cannot check: {exc.message}")]
    return found if isinstance(found, list) else [found]


def _archive_storage(server: ServerConfig) -> CheckResult:
    """The bucket of the archive answers (one LIST of at most one page)."""
    from walvault.archive.walstore import WalArchive

    archive = WalArchive(server)
    archive.probe()
    return CheckResult("WAL archive storage", True, f"{archive.url()} answers")


def run_checks(server: ServerConfig) -> list[CheckResult]:
    """Every check line for ``server``. Nothing here changes anything."""
    return list(iter_checks(server))


def iter_checks(server: ServerConfig) -> Iterator[CheckResult]:
    """The check lines of ``server``, one by one."""
    if server.disabled:
        yield CheckResult("configuration", False, "", tuple(server.messages))
        return
    archived: int | None = None
    archived_bytes = 0
    try:
        archived, archived_bytes = L.wal_archive_total(server)
    except OSError as exc:  # where Barman says "WAL archive": nothing can be said about it
        yield CheckResult("WAL archive", False, f"cannot read it: {describe_os_error(exc)}")
    if archived is not None:
        count = archived
        yield from guarded("WAL archive", lambda: L.check_wal_archive(server, count))
    yield from guarded("incoming WALs directory", lambda: L.check_queues(server))
    facts = gather(server)
    yield from _postgres(server, facts)
    yield from guarded("directories", lambda: L.check_directories(server))
    if server.wals_in_object_storage:
        yield from guarded("WAL archive storage", lambda: _archive_storage(server))
    yield CheckResult("retention policy settings", True)
    yield from guarded("encryption", lambda: check_encryption(server))
    yield from guarded("wal maximum age", lambda: L.check_wal_maximum_age(server))
    if archived is not None:
        yield CheckResult(
            "wal size", True, pretty_size(archived_bytes), perfdata=(("wals", archived_bytes),)
        )
    yield CheckResult("compression settings", True)
    backups: list[BackupInfo] = []

    def backup_lines() -> list[CheckResult]:
        backups.extend(scan_backups(server)[0])
        return L.check_backups(server)

    yield from guarded("failed backups", backup_lines)
    if any(b.is_incremental for b in backups):
        yield from guarded("summarize_wal", lambda: _summarize_wal(facts))
    yield from guarded("systemid coherence", lambda: _systemid_coherence(server, facts))
    if server.streaming_archiver:
        yield from _receiver(server, facts)
    yield from guarded("archiver errors", lambda: L.check_archiver_errors(server))
    yield from guarded("WAL gaps", lambda: L.check_gaps(server))
    yield from guarded("timeline fork", lambda: L.check_timeline_forks(server))
    yield from guarded("WAL continuity", lambda: check_continuity(server, backups))
    yield from guarded("WAL catalogue", lambda: check_catalogue(server))
    yield from guarded("free space", lambda: check_free_space(server))
    yield from guarded("state files", lambda: check_state_files(server))
    yield from guarded("WAL verification", lambda: _wal_verification(server))


def _summarize_wal(facts: RemoteFacts) -> CheckResult:
    """With incremental backups in the catalogue: the next one needs ``summarize_wal``."""
    info = facts.main.info
    if info is None:
        return CheckResult("summarize_wal", False, f"cannot read it: {facts.main.error}")
    ok = info.summarize_wal == "on"
    hint = (
        f"it is '{info.summarize_wal or 'not available'}': incremental backups "
        "(backup --incremental) need summarize_wal = on (PostgreSQL 17+)"
    )
    return CheckResult("summarize_wal", ok, "" if ok else hint)


def _wal_verification(server: ServerConfig) -> CheckResult:
    """The last incremental pass's result (walvault.verify.incremental)."""
    from walvault.verify.incremental import check_result

    return check_result(server)


def _postgres(server: ServerConfig, facts: RemoteFacts) -> list[CheckResult]:
    main = facts.main
    results = [CheckResult("PostgreSQL", main.error is None, main.error or "")]
    if server.streaming_archiver or server.backup_method == "postgres":
        stream = facts.streaming
        results.append(
            CheckResult("PostgreSQL streaming", stream.error is None, stream.error or "")
        )
    results.append(_wal_level("wal_level", main))
    if facts.wal_monitor is not None and facts.wal_streaming is not None:
        results += _wal_source(server, facts.wal_monitor, facts.wal_streaming, main)
    elif server.slot_name:
        results.append(_slot("replication slot", server, main))
    return results


def _wal_level(name: str, endpoint: Endpoint) -> CheckResult:
    if endpoint.info is None:
        return CheckResult(name, False, f"cannot read it: {endpoint.error}")
    ok = endpoint.info.wal_level in ("replica", "logical")
    return CheckResult(name, ok, "" if ok else "please set it to a higher level than 'minimal'")


def _wal_source(
    server: ServerConfig, monitor: Endpoint, streaming: Endpoint, main: Endpoint
) -> list[CheckResult]:
    results = []
    if monitor.error is not None:
        results.append(
            CheckResult("has monitoring privileges (WAL streaming)", False, monitor.error)
        )
    elif monitor.monitoring:
        results.append(CheckResult("has monitoring privileges (WAL streaming)", True))
    else:
        hint = "privileges for PostgreSQL monitoring functions are required (see documentation)"
        results.append(CheckResult("no access to monitoring functions", False, hint))
    results.append(
        CheckResult(
            "PostgreSQL streaming (WAL streaming)", streaming.error is None, streaming.error or ""
        )
    )
    results.append(_wal_level("wal_level (WAL streaming)", monitor))
    ids = {
        e.info.system_identifier if e.info else e.identity.system_identifier if e.identity else None
        for e in (monitor, streaming, main)
    } - {None}
    ok = len(ids) <= 1
    hint = (
        ""
        if ok
        else "the WAL source and conninfo reach different clusters (system identifiers differ)"
    )
    results.append(CheckResult("systemid coherence (WAL streaming)", ok, hint))
    if server.slot_name:
        results.append(_slot("replication slot (WAL streaming)", server, monitor))
    return results


def _slot(name: str, server: ServerConfig, endpoint: Endpoint) -> CheckResult:
    slot_name = server.slot_name
    if endpoint.error is not None:
        return CheckResult(name, False, f"cannot read the slot: {endpoint.error}")
    slot = endpoint.slot
    if not server.streaming_archiver:
        if slot is None:
            return CheckResult(name, True)
        state = "active" if slot.active else "initialised"
        return CheckResult(
            name,
            True,
            f"WARNING: slot '{slot_name}' is {state} but not required by the current config",
        )
    if slot is None:
        return CheckResult(
            name,
            False,
            f"replication slot '{slot_name}' doesn't exist. Please execute "
            f"'walvault receive-wal --create-slot {server.name}'",
        )
    if slot.restart_lsn is None:
        return CheckResult(
            name, False, f"slot '{slot_name}' not initialised: is 'receive-wal' running?"
        )
    if slot.wal_status == "lost":
        return CheckResult(
            name,
            False,
            f"slot '{slot_name}' has lost WAL (wal_status = lost): "
            f"run 'walvault receive-wal --reset {server.name}'",
        )
    if not slot.active:
        return CheckResult(name, False, f"slot '{slot_name}' not active: is 'receive-wal' running?")
    return CheckResult(name, True)


def _systemid_coherence(server: ServerConfig, facts: RemoteFacts) -> CheckResult:
    from walvault.identity import read_identity

    live = facts.main.info.system_identifier if facts.main.info else None
    streamed = facts.streaming.identity.system_identifier if facts.streaming.identity else None
    if live and streamed and live != streamed:
        return CheckResult(
            "systemid coherence",
            False,
            "is the streaming DSN targeting the same server of the PostgreSQL connection string?",
        )
    stored = read_identity(server)
    if stored is None:
        return CheckResult("systemid coherence", True, "no system Id stored on disk")
    current = live or streamed
    if current is None:
        return CheckResult("systemid coherence", True, "no system Id available")
    if stored.get("systemid") != current:
        return CheckResult(
            "systemid coherence",
            False,
            "the system Id of the connected PostgreSQL server changed, stored in "
            f'"{server.identity_path}"',
        )
    return CheckResult("systemid coherence", True)


def _receiver(server: ServerConfig, facts: RemoteFacts) -> list[CheckResult]:
    program = find_program(RECEIVEWAL_NAMES, server.search_path)
    results = [CheckResult("pg_receivexlog", program is not None)]
    wal = facts.wal_facts
    server_version = wal.info.version_num if wal.info else None
    if program is None or server_version is None:
        pg_major = major_name(server_major_num(server_version)) if server_version else None
        hint = (
            f"PostgreSQL version: {pg_major}, "
            f"pg_receivexlog version: {program.version.full if program else None}"
        )
        results.append(CheckResult("pg_receivexlog compatible", False, hint))
    else:
        ok = serves("pg_receivewal", program.version, server_version)
        hint = (
            ""
            if ok
            else (
                f"PostgreSQL version: {major_name(server_major_num(server_version))}, "
                f"pg_receivexlog version: {program.version.full} (it streams servers from "
                f"{served_range('pg_receivewal', program.version)})"
            )
        )
        results.append(CheckResult("pg_receivexlog compatible", ok, hint))
    results += guarded("receive-wal running", lambda: _receiver_running(server, wal))
    results += guarded("streaming lag", lambda: streaming_lag_result(server, facts))
    return results


def _receiver_running(server: ServerConfig, wal: Endpoint) -> CheckResult:
    """OK only when the PID in the lock is alive and (with a slot) the slot is active."""
    name = "receive-wal running"
    pid = L.receiver_pid(server)
    if pid is None:
        note = _disk_note(server)
        hint = L.receiver_failure_hint(server)
        return CheckResult(name, False, f"{note}; {hint}" if note else hint)
    if not server.slot_name:
        return CheckResult(name, True)
    if wal.error is not None:
        return CheckResult(name, False, f"PID {pid} is alive; cannot verify the slot: {wal.error}")
    if wal.slot is None or not wal.slot.active:
        hint = f"receive-wal (PID {pid}) is alive but the slot is not active; "
        return CheckResult(name, False, hint + L.receiver_failure_hint(server))
    return CheckResult(name, True)


def _disk_note(server: ServerConfig) -> str:
    """When streaming/ sits on a (nearly) full filesystem: the likely cause, in words."""
    free = free_for(server.streaming_wals_directory)
    if free is None or free >= max(server.min_free_space, 1 << 20):
        return ""
    return (
        f"the filesystem of streaming/ has only {pretty_size(free)} free: pg_receivewal "
        "cannot start a segment there (No space left on device, see free space)"
    )


def streaming_lag_result(server: ServerConfig, facts: RemoteFacts) -> CheckResult:
    """How far the receiver's written position is behind the server's current one.

    FAILED when no client with the receiver's name is connected, or above
    ``max_streaming_lag`` (a receiver that stalled stays connected until the server's
    ``wal_sender_timeout``)."""
    wal = facts.wal_facts
    if wal.error is not None:
        return CheckResult("streaming lag", False, f"cannot measure: {wal.error}")
    row = wal.receiver
    state = load_state(server)
    if row is None or wal.info is None or wal.info.current_lsn is None:
        who = state.application_name or server.streaming_archiver_name
        return CheckResult(
            "streaming lag", False, f"no streaming client named '{who}' is connected"
        )
    measured = receiver_lag(wal.info.current_lsn, row)
    lag = measured.written_behind
    limit = server.max_streaming_lag
    ok = limit is None or lag <= limit
    threshold = f"max_streaming_lag {pretty_size(limit)}" if limit else "no max_streaming_lag"
    hint = f"{measured.describe()}; {threshold} (on written)"
    if not ok:
        hint += " exceeded: the receiver is stalled or cannot keep up"
    perfdata = (("lag", lag), ("flush_lag", measured.flushed_behind))
    return CheckResult("streaming lag", ok, hint, perfdata=perfdata)


def receiver_lag(current: int, row: ReceiverRow) -> StreamingLag:
    """The receiver's distances from the server's current LSN (see checks.lag)."""
    return StreamingLag(
        current=current,
        sent=row.sent_lsn or 0,
        written=row.write_lsn or 0,
        flushed=row.flush_lsn or 0,
        sync_state=row.sync_state,
    )
