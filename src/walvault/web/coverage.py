"""Archive coverage for the status page: which segments each timeline has, as ranges.

Read from the catalogue (``<server>-xlog.db``), incrementally: each call reads only the
lines appended since the last one, so a page refresh costs the same with 100 or 1,000,000
archived segments, and memory holds ranges, not names.  A catalogue that was rewritten
(retention, ``rebuild-xlogdb``: another inode, or shorter than what was read) is read again
from the start.  Contiguity across a log file boundary depends on the segment size, so the
ranges are rebuilt when it becomes known (or changes).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field

from walvault.archive.catalogue import parse_line
from walvault.wal.names import Segment, is_history, is_segment

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


@dataclass
class Coverage:
    """Ranges of archived segment numbers per timeline, plus the newest catalogue entry."""

    segment_size: int = DEFAULT_SEGMENT_SIZE
    #: timeline -> sorted, disjoint, non-adjacent [first segno, last segno] ranges
    ranges: dict[int, list[list[int]]] = field(default_factory=dict)
    history: set[int] = field(default_factory=set)
    files: int = 0
    last_name: str | None = None
    last_time: float | None = None

    def add_segment(self, name: str) -> None:
        """Record one archived segment (idempotent)."""
        segment = Segment.from_name(name)
        segno = segment.segno(self.segment_size)
        ranges = self.ranges.setdefault(segment.tli, [])
        index = bisect.bisect_right(ranges, [segno, float("inf")])
        if index and ranges[index - 1][1] >= segno:
            return  # already inside a range
        joins_left = index > 0 and ranges[index - 1][1] == segno - 1
        joins_right = index < len(ranges) and ranges[index][0] == segno + 1
        if joins_left and joins_right:
            ranges[index - 1][1] = ranges[index][1]
            del ranges[index]
        elif joins_left:
            ranges[index - 1][1] = segno
        elif joins_right:
            ranges[index][0] = segno
        else:
            ranges.insert(index, [segno, segno])

    def name_of(self, tli: int, segno: int) -> str:
        """The segment name of ``segno`` on timeline ``tli``."""
        return Segment.from_segno(tli, segno, self.segment_size).name


class CoverageReader:
    """Keeps a :class:`Coverage` up to date with one server's catalogue."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.coverage = Coverage()
        self._inode: tuple[int, int] | None = None
        self._offset = 0

    def update(self, segment_size: int | None = None) -> Coverage:
        """Read what was appended since the last call; start over when needed."""
        wanted = segment_size or self.coverage.segment_size
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._reset(wanted)
            return self.coverage
        inode = (stat.st_dev, stat.st_ino)
        if (
            inode != self._inode
            or stat.st_size < self._offset
            or wanted != self.coverage.segment_size
        ):
            self._reset(wanted)
            self._inode = inode
        if stat.st_size > self._offset:
            self._read_from_offset()
        return self.coverage

    def _reset(self, segment_size: int) -> None:
        self.coverage = Coverage(segment_size=segment_size)
        self._inode = None
        self._offset = 0

    def _read_from_offset(self) -> None:
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a torn last line is read again next time
        self._offset += end
        for raw in data[:end].splitlines():
            try:
                entry = parse_line(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            self.coverage.files += 1
            self.coverage.last_name, self.coverage.last_time = entry.name, entry.time
            if is_segment(entry.name):
                self.coverage.add_segment(entry.name)
            elif is_history(entry.name):
                self.coverage.history.add(int(entry.name[:8], 16))
