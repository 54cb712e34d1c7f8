"""Checks that look only at this host: directories, queues, errors/, archive, gaps, processes."""

from __future__ import annotations

import os
import time

from walvault import locks
from walvault.archive.catalogue import iter_entries
from walvault.archive.layout import hash_dirs
from walvault.backup.info import iter_backups
from walvault.checks import CheckResult
from walvault.config import ServerConfig
from walvault.errors import StateFileError, WalvaultError, describe_os_error
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
    """Barman's staging-directory checks (only the lines that apply); a directory that cannot
    be listed makes its line FAILED, naming it."""
    limit = server.max_incoming_wals_queue
    results = []
    # (line label, directory, archiving on?, its option, whether a .partial is left out)
    for label, directory, archiving, option, skip_partial in (
        (
            "incoming",
            server.incoming_wals_directory,
            server.archiver,
            "archiver",
            not server.archiver,
        ),
        (
            "streaming",
            server.streaming_wals_directory,
            server.streaming_archiver,
            "streaming_archiver",
            server.streaming_archiver,  # the live segment of pg_receivewal is not waiting
        ),
    ):
        name = f"{label} WALs directory" if archiving else f"empty {label} directory"
        if archiving and limit is None:
            continue
        try:
            names = [n for n in _names(directory) if not n.endswith(".tmp")]
        except OSError as exc:
            results.append(CheckResult(name, False, f"cannot list it: {describe_os_error(exc)}"))
            continue
        if skip_partial:
            names = [n for n in names if not n.endswith(".partial")]
        if not archiving:
            if names:
                hint = f"'{directory}' must be empty when {option}=off"
                results.append(CheckResult(name, False, hint))
            continue
        assert limit is not None
        ok = len(names) <= limit
        hint = "" if ok else f"there are too many WALs in queue: {len(names)}, max {limit}"
        results.append(CheckResult(name, ok, hint))
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
    """Every directory exists and can be read, written and entered (checked, not created:
    checks have no effects); so can ``wals/``'s hash directories and, where they exist,
    ``meta/`` and ``base/``."""
    problems = []
    for option in (
        "backup_directory",
        "wals_directory",
        "streaming_wals_directory",
        "incoming_wals_directory",
        "errors_directory",
    ):
        path = getattr(server, option)
        if option == "wals_directory" and server.wals_in_object_storage:
            continue  # the bucket is checked by "WAL archive storage"
        if not os.path.isdir(path):
            problems.append(f"{path}: does not exist (created by 'walvault cron')")
        elif not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            problems.append(f"{path}: {_denied(path, os.R_OK | os.W_OK | os.X_OK)}")
    optional = [server.meta_directory]
    if not server.basebackups_in_object_storage:
        optional.append(server.basebackups_directory)
    local_wals = not server.wals_in_object_storage
    if local_wals and os.access(server.wals_directory, os.R_OK | os.X_OK):
        optional += [os.path.join(server.wals_directory, d) for d in hash_dirs(server)]
    for path in optional:
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            problems.append(f"{path}: {_denied(path, os.R_OK | os.W_OK | os.X_OK)}")
    return CheckResult("directories", not problems, "; ".join(problems))


def _denied(path: str, mode: int) -> str:
    """What of ``mode`` the current user lacks on ``path``, in words."""
    missing = [
        word
        for bit, word in ((os.R_OK, "read"), (os.W_OK, "write"), (os.X_OK, "enter"))
        if mode & bit and not os.access(path, bit)
    ]
    return f"cannot {' or '.join(missing)} it (Permission denied)"


def check_wal_maximum_age(server: ServerConfig) -> CheckResult:
    """The newest archived segment is younger than ``last_wal_maximum_age``."""
    if server.last_wal_maximum_age is None:
        return CheckResult("wal maximum age", True, "no last_wal_maximum_age provided")
    from walvault.archive.walstore import WalArchive

    archive = WalArchive(server)
    newest = archive.newest_segment()
    stored = archive.find(newest) if newest is not None else None
    if newest is None or stored is None:
        return CheckResult("wal maximum age", False, "No WAL files archived")
    age = time.time() - stored.info.mtime
    limit = server.last_wal_maximum_age
    ok = age <= limit
    hint = f"interval provided: {pretty_duration(limit)}, latest wal age: {pretty_duration(age)}"
    return CheckResult("wal maximum age", ok, hint)


def check_backups(server: ServerConfig) -> list[CheckResult]:
    """``failed backups`` and ``minimum redundancy requirements``."""
    found = list(iter_backups(server))
    failed = sum(1 for b in found if b.status == "FAILED")
    done = sum(1 for b in found if b.status == "DONE" and not b.is_incremental)
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
    labels = {
        "duplicate": "duplicates",
        "unknown": "unknown",
        "error": "not relevant",
        "invalid": "invalid content",
    }
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
    """FAILED while a recorded gap is not superseded by a backup taken after it (or while the
    gap records cannot be read: then nobody knows)."""
    done = [begin for _, status, begin in backups(server) if status == "DONE" and begin]
    try:
        gaps = open_gaps(server, max(done, key=lambda n: n[8:]) if done else None)
    except StateFileError as exc:
        return CheckResult("WAL gaps", False, f"cannot read the recorded gaps: {exc.message}")
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
