"""Incremental WAL verification: cron's cheap pass over the segments archived since the last one.

``walvault verify --incremental SERVER`` (which cron starts in the background, one at a time
per server, under ``.<server>-verify-wal.lock``) follows the path a recovery towards the
newest timeline reads, segment by segment, with the record chain carried across segments,
from where the previous pass stopped.  It stops at the archive's end, at the first problem,
or after :data:`PASS_SECONDS`; a later pass goes on from there.

Where it got to lives in ``<backup_directory>/walvault-verify.json``, replaced atomically (so
a crash loses at most the progress since the last save, which is walked again) and checked
strictly when read: a file that does not validate is reported by ``check`` and the next pass
starts over.  It holds the path's timeline, the verified range (first and last segment), the
carry-over after the last segment (so the chain is checked across the boundary with the
next one), the RPO reached and the first problem.

Where it starts: at the begin LSN of the oldest DONE backup on the path, else at the oldest
archived segment of the path.  A problem stays reported (and its segment is walked again
at every pass, so a repaired file clears it) until a DONE backup beginning after it moves
the start there.  A new timeline that forks before the last verified segment makes the pass
walk again from the fork's segment, on the new timeline.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from walvault import locks
from walvault.backup import info as binfo
from walvault.backup.info import DONE, BackupInfo
from walvault.checks import CheckResult
from walvault.config import ServerConfig
from walvault.fs import durable_replace_bytes
from walvault.humanize import pretty_duration
from walvault.identity import stored_system_identifier
from walvault.verify.chain import SegmentSource
from walvault.verify.plan import Leg, chain_of, expected_name
from walvault.verify.source import ArchiveIndex, load_histories, segment_size_of
from walvault.wal.names import Segment, format_lsn, is_segment, parse_lsn, valid_segment_size
from walvault.wal.records import END, Carry

log = logging.getLogger("walvault.verify")
Echo = Callable[[str], None]

STATE_FILE = "walvault-verify.json"
LOCK_TASK = "verify-wal"
#: Seconds one pass may walk for (cron starts the next one a minute later at the earliest).
PASS_SECONDS = 40.0
_SAVE_EVERY = 16  # segments between two saves of the state within a pass
_VERSION = 1
_HEX_RE = re.compile(r"(?:[0-9a-f]{2}){0,24}")


@dataclass(frozen=True)
class VerifyState:
    """Where incremental verification got to (the content of ``walvault-verify.json``)."""

    segment_size: int
    timeline: int  # the path's timeline (the newest when the range began)
    first_segment: str  # where the verified range begins
    start_lsn: int | None  # the record it begins at (a backup's begin), None: the segment's first
    last_segment: str | None = None  # the last segment verified
    carry: Carry | None = None  # the chain after last_segment
    rpo_lsn: int | None = None  # the end of the last valid record
    rpo_segment: str | None = None
    segments: int = 0  # segments verified in the range
    problem: str | None = None  # the first problem (the chain stops before it)
    problem_segment: str | None = None
    updated_at: float = 0.0


class StateError(ValueError):
    """``walvault-verify.json`` cannot be used."""


def state_path(server: ServerConfig) -> str:
    """``<backup_directory>/walvault-verify.json``."""
    return os.path.join(server.backup_directory, STATE_FILE)


def _lsn(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise StateError(f"an LSN must be a string, not {value!r}")
    try:
        return parse_lsn(value)
    except ValueError as exc:
        raise StateError(str(exc)) from None


def _segment(value: object, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not is_segment(value):
        raise StateError(f"not a segment name: {value!r}")
    return value


def _int(value: object, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise StateError(f"not a whole number >= {low}: {value!r}")
    return value


def _carry_from(data: object) -> Carry | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise StateError("carry must be an object")
    head = data.get("pending_head", "")
    if not isinstance(head, str) or not _HEX_RE.fullmatch(head):
        raise StateError("carry.pending_head must be up to 24 bytes of lower-case hex")
    return Carry(
        next_lsn=_lsn(data.get("next_lsn")) or 0,
        prev_lsn=_lsn(data.get("prev_lsn")),
        page_tli=_int(data.get("page_tli"), 1),
        pending_lsn=_lsn(data.get("pending_lsn")),
        pending_head=bytes.fromhex(head),
        pending_crc=_int(data.get("pending_crc", 0)),
        pending_left=_int(data.get("pending_left", 0)),
    )


def _carry_to(carry: Carry | None) -> dict[str, object] | None:
    if carry is None:
        return None
    return {
        "next_lsn": format_lsn(carry.next_lsn),
        "prev_lsn": format_lsn(carry.prev_lsn) if carry.prev_lsn is not None else None,
        "page_tli": carry.page_tli,
        "pending_lsn": format_lsn(carry.pending_lsn) if carry.pending_lsn is not None else None,
        "pending_head": carry.pending_head.hex(),
        "pending_crc": carry.pending_crc,
        "pending_left": carry.pending_left,
    }


def parse_state(text: str) -> VerifyState:
    """Validate the file's content strictly (StateError says what is wrong)."""
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise StateError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        raise StateError(f"not a version {_VERSION} verification state")
    size = _int(data.get("segment_size"), 1)
    if not valid_segment_size(size):
        raise StateError(f"invalid segment size {size}")
    problem = data.get("problem")
    if problem is not None and not isinstance(problem, str):
        raise StateError("problem must be a string")
    updated = data.get("updated_at", 0.0)
    if not isinstance(updated, int | float) or isinstance(updated, bool):
        raise StateError("updated_at must be a number")
    state = VerifyState(
        segment_size=size,
        timeline=_int(data.get("timeline"), 1),
        first_segment=_segment(data.get("first_segment"), optional=False) or "",
        start_lsn=_lsn(data.get("start_lsn")),
        last_segment=_segment(data.get("last_segment")),
        carry=_carry_from(data.get("carry")),
        rpo_lsn=_lsn(data.get("rpo_lsn")),
        rpo_segment=_segment(data.get("rpo_segment")),
        segments=_int(data.get("segments", 0)),
        problem=problem,
        problem_segment=_segment(data.get("problem_segment")),
        updated_at=float(updated),
    )
    if state.last_segment is not None and state.carry is not None:
        expected = Segment.from_name(state.last_segment).next(size).to_lsn(size)
        if state.carry.next_lsn != expected:
            raise StateError("the carry does not follow last_segment")
    return state


