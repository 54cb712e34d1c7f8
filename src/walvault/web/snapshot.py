"""The status of every server as one JSON-able value: ``/api/status``, and the source of the
status page and of ``/metrics``.

Built on request from what the commands keep on disk (receiver state, catalogue, backups,
gaps, staging directories) and what the service holds in memory (its workers, lag samples,
check results, errors: :class:`walvault.supervise.runtime.ServerRuntime`).  Free text that
reaches a page (hints, errors, pg_receivewal's lines) passes through the masking of every
configured connection string first, so a password that slipped into a message is shown as
``*****``.  Connection strings themselves never enter the document.
"""

from __future__ import annotations

import os
import time
from typing import Any

from walvault import __version__, locks
from walvault.backup.info import DONE, iter_backups
from walvault.checks.local import staged_count
from walvault.conninfo import mask_text
from walvault.receiver.gaps import load_gaps, open_gaps
from walvault.receiver.state import load_state
from walvault.supervise.runtime import ServerRuntime
from walvault.wal.names import Segment

STOPPED_BY_REQUEST = "stopped on request (SIGINT/SIGTERM)"


def scrub_all(texts: list[str], secrets: list[str]) -> list[str]:
    """``texts`` with every password of ``secrets`` (conninfos) masked, in one pass: the
    texts are joined by NUL (which no password and no message contains), masked by
    :func:`walvault.conninfo.mask_text` and split again."""
    if not secrets or not texts:
        return texts
    joined = "\0".join(text.replace("\0", " ") for text in texts)
    return mask_text(joined, secrets).split("\0")


def receiver_view(rt: ServerRuntime, now: float) -> dict[str, Any]:
    """The receiver's state: from our worker and ``walvault-receiver.json``."""
    server = rt.server
    state = load_state(server)
    ours = rt.receiver is not None and rt.receiver.exit_code is None
    lock_pid = locks.read_lock_pid(
        locks.lock_path(server.lock_directory, server.name, locks.RECEIVE_WAL)
    )
    holder_alive = lock_pid is not None and locks.pid_alive(lock_pid) and lock_pid == state.pid
    child_alive = state.child_pid is not None and locks.pid_alive(state.child_pid)
    # the receive-wal holding the lock has recorded its run, and its pg_receivewal lives
    up = holder_alive and child_alive
    if not rt.wants_receiver:
        label = "off"
    elif up:
        label = "streaming"
    elif ours or rt.receiver_starting:
        label = "starting"
    elif rt.external_receiver:
        label = "external"
    elif rt.next_receiver_start > now:
        label = "backing off"
    else:
        label = "down"
    return {
        "wanted": rt.wants_receiver,
        "state": label,
        "up": up,
        "pid": state.pid if holder_alive else None,
        "pg_receivewal_pid": state.child_pid if child_alive else None,
        "managed_by_serve": ours,
        "external": rt.external_receiver is not None and not ours,
        "started_at": state.started_at,
        "ended_at": state.ended_at,
        "restarts": state.restarts,
        "consecutive_failures": state.consecutive_failures,
        "next_start_after": rt.next_receiver_start if rt.next_receiver_start > now else None,
        "exit_reason": state.exit_reason,
        "synchronous": state.synchronous,
        "last_lines": state.last_lines[-8:],
    }


