"""Checks that look only at this host: directories, queues, errors/, archive, gaps, processes."""

from __future__ import annotations

import os
import time

from walvault import locks
from walvault.archive.catalogue import iter_entries
from walvault.archive.layout import newest_archived_segment
from walvault.backup.info import iter_backups
from walvault.checks import CheckResult
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.humanize import pretty_duration
from walvault.receiver.gaps import open_gaps
from walvault.receiver.state import load_state
from walvault.wal.names import classify


def _names(directory: str) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if not n.startswith(".")]
    except FileNotFoundError:
        return []


def backups(server: ServerConfig) -> list[tuple[str, str, str | None]]:
    """(backup id, status, begin WAL) for every ``meta/<id>-backup.info``, oldest first."""
    return [(b.backup_id, b.status, b.begin_wal) for b in iter_backups(server)]


def check_queues(server: ServerConfig) -> list[CheckResult]:
    """Barman's staging-directory checks (only the lines that apply)."""
    results = []
    incoming = [n for n in _names(server.incoming_wals_directory) if not n.endswith(".tmp")]
    streaming = [n for n in _names(server.streaming_wals_directory) if not n.endswith(".tmp")]
    if not server.archiver:
        waiting = [n for n in incoming if not n.endswith(".partial")]
        if waiting:
            hint = f"'{server.incoming_wals_directory}' must be empty when archiver=off"
            results.append(CheckResult("empty incoming directory", False, hint))
    elif server.max_incoming_wals_queue is not None:
        ok = len(incoming) <= server.max_incoming_wals_queue
        hint = "" if ok else f"there are too many WALs in queue: {len(incoming)}, "
        hint += "" if ok else f"max {server.max_incoming_wals_queue}"
        results.append(CheckResult("incoming WALs directory", ok, hint))
    if not server.streaming_archiver:
        if streaming:
            hint = f"'{server.streaming_wals_directory}' must be empty when streaming_archiver=off"
            results.append(CheckResult("empty streaming directory", False, hint))
    elif server.max_incoming_wals_queue is not None:
        queued = [n for n in streaming if not n.endswith(".partial")]
        ok = len(queued) <= server.max_incoming_wals_queue
        hint = "" if ok else f"there are too many WALs in queue: {len(queued)}, "
        hint += "" if ok else f"max {server.max_incoming_wals_queue}"
        results.append(CheckResult("streaming WALs directory", ok, hint))
    return results


def wal_archive_total(server: ServerConfig) -> tuple[int, int]:
    """(number of catalogue entries, bytes archived) from xlog.db."""
    count = size = 0
    for entry in iter_entries(server.xlogdb_path):
        count += 1
        size += entry.size
    return count, size


def check_wal_archive(server: ServerConfig, archived: int) -> list[CheckResult]:
    """Shown only when nothing has been archived (and no backup waits for WAL)."""
    if archived or any(status == "WAITING_FOR_WALS" for _, status, _ in backups(server)):
        return []
    hint = "please make sure WAL shipping is setup"
    if server.streaming_archiver:
        hint += (
            f" (once streaming, 'walvault switch-wal --archive {server.name}' archives a segment)"
        )
    return [CheckResult("WAL archive", False, hint)]


def check_directories(server: ServerConfig) -> CheckResult:
    """Every directory exists and is writable (checked, not created: checks have no effects)."""
    problems = []
    for option in (
        "backup_directory",
        "wals_directory",
        "streaming_wals_directory",
        "incoming_wals_directory",
        "errors_directory",
    ):
        path = getattr(server, option)
        if not os.path.isdir(path):
            problems.append(f"{path}: does not exist (created by 'walvault cron')")
        elif not os.access(path, os.W_OK | os.X_OK):
            problems.append(f"{path}: not writable")
    return CheckResult("directories", not problems, "; ".join(problems))


def check_wal_maximum_age(server: ServerConfig) -> CheckResult:
    """The newest archived segment is younger than ``last_wal_maximum_age``."""
    if server.last_wal_maximum_age is None:
        return CheckResult("wal maximum age", True, "no last_wal_maximum_age provided")
    newest = newest_archived_segment(server)
    if newest is None:
        return CheckResult("wal maximum age", False, "No WAL files archived")
    path = os.path.join(server.wals_directory, newest[:16], newest)
    age = time.time() - os.path.getmtime(path)
    limit = server.last_wal_maximum_age
    ok = age <= limit
    hint = f"interval provided: {pretty_duration(limit)}, latest wal age: {pretty_duration(age)}"
    return CheckResult("wal maximum age", ok, hint)


