"""Choosing what one archive-wal run takes from streaming/ or incoming/, from names alone.

The directory is listed once (names only, no stat) and the batch is the ``batch_size``
smallest names, picked without sorting the whole backlog, so a run costs the same with 1,000
or 200,000 files waiting: every per-file operation happens later, on the batch only.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass

from walvault.config import ServerConfig
from walvault.wal.names import classify, is_partial, is_segment

STREAMING = "streaming"
INCOMING = "incoming"
#: The words Barman uses in "Processing xlog segments from <label> for <server>".
LABELS = {STREAMING: "streaming", INCOMING: "file archival"}


@dataclass(frozen=True)
class Batch:
    """The files of one run from one staging directory, in archiving (name) order."""

    source: str
    directory: str
    files: tuple[str, ...]
    unknown: tuple[str, ...]
    waiting: int
    held_back: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        """How many entries this run handles (WAL files and unknown ones)."""
        return len(self.files) + len(self.unknown)

    @property
    def label(self) -> str:
        """``streaming`` or ``file archival``."""
        return LABELS[self.source]


def list_names(directory: str) -> list[str]:
    """The entry names of ``directory`` (one scan, no stat); empty when it does not exist."""
    try:
        with os.scandir(directory) as entries:
            return [entry.name for entry in entries]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _not_ignored(names: list[str]) -> list[str]:
    """``names`` without dot files and ``*.tmp`` files: those belong to writers still at
    work (or to nobody)."""
    return [n for n in names if not (n.startswith(".") or n.endswith(".tmp"))]


def _take(names: list[str], batch_size: int) -> list[str]:
    if batch_size <= 0 or batch_size >= len(names):
        return sorted(names)
    return heapq.nsmallest(batch_size, names)


def _split(chosen: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The chosen names as (WAL files, unknown entries).  Only the batch is classified: with
    200,000 names waiting, classifying them all was half the cost of a run."""
    files: list[str] = []
    unknown: list[str] = []
    for name in chosen:
        (files if classify(name) is not None else unknown).append(name)
    return tuple(files), tuple(unknown)


def _newest_segment(names: list[str]) -> str | None:
    """The greatest segment name (every segment name has 24 characters)."""
    newest = max((n for n in names if len(n) == 24), default=None)
    if newest is None or is_segment(newest):
        return newest
    return max((n for n in names if is_segment(n)), default=None)  # a 24-char stray name


def select_streaming(directory: str, names: list[str], batch_size: int = 0) -> Batch:
    """What to archive from pg_receivewal's directory.

    Complete segments, ``.history`` and ``.backup`` files, and every ``.partial`` but the
    newest (the one being written; older ones come from timeline switches).  When no
    ``.partial`` sorts after the newest complete segment, that segment is held back so a
    restarted pg_receivewal still finds its position (Barman's rule).  Anything else is
    unknown.  ``batch_size`` (0 = all) bounds the files plus unknown entries taken.
    """
    names = _not_ignored(names)
    newest_partial = max(
        (n for n in names if n.endswith(".partial") and is_partial(n)), default=None
    )
    newest_segment = _newest_segment(names)
    held: list[str] = []
    if newest_partial is not None:
        held.append(newest_partial)
    if newest_segment is not None and (newest_partial is None or newest_partial < newest_segment):
        held.append(newest_segment)
    waiting = len(names) - len(held)
    limit = batch_size + len(held) if batch_size > 0 else 0
    chosen = [n for n in _take(names, limit) if n not in held]
    files, errors = _split(chosen[:batch_size] if batch_size > 0 else chosen)
    return Batch(STREAMING, directory, files, errors, waiting, tuple(sorted(held)))


def select_incoming(directory: str, names: list[str], batch_size: int = 0) -> Batch:
    """What to archive from the ``archive_command`` drop zone: every WAL-like file."""
    names = _not_ignored(names)
    files, errors = _split(_take(names, batch_size))
    return Batch(INCOMING, directory, files, errors, len(names))


def next_batch(server: ServerConfig, source: str) -> Batch:
    """List the staging directory of ``source`` once and select its next batch."""
    if source == STREAMING:
        directory = server.streaming_wals_directory
        return select_streaming(
            directory, list_names(directory), server.streaming_archiver_batch_size
        )
    directory = server.incoming_wals_directory
    return select_incoming(directory, list_names(directory), server.archiver_batch_size)
