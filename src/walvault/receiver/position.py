"""Where pg_receivewal will resume, computed from streaming/ the way it does (FindStreamingStart).

The highest segment present decides: a complete segment means "the next one", a ``.partial``
means "that one". Only an empty directory lets pg_receivewal fall back to the slot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from walvault.wal.names import Segment, is_partial, is_segment


@dataclass(frozen=True)
class StreamingFiles:
    """What streaming/ holds: complete segments and partials, sorted by name."""

    segments: tuple[str, ...]
    partials: tuple[str, ...]

    @property
    def newest_partial(self) -> str | None:
        """The live ``.partial`` (the highest one)."""
        return self.partials[-1] if self.partials else None


def scan_streaming(directory: str) -> StreamingFiles:
    """List streaming/ (dot files and temporary files are ignored)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        names = []
    return StreamingFiles(
        tuple(sorted(n for n in names if is_segment(n))),
        tuple(sorted(n for n in names if is_partial(n))),
    )


def resume_segment(files: StreamingFiles, seg_size: int) -> Segment | None:
    """The segment pg_receivewal will start streaming, or None for an empty directory."""
    best: Segment | None = None
    best_segno = -1
    for name in files.segments:
        seg = Segment.from_name(name).next(seg_size)
        if seg.segno(seg_size) > best_segno:
            best, best_segno = seg, seg.segno(seg_size)
    for name in files.partials:
        seg = Segment.from_name(name)
        if seg.segno(seg_size) >= best_segno:
            best, best_segno = seg, seg.segno(seg_size)
    return best


def truncate_bad_partial(directory: str, files: StreamingFiles, seg_size: int) -> str | None:
    """Barman's rule: a newest ``.partial`` whose size is neither 0 nor a full segment is emptied.

    pg_receivewal refuses such a file; an empty ``.partial`` makes it restart that segment
    from its beginning, which the server still has (the slot holds it). Returns a message
    when it truncated something.
    """
    name = files.newest_partial
    if name is None:
        return None
    path = os.path.join(directory, name)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None
    if size in (0, seg_size):
        return None
    with open(path, "r+b") as handle:
        handle.truncate(0)
        os.fsync(handle.fileno())
    return (
        f"Truncating partial file {path} that has wrong size {size} while {seg_size} was expected."
    )
