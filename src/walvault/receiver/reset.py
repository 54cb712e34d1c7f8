"""``receive-wal --reset``: restart streaming where the server really still has WAL.

What walvault holds is judged by the files' page headers, never by names alone: the newest
file of ``streaming/`` that holds WAL whose header matches its name, else the newest archived
segment whose header matches its name (files that contradict their names are reported and
passed over). Empty ``.partial`` status files hold no WAL; they only say where a receiver
should start, so a wrong one is replaced.

What the server still has comes from ``pg_ls_waldir()`` (``pg_monitor``): the oldest segment
from which every segment up to the current one is still in ``pg_wal``, on the timelines of
the server's history. The slot's ``restart_lsn`` is no evidence: a pg_receivewal that asked
for removed WAL reports that position back and drags ``restart_lsn`` to it.

If walvault's position is older than that, the segments in between are lost: the gap is
recorded (:func:`walvault.receiver.gaps.record_gap`, once per range, so a re-run after a crash
records nothing twice) before the status file moves. A position past the server's current
one, confirmed by headers, is refused: the server's history went back on the same timeline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.fs import durable_replace_bytes
from walvault.postgres.sources import WalSource, source_history, source_wal_files
from walvault.receiver.gaps import load_gaps, record_gap
from walvault.receiver.position import (
    StreamingFiles,
    archive_resume,
    resume_segment,
    scan_streaming,
)
from walvault.receiver.timelines import Span, history_path, segment_timeline
from walvault.wal.header import LONG_HEADER_SIZE, check_segment, parse_long_header
from walvault.wal.names import Segment, format_lsn

Echo = Callable[[str], None]


log = logging.getLogger("walvault")


def _segment(path: Sequence[Span], segno: int, seg_size: int) -> Segment:
    """Segment ``segno`` named on the timeline the server's history holds it on."""
    return Segment.from_segno(segment_timeline(path, segno, seg_size), segno, seg_size)


def oldest_available(
    names: set[str], current_segno: int, path: Sequence[Span], seg_size: int
) -> int:
    """The lowest segment number from which the server has every segment up to the current
    one (each on the timeline its history holds it on)."""
    segno = current_segno
    while segno > 0 and _segment(path, segno - 1, seg_size).name in names:
        segno -= 1
    return segno


def _header_problem(directory: str, name: str, system_identifier: int) -> str | None:
    """Why a streamed file holds no WAL matching its name ("" when it holds no WAL at all)."""
    try:
        with open(os.path.join(directory, name), "rb") as handle:
            head = handle.read(LONG_HEADER_SIZE)
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    if not any(head):
        return ""  # empty, or not written yet: a status file
    try:
        header = parse_long_header(head)
    except ValueError as exc:
        return str(exc)
    problems = check_segment(header, expected_name=name, system_identifier=system_identifier)
    return "; ".join(problems) if problems else None


def _streamed_position(
    files: StreamingFiles, seg_size: int, system_identifier: int, warn: Echo
) -> Segment | None:
    """pg_receivewal's pick among the files of ``streaming/`` that hold matching WAL."""
    kept: dict[str, list[str]] = {"segments": [], "partials": []}
    for key, names in (("segments", files.segments), ("partials", files.partials)):
        for name in names:
            problem = _header_problem(files.directory, name, system_identifier)
            if problem:
                warn(f"{os.path.join(files.directory, name)} is not used as a position: {problem}")
            if problem is None:
                kept[key].append(name)
    holding = StreamingFiles(tuple(kept["segments"]), tuple(kept["partials"]), files.directory)
    return resume_segment(holding, seg_size)


def _walvault_position(
    server: ServerConfig, files: StreamingFiles, seg_size: int, sysid: int, warn: Echo
) -> Segment | None:
    position = _streamed_position(files, seg_size, sysid, warn)
    if position is not None:
        return position
    found = archive_resume(server, seg_size, sysid)
    for path, problem in found.misnamed:
        warn(
            f"{path} is not the segment its name says ({problem}): not used as a resume point. "
            f"Move it out of the archive (then 'walvault rebuild-xlogdb {server.name}') before "
            "streaming reaches that name"
        )
    if found.resume is None and found.misnamed:
        raise WalvaultError(
            f"none of the {len(found.misnamed)} newest archived segments of server "
            f"'{server.name}' is the segment its name says: no position to resume from"
        )
    return found.resume


