"""Which segments a recovery reads: timelines, their switch points, and PostgreSQL's choice.

Pure.  A timeline's history file lists its ancestors and where each one ended (the switch
point, the first LSN of the child).  Recovering towards timeline T, PostgreSQL reads
segment number N from the newest timeline of T's history that had begun by N's segment
(XLogFileReadAnyTLI): a parent's segments up to the one before the switch point's, then the
child's -- whose first segment is a copy of the parent's WAL up to the switch point,
followed by the child's own records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from walvault.wal.history import HistoryEntry
from walvault.wal.names import Segment


@dataclass(frozen=True)
class Leg:
    """Timeline ``tli`` is followed from ``begin`` (an LSN; None: from its start) to ``end``
    (its switch point; None: it is the target, followed to the archive's end)."""

    tli: int
    begin: int | None
    end: int | None


def chain_of(target: int, histories: Mapping[int, Sequence[HistoryEntry]]) -> list[Leg]:
    """The timelines a recovery towards ``target`` goes through, oldest first."""
    legs = []
    begin: int | None = None
    for entry in histories.get(target, ()):
        legs.append(Leg(entry.parent_tli, begin, entry.switch_lsn))
        begin = entry.switch_lsn
    legs.append(Leg(target, begin, None))
    return legs


def reachable_targets(
    start_tli: int,
    start_lsn: int,
    timelines: set[int],
    histories: Mapping[int, Sequence[HistoryEntry]],
) -> list[int]:
    """The timelines a recovery starting at ``start_lsn`` on ``start_tli`` can end on:
    ``start_tli`` itself and every timeline whose history leaves ``start_tli`` after
    ``start_lsn`` (a fork before the start leads elsewhere)."""
    targets = {start_tli}
    for tli in timelines:
        for leg in chain_of(tli, histories):
            if leg.tli == start_tli and (leg.end is None or start_lsn < leg.end):
                targets.add(tli)
    return sorted(targets)


@dataclass(frozen=True)
class Step:
    """One segment of a path: its name, and whether it is the last one the path may read
    (where a ``.partial`` may stand in for it)."""

    name: str
    last: bool


def path_steps(
    legs: Sequence[Leg], start_lsn: int, seg_size: int, newest_on_target: str | None
) -> list[Step]:
    """The segments read from ``start_lsn`` along ``legs`` to ``newest_on_target`` (the
    highest segment, complete or ``.partial``, the archive has on the target timeline).

    Legs that end before ``start_lsn`` are skipped.  Without anything archived on the target
    past its switch point, the path ends with the parent's segment before it.
    """
    start_segno = start_lsn // seg_size
    steps: list[Step] = []
    for leg in legs:
        if leg.end is not None and leg.end <= start_lsn:
            continue
        first = start_segno if leg.begin is None else max(start_segno, leg.begin // seg_size)
        if leg.end is not None:
            last = leg.end // seg_size - 1  # the switch point's segment is the child's
        elif newest_on_target is not None:
            last = Segment.from_name(newest_on_target).segno(seg_size)
        else:
            last = first - 1
        steps += [
            Step(Segment.from_segno(leg.tli, segno, seg_size).name, False)
            for segno in range(first, last + 1)
        ]
    if steps:
        steps[-1] = Step(steps[-1].name, True)
    return steps


def expected_name(legs: Sequence[Leg], segno: int, seg_size: int) -> str:
    """The name of segment number ``segno`` on the path ``legs`` (the newest timeline whose
    leg has begun by that segment)."""
    tli = legs[0].tli
    for leg in legs:
        if leg.begin is None or segno >= leg.begin // seg_size:
            tli = leg.tli
    return Segment.from_segno(tli, segno, seg_size).name