def dump_state(state: VerifyState) -> str:
    """The file's content."""
    data = asdict(state)
    data["carry"] = _carry_to(state.carry)
    for key in ("start_lsn", "rpo_lsn"):
        value = getattr(state, key)
        data[key] = format_lsn(value) if value is not None else None
    return json.dumps({"version": _VERSION, **data}, indent=2, sort_keys=True) + "\n"


def load_state(server: ServerConfig) -> VerifyState | None:
    """The stored state, None when there is none (StateError when it is unusable)."""
    try:
        with open(state_path(server), encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read it: {exc.strerror}") from None
    return parse_state(text)


def save_state(server: ServerConfig, state: VerifyState) -> None:
    """Replace the stored state atomically and durably."""
    durable_replace_bytes(state_path(server), dump_state(state).encode())


# ---------------------------------------------------------------------------- the pass


def _segno(name: str, size: int) -> int:
    return Segment.from_name(name).segno(size)


def _on_path(legs: list[Leg], name: str, size: int) -> bool:
    return expected_name(legs, _segno(name, size), size) == name


def _fresh_start(
    legs: list[Leg], index: ArchiveIndex, backups: list[BackupInfo], size: int, target: int
) -> VerifyState | None:
    """Where a new range begins: the oldest DONE backup on the path, else its oldest segment."""
    for backup in backups:
        if backup.begin_wal and backup.begin_xlog and _on_path(legs, backup.begin_wal, size):
            return VerifyState(size, target, backup.begin_wal, parse_lsn(backup.begin_xlog))
    on_path = sorted(
        (_segno(n, size), n) for n in index.segments if _on_path(legs, n, size)
    )  # fmt: skip
    if not on_path:
        return None
    return VerifyState(size, target, on_path[0][1], None)


def _superseding_backup(
    state: VerifyState, legs: list[Leg], backups: list[BackupInfo], size: int
) -> BackupInfo | None:
    """The oldest DONE backup on the path that begins after the state's problem."""
    if state.problem is None:
        return None
    bad = _segno(state.problem_segment or state.first_segment, size)
    for backup in backups:
        if (
            backup.begin_wal
            and backup.begin_xlog
            and _on_path(legs, backup.begin_wal, size)
            and _segno(backup.begin_wal, size) > bad
        ):
            return backup
    return None


def _begin(backup: BackupInfo) -> int | None:
    return parse_lsn(backup.begin_xlog) if backup.begin_xlog else None


def _backup_after_unneeded(
    legs: list[Leg], backups: list[BackupInfo], segno: int, size: int
) -> BackupInfo | None:
    """When no DONE backup on the path needs segment ``segno`` (all begin after it), the
    oldest of them: where verification goes on after a hole retention made."""
    on_path = [
        b for b in backups if b.begin_wal and b.begin_xlog and _on_path(legs, b.begin_wal, size)
    ]
    if not on_path or any(_segno(b.begin_wal or "", size) <= segno for b in on_path):
        return None
    return min(on_path, key=lambda b: _segno(b.begin_wal or "", size))


def _rewound(state: VerifyState, old: list[Leg], new: list[Leg], size: int) -> VerifyState:
    """The state on the path ``new`` (a new timeline appeared): what was verified on ``old``
    up to the first segment the new path reads from another timeline stays verified; the
    walk goes on from that segment (the carry before it is not kept: it resynchronises)."""
    first = _segno(state.first_segment, size)
    last = _segno(state.last_segment, size) if state.last_segment is not None else first
    boundaries = {leg.begin // size for leg in (*old, *new) if leg.begin is not None}
    for segno in sorted({first} | {b for b in boundaries if first <= b <= last}):
        if expected_name(old, segno, size) == expected_name(new, segno, size):
            continue
        if segno == first:
            return replace(
                state, first_segment=expected_name(new, first, size), last_segment=None,
                carry=None, segments=0, rpo_lsn=None, rpo_segment=None,
            )  # fmt: skip
        return replace(
            state,
            last_segment=expected_name(new, segno - 1, size),
            carry=None,
            segments=max(state.segments - (last - segno + 1), 0),
        )
    return state


def _waiting(server: ServerConfig, name: str) -> bool:
    """Is ``name`` still on its way (in ``streaming/`` or ``incoming/``, not archived yet)?"""
    return any(
        os.path.exists(os.path.join(directory, name))
        for directory in (server.streaming_wals_directory, server.incoming_wals_directory)
    )


def run_pass(
    server: ServerConfig, *, seconds: float = PASS_SECONDS, echo: Echo | None = None
) -> VerifyState | None:
    """One incremental pass; returns the state it leaves (None: nothing to verify yet).

    Raises :class:`walvault.errors.LockBusy` when another pass runs for this server.
    """
    lock = locks.ServerLock(server.lock_directory, server.name, LOCK_TASK)
    with lock:
        return _pass(server, seconds, echo or (lambda _text: None))


def live_timeline(index: ArchiveIndex) -> int:
    """The timeline of the newest complete segment (the highest position; the highest
    timeline among equals): the one the server writes.  Not simply the highest timeline
    number: a history file can announce a timeline that never got WAL of its own."""
    newest = max(index.segments, key=lambda name: (name[8:], name[:8]))
    return int(newest[:8], 16)


def needs_pass(server: ServerConfig) -> bool:
    """Whether a pass has anything to do: cron's cheap test before starting one (a new
    segment archived since the last pass, a problem to walk again, or no usable state)."""
    try:
        state = load_state(server)
    except StateError:
        return True
    if state is None or state.problem is not None:
        return True
    from walvault.archive.layout import newest_archived_segment

    return newest_archived_segment(server) != state.last_segment


def _pass(server: ServerConfig, seconds: float, echo: Echo) -> VerifyState | None:
    deadline = time.monotonic() + seconds
    index = ArchiveIndex.scan(server)
    if not index.segments:
        return None
    histories, _problems = load_histories(server, index.histories)  # (verify reports them)
    target = live_timeline(index)
    legs = chain_of(target, histories)
    backups = [b for b in binfo.iter_backups(server) if b.status == DONE]
    try:
        state = load_state(server)
    except StateError as exc:
        log.warning("%s: %s is unusable (%s): starting over", server.name, STATE_FILE, exc)
        state = None
    size = state.segment_size if state is not None else None
    if size is None:
        size = next((b.xlog_segment_size for b in backups if b.xlog_segment_size), None)
        size = size or segment_size_of(server, min(index.segments))
        if size is None:
            return None
    if state is not None and state.timeline != target:
        old = chain_of(state.timeline, histories)
        state = replace(_rewound(state, old, legs, size), timeline=target)
    superseding = _superseding_backup(state, legs, backups, size) if state else None
    if state is None or superseding is not None or not _on_path(legs, state.first_segment, size):
        state = _fresh_start(legs, index, backups, size, target)
        if state is None:
            return None
        if superseding is not None:
            echo(f"WAL verification of {server.name} restarts at backup {superseding.backup_id}")
    else:
        state = replace(state, problem=None, problem_segment=None)  # walked again below
    source = SegmentSource(server, size, stored_system_identifier(server))
    walked = 0
    while walked == 0 or time.monotonic() < deadline:  # one segment at least: progress
        if state.last_segment is None:
            segno = _segno(state.first_segment, size)
        else:
            segno = _segno(state.last_segment, size) + 1
        name = expected_name(legs, segno, size)
        if name not in index.segments:
            later = [n for n in index.segments if _on_path(legs, n, size) and n[8:] > name[8:]]
            if not later or _waiting(server, name):
                break  # the archive's end: the next pass goes on
            after = _backup_after_unneeded(legs, backups, segno, size)
            if after is not None:  # removed by retention: no backup needs it any more
                state = VerifyState(size, target, after.begin_wal or "", _begin(after))
                continue
            state = replace(
                state, problem=f"{name} is missing from the archive", problem_segment=name
            )
            break
        start = state.start_lsn if state.last_segment is None else None
        walk = source.walk(name, state.carry, start)
        if walk.problems or walk.verdict == END:
            problem = walk.problems[0] if walk.problems else f"{name}: {walk.end_reason}"
            state = replace(state, problem=problem, problem_segment=name)
            if walk.valid_until is not None:
                state = replace(state, rpo_lsn=walk.valid_until, rpo_segment=name)
            break
        state = replace(
            state,
            last_segment=name,
            carry=walk.carry,
            segments=state.segments + 1,
            rpo_lsn=walk.valid_until if walk.valid_until is not None else state.rpo_lsn,
            rpo_segment=name if walk.valid_until is not None else state.rpo_segment,
        )
        walked += 1
        if walked % _SAVE_EVERY == 0:
            save_state(server, replace(state, updated_at=time.time()))
    state = replace(state, updated_at=time.time())
    save_state(server, state)
    if state.problem:
        log.warning("%s: WAL verification: %s", server.name, state.problem)
    return state


# ---------------------------------------------------------------------------- check


def describe(state: VerifyState) -> str:
    """The verified range and RPO, in one phrase."""
    if state.last_segment is None:
        text = f"nothing verified yet from {state.first_segment}"
    else:
        text = f"verified {state.first_segment} to {state.last_segment} ({state.segments} segments)"
    if state.rpo_lsn is not None:
        text += f", RPO {format_lsn(state.rpo_lsn)} in {state.rpo_segment}"
    return text


def check_result(server: ServerConfig, now: float | None = None) -> CheckResult:
    """``WAL verification``: the last incremental pass's result (no side effects)."""
    name = "WAL verification"
    try:
        state = load_state(server)
    except StateError as exc:
        return CheckResult(
            name, False, f"{state_path(server)} is unusable ({exc}); the next cron pass starts over"
        )
    if state is None:
        return CheckResult(name, True, "not run yet (cron verifies new WAL segments)")
    age = pretty_duration(max((now or time.time()) - state.updated_at, 0))
    if state.problem is not None:
        return CheckResult(
            name,
            False,
            f"first bad segment {state.problem_segment}: {state.problem}; {describe(state)} "
            f"(checked {age} ago)",
        )
    return CheckResult(name, True, f"{describe(state)} (checked {age} ago)")