def _record_gap_once(
    server: ServerConfig, first: Segment, last: Segment, why: str, echo: Echo
) -> None:
    if any(
        g.first_missing == first.name and g.last_missing == last.name for g in load_gaps(server)
    ):
        echo(f"WAL gap {first.name}..{last.name} is recorded already")
        return
    gap = record_gap(server, first.name, last.name, why)
    echo(f"Recording a WAL gap: {gap.first_missing}..{gap.last_missing} will never be archived")
    log.warning(
        "server %s: receive-wal --reset recorded a WAL gap %s..%s: that WAL will never be "
        "archived (%s); streaming resumes after it",
        server.name,
        gap.first_missing,
        gap.last_missing,
        why,
    )


def _place_status(
    directory: str, files: StreamingFiles, target: Segment, seg_size: int, echo: Echo
) -> None:
    """Make ``target`` pg_receivewal's start: remove empty status files, write its own."""
    echo("Resetting receive-wal directory status")
    wanted = f"{target.name}.partial"
    for name in files.partials:
        path = os.path.join(directory, name)
        if name != wanted and os.path.getsize(path) == 0:
            echo(f"Removing status file {path}")
            os.unlink(path)
            log.info(
                "receive-wal --reset removed the empty status file %s (it holds no WAL; "
                "streaming restarts at %s)",
                path,
                target.name,
            )
    status = os.path.join(directory, wanted)
    if not os.path.exists(status):
        echo(f"Creating status file {status}")
        durable_replace_bytes(status, b"")
    start = resume_segment(scan_streaming(directory), seg_size)
    if start != target:
        raise WalvaultError(
            f"{directory} still holds a file that makes pg_receivewal start at "
            f"{start.name if start else 'the slot'} instead of {target.name}: move the "
            "files above it (their headers do not match their names) out of streaming/"
        )


def reset_position(server: ServerConfig, source: WalSource, echo: Echo, warn: Echo) -> int:
    """``--reset``: restart streaming where the server still has WAL, recording any gap."""
    info = source.info
    seg_size = info.wal_segment_size
    if info.current_lsn is None:
        raise WalvaultError(f"cannot read the current WAL position of server '{server.name}'")
    sysid = int(source.identity.system_identifier)
    _, entries = source_history(server, source.identity.timeline)
    path = history_path(source.identity.timeline, entries)
    directory = server.streaming_wals_directory
    files = scan_streaming(directory)
    named = resume_segment(files, seg_size)
    position = _walvault_position(server, files, seg_size, sysid, warn)
    if position is None and named is None:
        echo("Nothing to do. Position of receive-wal is aligned.")
        return 0
    current = info.current_lsn
    if position is not None and position.to_lsn(seg_size) > current:
        raise WalvaultError(
            f"the WAL walvault holds for server '{server.name}' reaches "
            f"{format_lsn(position.to_lsn(seg_size))} on timeline {position.tli}, past the "
            f"server's current position {format_lsn(current)}, and the files' headers confirm "
            "it: the server's history went back on the same timeline (restored from a "
            "snapshot or a file copy?) or the configuration points at another server. "
            "receive-wal will not mix two histories under the same WAL names"
        )
    current_segno = current // seg_size
    oldest = oldest_available(source_wal_files(server), current_segno, path, seg_size)
    if position is None:  # only an empty status file, and no WAL anywhere
        assert named is not None
        position = named if named.to_lsn(seg_size) <= current else None
    if position is None or position.segno(seg_size) < oldest:
        target = _segment(path, oldest, seg_size)
    else:
        target = _segment(path, position.segno(seg_size), seg_size)
    if position is not None and position.segno(seg_size) < oldest:
        _record_gap_once(
            server,
            _segment(path, position.segno(seg_size), seg_size),
            _segment(path, oldest - 1, seg_size),
            f"receive-wal --reset: the server no longer had this WAL (its oldest segment "
            f"was {target.name})",
            echo,
        )
    on_path = {span.tli for span in path}
    if (
        named is not None
        and named.segno(seg_size) == target.segno(seg_size)
        and named.tli in on_path
    ):
        # the same segment, on its timeline or on an ancestor pg_receivewal follows from
        echo("Nothing to do. Position of receive-wal is aligned (the server still has its WAL).")
        return 0
    _place_status(directory, files, target, seg_size, echo)
    return 0
