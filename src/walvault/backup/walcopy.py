"""For ``recover --no-get-wal``: the WAL a recovery needs, copied out decompressed, tail included.

Segments come from the archive (a directory or a bucket), then ``incoming/`` and
``streaming/`` (not yet archived); a ``.partial`` (the streamed tail, or a timeline's last
segment) is copied under its segment name when no complete copy of that segment exists -- so
recovery replays every byte that was streamed.  Every file is read through get-wal's
verified read path (:mod:`walvault.archive.retrieve`): nothing wrong is copied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from walvault.archive.walstore import WalArchive
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.fs import durable_write_from
from walvault.wal.names import is_history, is_partial, is_segment

if TYPE_CHECKING:
    from walvault.archive.retrieve import FoundWal


@dataclass(frozen=True)
class WalSource:
    """One file to copy: where it is and the name recovery will ask for."""

    name: str
    path: str
    partial: bool


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def archived_timelines(server: ServerConfig) -> set[int]:
    """Timelines the archive knows: history files and hash directories."""
    archive = WalArchive(server)
    tlis = {int(d[:8], 16) for d in archive.hash_dirs()}
    tlis |= {int(n[:8], 16) for n in archive.names_in("") if is_history(n)}
    return tlis


def _candidates(server: ServerConfig) -> Iterator[tuple[str, str, int]]:
    """(name, where, stored size) of every archived and staged WAL file."""
    archive = WalArchive(server)
    for name, info, _ in archive.files():
        yield name, archive.storage.url(info.key), info.size
    for staging in (server.incoming_wals_directory, server.streaming_wals_directory):
        for name in _listdir(staging):
            path = os.path.join(staging, name)
            try:
                yield name, path, os.path.getsize(path)
            except FileNotFoundError:
                continue


def needed_wal(server: ServerConfig, begin_wal: str, max_tli: int) -> list[WalSource]:
    """Every history file, and the segments from ``begin_wal`` on, on timelines <= ``max_tli``."""
    chosen: dict[str, WalSource] = {}
    partials: dict[str, tuple[WalSource, int]] = {}
    begin = begin_wal[8:]
    for name, where, size in _candidates(server):
        if is_history(name) and int(name[:8], 16) <= max_tli:
            chosen.setdefault(name, WalSource(name, where, False))
            continue
        if not (is_segment(name) or is_partial(name)):
            continue
        segment = name[:24]
        if int(segment[:8], 16) > max_tli or segment[8:] < begin:
            continue
        if is_segment(name):
            chosen.setdefault(segment, WalSource(segment, where, False))
        else:
            previous = partials.get(segment)
            if previous is None or size > previous[1]:
                partials[segment] = (WalSource(segment, where, True), size)
    for segment, (source, _) in partials.items():
        chosen.setdefault(segment, source)  # only where no complete copy exists
    return sorted(chosen.values(), key=lambda s: s.name)


def copy_wal(server: ServerConfig, sources: list[WalSource], destination: str) -> int:
    """Write each source, decoded and verified, into ``destination/<name>``; return bytes
    written.  A source is looked up again by name (the archive first, as get-wal does)."""
    from walvault.archive.retrieve import WalNotFound, open_wal, verified_pieces
    from walvault.archive.walstore import WalArchive

    os.makedirs(destination, mode=0o700, exist_ok=True)
    archive = WalArchive(server)
    total = 0
    for source in sources:
        try:
            found = open_wal(server, source.name, partial=source.partial, archive=archive)
        except WalNotFound:
            raise WalvaultError(
                f"{source.path} vanished while copying it (retention removed it?): run "
                "recover again"
            ) from None
        with found:

            def writer(handle: BinaryIO, found: FoundWal = found) -> None:
                for piece in verified_pieces(found):
                    handle.write(piece)

            total += durable_write_from(os.path.join(destination, source.name), writer)
    return total
