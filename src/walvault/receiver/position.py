"""Where pg_receivewal will resume, and where walvault's WAL really ends.

:func:`resume_segment` computes pg_receivewal's own choice (its FindStreamingStart) from
``streaming/``: the highest segment number wins, a higher timeline breaks a tie, and a complete
segment beats a ``.partial`` of the same segment and timeline; a complete segment means "the
next one", a ``.partial`` "that one", and a complete segment of the wrong size is skipped, as
pg_receivewal skips it. Only an empty directory lets pg_receivewal fall back to the slot.

Names can lie (a segment stored under another segment's name), so positions taken from the
archive come from the files' page headers (:func:`archive_resume`): a file whose header
contradicts its name is never a resume point; it is reported instead.
:func:`streamed_end` measures how far the WAL of one timeline reaches (a ``.partial`` up to its
last non-zero byte: pg_receivewal fills a new ``.partial`` with zeros before writing WAL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from walvault.archive.ingest import UnreadableArchive
from walvault.compression import CompressionError
from walvault.config import ServerConfig
from walvault.storage.base import StorageError
from walvault.wal.header import LONG_HEADER_SIZE, check_segment, parse_long_header
from walvault.wal.names import Segment, format_lsn, is_partial, is_segment

if TYPE_CHECKING:
    from walvault.archive.walstore import WalArchive

_TAIL_CHUNK = 1 << 16
_MAX_MISNAMED = 64  # archived files walked past before giving up on finding a resume point


@dataclass(frozen=True)
class StreamingFiles:
    """What streaming/ holds: complete segments and partials, sorted by name."""

    segments: tuple[str, ...]
    partials: tuple[str, ...]
    directory: str = ""

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
        directory,
    )


def _size(directory: str, name: str) -> int | None:
    try:
        return os.path.getsize(os.path.join(directory, name))
    except OSError:
        return None


def resume_segment(files: StreamingFiles, seg_size: int) -> Segment | None:
    """The segment pg_receivewal will start streaming, or None for an empty directory."""
    candidates: list[tuple[int, int, int, str]] = []
    for complete, names in ((1, files.segments), (0, files.partials)):
        for name in names:
            segment = Segment.from_name(name)
            try:
                candidates.append((segment.segno(seg_size), segment.tli, complete, name))
            except ValueError:  # not a segment of this size: pg_receivewal's numbers differ
                continue
    for segno, tli, complete, name in sorted(candidates, reverse=True):
        if complete and files.directory and _size(files.directory, name) != seg_size:
            continue  # pg_receivewal: "segment file ... has incorrect size ..., skipping"
        start = Segment.from_segno(tli, segno, seg_size)
        return start.next(seg_size) if complete else start
    return None


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


def data_end(path: str) -> int:
    """Bytes of WAL written into an uncompressed ``.partial``: up to its last non-zero byte."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            handle.seek(start)
            chunk = handle.read(end - start).rstrip(b"\0")
            if chunk:
                return start + len(chunk)
            end = start
    return 0


def streamed_end(files: StreamingFiles, tli: int, seg_size: int) -> int:
    """The LSN up to which streaming/ holds WAL of timeline ``tli`` (0 when it holds none)."""
    end = 0
    for name in files.segments:
        segment = Segment.from_name(name)
        if segment.tli == tli:
            end = max(end, segment.next(seg_size).to_lsn(seg_size))
    for name in files.partials:
        segment = Segment.from_name(name)
        if segment.tli != tli:
            continue
        try:
            written = data_end(os.path.join(files.directory, name))
        except OSError:
            continue
        if written:
            end = max(end, segment.to_lsn(seg_size) + min(written, seg_size))
    return end


def archived_header_problem(
    archive: WalArchive, name: str, system_identifier: int | None
) -> str | None:
    """Why the archived ``name`` is not the segment its name says (None when it is)."""
    try:
        head = archive.read_head(name, LONG_HEADER_SIZE)
        header = parse_long_header(head)
    except (OSError, ValueError, CompressionError, UnreadableArchive, StorageError) as exc:
        return f"cannot read its WAL header ({exc})"
    problems = check_segment(header, expected_name=name, system_identifier=system_identifier)
    if not problems:
        return None
    return "; ".join(problems) + f" (its header starts {format_lsn(header.pageaddr)})"


@dataclass(frozen=True)
class ArchiveResume:
    """The segment after the newest archived segment whose header matches its name, and the
    newer files passed over because their header contradicts their name."""

    resume: Segment | None
    misnamed: tuple[tuple[str, str], ...]  # (path, what is wrong)


def archive_resume(
    server: ServerConfig, seg_size: int, system_identifier: int | None
) -> ArchiveResume:
    """Where streaming resumes after the archive, judged by page headers, newest first."""
    from walvault.archive.walstore import WalArchive

    archive = WalArchive(server)
    misnamed: list[tuple[str, str]] = []
    for name in archive.segments_newest_first():
        problem = archived_header_problem(archive, name, system_identifier)
        if problem is None:
            return ArchiveResume(Segment.from_name(name).next(seg_size), tuple(misnamed))
        misnamed.append((archive.url(name), problem))
        if len(misnamed) >= _MAX_MISNAMED:
            return ArchiveResume(None, tuple(misnamed))
    return ArchiveResume(None, tuple(misnamed))
