"""Walking a path of archived segments: one record chain, its end, and its first problem.

Each segment is read through :func:`walvault.verify.source.read_plain` and walked with
:func:`walvault.wal.records.walk_segment`, with the carry-over of the segment before it.
Walks are remembered by (file, carry, start): paths towards several timelines, and several
backups, share their segments, and once two walks are in step (same carry) every later
segment is read and walked once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from walvault.config import ServerConfig
from walvault.verify.plan import Step
from walvault.verify.source import ArchiveIndex, ArchiveReadError, read_plain
from walvault.wal.names import Segment, format_lsn
from walvault.wal.pagecheck import unpack_long_header
from walvault.wal.records import END, SWITCH, Carry, SegmentWalk, walk_segment

Reader = Callable[[ServerConfig, str], bytes]


class SegmentSource:
    """Reads and walks the archived segments of one server, remembering every walk."""

    def __init__(
        self,
        server: ServerConfig,
        segment_size: int,
        system_identifier: int | None,
        read: Reader = read_plain,
    ) -> None:
        self.server, self.segment_size = server, segment_size
        self.system_identifier = system_identifier
        self.read = read
        self.memo: dict[tuple[str, Carry | None, int | None], SegmentWalk] = {}
        self.files_read = 0
        self.bytes_read = 0

    def walk(self, file_name: str, carry: Carry | None, start_lsn: int | None) -> SegmentWalk:
        """The walk of ``file_name`` (a segment or ``.partial`` name) after ``carry``."""
        key = (file_name, carry, start_lsn)
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = self._walk(file_name, carry, start_lsn)
        return found

    def _walk(self, file_name: str, carry: Carry | None, start_lsn: int | None) -> SegmentWalk:
        name = file_name[:24]
        try:
            data = self.read(self.server, file_name)
        except ArchiveReadError as exc:
            start = Segment.from_name(name).to_lsn(self.segment_size)
            return SegmentWalk(END, start, None, 0, (exc.message,), None, exc.message)
        self.files_read += 1
        self.bytes_read += len(data)
        if self.system_identifier is None:  # nothing recorded: the first segment sets it
            with contextlib.suppress(ValueError):
                self.system_identifier = unpack_long_header(data)[5]
        try:
            return walk_segment(
                data,
                name,
                segment_size=self.segment_size,
                carry=carry,
                start_lsn=start_lsn,
                system_identifier=self.system_identifier,
                partial=file_name.endswith(".partial"),
            )
        except ValueError as exc:  # a start LSN that is no record position in this segment
            start = Segment.from_name(name).to_lsn(self.segment_size)
            return SegmentWalk(END, start, None, 0, (f"{name}: {exc}",), None, str(exc))


@dataclass(frozen=True)
class PathResult:
    """How far an unbroken record chain goes along a path.

    ``reached`` is the end of the last valid record (what a recovery replays up to: the RPO
    this path delivers) and ``reached_segment`` the file holding it; ``problem`` the first
    thing that breaks the chain (None when the path reaches the archive's end); ``ended``
    how the last file ended (``XLOG_SWITCH``, a record going on into a segment not yet
    archived, the zeros at the end of a ``.partial``).
    """

    first: str | None
    last: str | None
    segments: int
    records: int
    reached: int | None
    reached_segment: str | None
    problem: str | None
    ended: str

    def describe_range(self) -> str:
        """``<first> to <last>, N segments`` (or what was read)."""
        if self.first is None:
            return "no segment read"
        if self.last is None or self.last == self.first:
            return f"{self.first}, {self.segments} segment{'s' if self.segments != 1 else ''}"
        return f"{self.first} to {self.last}, {self.segments} segments"


def walk_path(
    source: SegmentSource, index: ArchiveIndex, steps: Sequence[Step], start_lsn: int | None
) -> PathResult:
    """Walk ``steps`` in order, from the record at ``start_lsn`` (None: the first record that
    begins in the first segment), carrying the chain from segment to segment."""
    carry: Carry | None = None
    first = last = reached_segment = None
    reached: int | None = None
    segments = records = 0
    problem: str | None = None
    ended = ""
    for position, step in enumerate(steps):
        name = step.name
        if name in index.segments:
            file_name = name
        elif step.last and name in index.partials:
            file_name = name + ".partial"
        else:
            only = f" (only {name}.partial is archived)" if name in index.partials else ""
            problem = f"{name} is missing from the archive{only}"
            break
        walk = source.walk(file_name, carry, start_lsn if carry is None else None)
        first = first or file_name
        records += walk.records
        if walk.valid_until is not None:
            reached, reached_segment = walk.valid_until, file_name
        if walk.problems:
            problem = walk.problems[0]
            break
        segments += 1
        last = file_name
        if walk.verdict == END:
            if not step.last:
                following = steps[position + 1].name
                problem = (
                    f"the records end at {format_lsn(walk.end_lsn)} in {file_name} "
                    f"({walk.end_reason}), but {following} follows on this path"
                )
            ended = walk.end_reason
            break
        if walk.verdict == SWITCH:
            ended = "XLOG_SWITCH"
        elif walk.carry is not None and walk.carry.pending_left:
            ended = "a record goes on into the next segment"
        else:
            ended = "the last record ends at the segment's end"
        carry = walk.carry
    return PathResult(first, last, segments, records, reached, reached_segment, problem, ended)