def coverage_view(rt: ServerRuntime) -> dict[str, Any]:
    """Archived ranges per timeline, history files, gaps and backups, on one segment axis."""
    assert rt.coverage is not None
    backups = list(iter_backups(rt.server))
    seg_size = rt.segment_size or next(
        (b.xlog_segment_size for b in reversed(backups) if b.xlog_segment_size), None
    )
    coverage = rt.coverage.update(seg_size)
    size = coverage.segment_size

    def segno(name: str | None) -> int | None:
        if not name or len(name) < 24:
            return None
        try:
            return Segment.from_name(name[:24]).segno(size)
        except ValueError:
            return None

    timelines = [
        {
            "timeline": tli,
            "ranges": [
                [coverage.name_of(tli, a), coverage.name_of(tli, b), a, b] for a, b in ranges
            ],
        }
        for tli, ranges in sorted(coverage.ranges.items())
    ]
    done = [b for b in backups if b.status == DONE]
    newest_done = max((b.begin_wal for b in done if b.begin_wal), key=lambda n: n[8:], default=None)
    still_open = {(g.first_missing, g.last_missing) for g in open_gaps(rt.server, newest_done)}
    gaps = [
        {
            "first": g.first_missing,
            "last": g.last_missing,
            "from": segno(g.first_missing),
            "to": segno(g.last_missing),
            "timeline": int(g.first_missing[:8], 16),
            "recorded_at": g.recorded_at,
            "reason": g.reason,
            "open": (g.first_missing, g.last_missing) in still_open,
        }
        for g in load_gaps(rt.server)
    ]
    last_done = max((b.end_time.timestamp() for b in done if b.end_time), default=None)
    return {
        "segment_size": size,
        "files": coverage.files,
        "timelines": timelines,
        "history": sorted(coverage.history),
        "gaps": gaps,
        "open_gaps": sum(1 for g in gaps if g["open"]),
        "backups": [
            {
                "id": b.backup_id,
                "name": b.backup_name,
                "status": b.status,
                "begin_wal": b.begin_wal,
                "end_wal": b.end_wal,
                "from": segno(b.begin_wal),
                "to": segno(b.end_wal),
                "timeline": b.timeline,
                "end_time": b.end_time.timestamp() if b.end_time else None,
            }
            for b in backups
        ],
        "last_done_backup_time": last_done,
    }


def _error_files(directory: str) -> int:
    try:
        return sum(1 for name in os.listdir(directory) if not name.startswith("."))
    except FileNotFoundError:
        return 0


def server_view(rt: ServerRuntime, now: float) -> dict[str, Any]:
    """Everything the page, the API and the metrics say about one server."""
    server = rt.server
    coverage = coverage_view(rt)
    streaming, incoming = staged_count(server)
    receiver = receiver_view(rt, now)
    assert rt.coverage is not None
    last = rt.coverage.coverage
    # every free text of the server, masked in one pass (one parse of each conninfo)
    texts = [
        receiver["exit_reason"] or "",
        rt.lag_error or "",
        *receiver["last_lines"],
        *server.messages,
        *(str(r.get("hint", "")) for r in rt.checks),
        *(message for _, _, message in reversed(rt.errors)),
    ]
    masked = iter(scrub_all(texts, server.secrets()))
    receiver["exit_reason"] = next(masked) or None
    lag_error = next(masked) or None
    receiver["last_lines"] = [next(masked) for _ in receiver["last_lines"]]
    messages = [next(masked) for _ in server.messages]
    checks = [{**r, "hint": next(masked)} for r in rt.checks]
    errors = [
        {"at": at, "source": source, "message": next(masked)}
        for at, source, _ in reversed(rt.errors)
    ]
    return {
        "name": server.name,
        "description": server.description or "",
        "active": server.active,
        "disabled": server.disabled,
        "archive_only": rt.archive_only,
        "messages": messages,
        "receiver": receiver,
        "lag": {
            "bytes": rt.lag_bytes,
            "at": rt.lag_at,
            "error": lag_error,
            "samples": [list(sample) for sample in rt.lag_samples],
        },
        "archive": {
            "last_name": last.last_name,
            "last_time": last.last_time,
            "backlog": {"streaming": streaming, "incoming": incoming},
            "error_files": _error_files(server.errors_directory),
            "archiving": rt.archiver is not None,
        },
        "coverage": coverage,
        "checks": {"at": rt.checks_at, "results": checks},
        "errors": errors,
        "storage": [[d, o, c, f] for (d, o), (c, f) in sorted(rt.storage.items())],
    }


def snapshot(
    runtimes: list[ServerRuntime], *, started_at: float, listen: str, service_errors: list[str]
) -> dict[str, Any]:
    """The whole status document."""
    now = time.time()
    return {
        "service": {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": started_at,
            "now": now,
            "listen": listen,
            "errors": service_errors[-10:],
        },
        "servers": [server_view(rt, now) for rt in runtimes if not rt.removed],
    }
