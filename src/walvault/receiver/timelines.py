"""Where two timeline histories part: the fork point a receiver must restart from.

A timeline's history file lists its ancestors: ``<parent TLI> <switch LSN>`` lines, oldest
first.  Read as a *path*, it says which timeline holds the WAL at each LSN: the first
ancestor up to its switch point, then the next one, and the timeline itself from its last
switch point on.  A position *on* a switch point belongs to the child, as in PostgreSQL.

Two paths (walvault's streamed timeline and the server's current one) agree up to a first
LSN at which they name different timelines: the fork point.  pg_receivewal follows a fork
by itself only while its start position (the beginning of the segment it resumes) is not
past that point; beyond it the server answers "requested starting point ... is not in this
server's history".  Everything here is pure: no file, no connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from walvault.wal.history import HistoryEntry


@dataclass(frozen=True)
class Span:
    """Timeline ``tli`` holds the WAL from ``begin`` up to ``end`` (exclusive; None: open)."""

    tli: int
    begin: int
    end: int | None


def history_path(tli: int, entries: Sequence[HistoryEntry]) -> list[Span]:
    """The path of timeline ``tli`` whose history file holds ``entries`` (oldest first)."""
    spans: list[Span] = []
    begin = 0
    for entry in entries:
        spans.append(Span(entry.parent_tli, begin, entry.switch_lsn))
        begin = entry.switch_lsn
    spans.append(Span(tli, begin, None))
    return spans


def timeline_at(path: Sequence[Span], lsn: int) -> int:
    """The timeline that holds ``lsn`` on ``path`` (a switch point belongs to the child)."""
    for span in path:
        if span.end is None or lsn < span.end:
            return span.tli
    raise ValueError("a timeline path must end with an open span")  # pragma: no cover


def segment_timeline(path: Sequence[Span], segno: int, seg_size: int) -> int:
    """The timeline whose file holds segment ``segno`` on ``path``.

    The segment in which a switch happens is read from the new timeline's file (the old
    one keeps it only as a ``.partial``), so the timeline of the segment's last byte counts.
    """
    return timeline_at(path, (segno + 1) * seg_size - 1)


def fork_point(ours: Sequence[Span], theirs: Sequence[Span]) -> int | None:
    """The first LSN at which ``ours`` and ``theirs`` name different timelines.

    None when they never differ (the same timeline, or ours is theirs still open-ended).
    """
    points = sorted({0, *(s.begin for s in (*ours, *theirs)), *_ends(ours), *_ends(theirs)})
    for point in points:
        if timeline_at(ours, point) != timeline_at(theirs, point):
            return point
    return None


def _ends(path: Sequence[Span]) -> list[int]:
    return [s.end for s in path if s.end is not None]


def path_through(theirs: Sequence[Span], tli: int) -> list[Span] | None:
    """The path of ``tli`` read off ``theirs`` when ``tli`` is on it (else None).

    A timeline's history is the history of its parents, so an ancestor's own path is a
    prefix of any descendant's: no history file of ``tli`` is needed.
    """
    for index, span in enumerate(theirs):
        if span.tli == tli:
            return [*theirs[:index], Span(tli, span.begin, None)]
    return None
