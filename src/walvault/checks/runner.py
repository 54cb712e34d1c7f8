"""``check``'s list for one server, in Barman's order, with walvault's own lines added."""

from __future__ import annotations

from walvault.checks import CheckResult
from walvault.checks import local as L
from walvault.checks.facts import Endpoint, RemoteFacts, gather
from walvault.config import ServerConfig
from walvault.humanize import pretty_size
from walvault.receiver.binary import (
    RECEIVEWAL_NAMES,
    find_program,
    major_name,
    server_major_num,
)
from walvault.receiver.state import load_state
from walvault.wal.names import format_lsn


def run_checks(server: ServerConfig) -> list[CheckResult]:
    """Every check line for ``server``. Nothing here changes anything."""
    if server.disabled:
        return [CheckResult("configuration", False, "", tuple(server.messages))]
    results: list[CheckResult] = []
    archived, archived_bytes = L.wal_archive_total(server)
    results += L.check_wal_archive(server, archived)
    results += L.check_queues(server)
    facts = gather(server)
    results += _postgres(server, facts)
    results.append(L.check_directories(server))
    results.append(CheckResult("retention policy settings", True))
    results.append(L.check_wal_maximum_age(server))
    results.append(
        CheckResult(
            "wal size", True, pretty_size(archived_bytes), perfdata=(("wals", archived_bytes),)
        )
    )
    results.append(CheckResult("compression settings", True))
    results += L.check_backups(server)
    results.append(_systemid_coherence(server, facts))
    if server.streaming_archiver:
        results += _receiver(server, facts)
    results.append(L.check_archiver_errors(server))
    results.append(L.check_gaps(server))
    results.append(_wal_verification(server))
    return results


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
        ok = program.version.major_num >= server_major_num(server_version)
        hint = (
            ""
            if ok
            else (
                f"PostgreSQL version: {major_name(server_major_num(server_version))}, "
                f"pg_receivexlog version: {program.version.full}"
            )
        )
        results.append(CheckResult("pg_receivexlog compatible", ok, hint))
    results.append(_receiver_running(server, wal))
    results.append(_lag(server, facts))
    return results


def _receiver_running(server: ServerConfig, wal: Endpoint) -> CheckResult:
    """OK only when the PID in the lock is alive and (with a slot) the slot is active."""
    name = "receive-wal running"
    pid = L.receiver_pid(server)
    if pid is None:
        return CheckResult(name, False, L.receiver_failure_hint(server))
    if not server.slot_name:
        return CheckResult(name, True)
    if wal.error is not None:
        return CheckResult(name, False, f"PID {pid} is alive; cannot verify the slot: {wal.error}")
    if wal.slot is None or not wal.slot.active:
        hint = f"receive-wal (PID {pid}) is alive but the slot is not active; "
        return CheckResult(name, False, hint + L.receiver_failure_hint(server))
    return CheckResult(name, True)


def _lag(server: ServerConfig, facts: RemoteFacts) -> CheckResult:
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
    written = row.write_lsn or 0
    lag = max(wal.info.current_lsn - written, 0)
    hint = (
        f"{lag} bytes behind (server at {format_lsn(wal.info.current_lsn)}, received "
        f"{format_lsn(written)}, flushed {format_lsn(row.flush_lsn or 0)}, {row.sync_state})"
    )
    return CheckResult("streaming lag", True, hint, perfdata=(("lag", lag),))