def check_backups(server: ServerConfig) -> list[CheckResult]:
    """``failed backups`` and ``minimum redundancy requirements``."""
    found = backups(server)
    failed = sum(1 for _, status, _ in found if status == "FAILED")
    done = sum(1 for _, status, _ in found if status == "DONE")
    want = server.minimum_redundancy
    return [
        CheckResult("failed backups", failed == 0, f"there are {failed} failed backups"),
        CheckResult(
            "minimum redundancy requirements",
            done >= want,
            f"have {done} non-incremental backups, expected at least {want}",
        ),
    ]


def summarise_errors(server: ServerConfig) -> str:
    """``duplicates: 1, unknown: 2`` from the suffixes of the files in errors/."""
    labels = {"duplicate": "duplicates", "unknown": "unknown", "error": "not relevant"}
    counts: dict[str, int] = {}
    for name in _names(server.errors_directory):
        label = labels.get(name.rsplit(".", 1)[-1], "unknown failure")
        if name.endswith(".foreign"):
            label = "foreign cluster"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{label}: {n}" for label, n in sorted(counts.items()))


def check_archiver_errors(server: ServerConfig) -> CheckResult:
    """OK while errors/ is empty."""
    summary = summarise_errors(server)
    return CheckResult("archiver errors", not summary, summary)


def check_gaps(server: ServerConfig) -> CheckResult:
    """FAILED while a recorded gap is not superseded by a backup taken after it."""
    done = [begin for _, status, begin in backups(server) if status == "DONE" and begin]
    gaps = open_gaps(server, max(done, key=lambda n: n[8:]) if done else None)
    if not gaps:
        return CheckResult("WAL gaps", True)
    hint = "; ".join(g.describe() for g in gaps)
    hint += f" - take a new backup ('walvault backup {server.name}') to recover past it"
    return CheckResult("WAL gaps", False, hint)


def check_timeline_forks(server: ServerConfig) -> CheckResult:
    """FAILED while a recorded fork is not superseded by a DONE backup that begins after it."""
    from walvault.receiver.forks import done_backup_starts, load_forks, open_forks

    name = "timeline fork"
    try:
        forks = open_forks(load_forks(server), done_backup_starts(server))
    except WalvaultError as exc:
        return CheckResult(name, False, exc.message)
    if not forks:
        return CheckResult(name, True)
    hint = "; ".join(fork.describe() for fork in forks)
    hint += f" - take a new backup ('walvault backup {server.name}') to clear this"
    return CheckResult(name, False, hint)


def receiver_pid(server: ServerConfig) -> int | None:
    """The PID of a live receive-wal, from its lock."""
    pid = locks.lock_holder(server.lock_directory, server.name, locks.RECEIVE_WAL)
    return pid if pid is not None and locks.pid_alive(pid) else None


def receiver_failure_hint(server: ServerConfig) -> str:
    """Why the receiver is not running, from its recorded evidence: pg_receivewal's decisive
    error line (not its incidental last line) and what to do about it."""
    from walvault.receiver.state import advice

    state = load_state(server)
    parts = []
    if state.exit_reason:
        parts.append(f"last exit: {state.exit_reason}")
    cause = state.cause
    last = cause or next((line for line in reversed(state.last_lines) if line.strip()), None)
    if last and (not state.exit_reason or last not in state.exit_reason):
        parts.append(f"{'cause' if cause else 'last message'}: {last}")
    todo = advice(f"{state.exit_reason} {cause}", server.name)
    if todo:
        parts.append(todo)
    if state.consecutive_failures > 1:
        parts.append(f"{state.consecutive_failures} failures in a row")
    return "; ".join(parts) or "See the walvault log file for more details"


def staged_count(server: ServerConfig) -> tuple[int, int]:
    """Files waiting in streaming/ (not counting the live partial) and incoming/."""
    streaming = [n for n in _names(server.streaming_wals_directory) if classify(n)]
    partials = sorted(n for n in streaming if n.endswith(".partial"))
    waiting = len(streaming) - (1 if partials else 0)
    incoming = len([n for n in _names(server.incoming_wals_directory) if classify(n)])
    return waiting, incoming
