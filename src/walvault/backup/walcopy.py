"""For ``recover --no-get-wal``: the WAL a recovery needs, copied out decompressed, tail included.

Segments come from the archive, then ``incoming/`` and ``streaming/`` (not yet archived); a
``.partial`` (the streamed tail, or a timeline's last segment) is copied under its segment name,
padded to a full segment, when no complete copy of that segment exists — so recovery replays
every byte that was streamed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from walvault.archive.compression import decompress_stream, identify_file
from walvault.archive.layout import hash_dirs
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.fs import durable_write_from
from walvault.wal.names import is_history, is_partial, is_segment


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
    tlis = {int(d[:8], 16) for d in hash_dirs(server)}
    tlis |= {int(n[:8], 16) for n in _listdir(server.wals_directory) if is_history(n)}
    return tlis


def _candidates(server: ServerConfig) -> Iterator[tuple[str, str]]:
    for directory in hash_dirs(server):
        full = os.path.join(server.wals_directory, directory)
        for name in _listdir(full):
            yield name, os.path.join(full, name)
    for staging in (server.incoming_wals_directory, server.streaming_wals_directory):
        for name in _listdir(staging):
            yield name, os.path.join(staging, name)


def needed_wal(server: ServerConfig, begin_wal: str, max_tli: int) -> list[WalSource]:
    """Every history file, and the segments from ``begin_wal`` on, on timelines <= ``max_tli``."""
    chosen: dict[str, WalSource] = {}
    partials: dict[str, WalSource] = {}
    begin = begin_wal[8:]
    for name, path in _candidates(server):
        if is_history(name) and int(name[:8], 16) <= max_tli:
            chosen.setdefault(name, WalSource(name, path, False))
            continue
        if not (is_segment(name) or is_partial(name)):
            continue
        segment = name[:24]
        if int(segment[:8], 16) > max_tli or segment[8:] < begin:
            continue
        if is_segment(name):
            chosen.setdefault(segment, WalSource(segment, path, False))
        else:
            previous = partials.get(segment)
            if previous is None or os.path.getsize(path) > os.path.getsize(previous.path):
                partials[segment] = WalSource(segment, path, True)
    for history in (n for n in _listdir(server.wals_directory) if is_history(n)):
        if int(history[:8], 16) <= max_tli:
            chosen.setdefault(
                history, WalSource(history, os.path.join(server.wals_directory, history), False)
            )
    for segment, source in partials.items():
        chosen.setdefault(segment, source)  # only where no complete copy exists
    return sorted(chosen.values(), key=lambda s: s.name)


def copy_wal(sources: list[WalSource], destination: str, segment_size: int) -> int:
    """Decompress each source into ``destination/<name>``; pad partials; return bytes written."""
    os.makedirs(destination, mode=0o700, exist_ok=True)
    total = 0
    for source in sources:
        algorithm = identify_file(source.path)

        def writer(
            handle: BinaryIO, source: WalSource = source, algorithm: str | None = algorithm
        ) -> None:
            with open(source.path, "rb") as src:
                written = decompress_stream(algorithm, src, handle)
            if source.partial and written < segment_size:
                handle.write(b"\0" * (segment_size - written))

        try:
            total += durable_write_from(os.path.join(destination, source.name), writer)
        except FileNotFoundError:
            raise WalvaultError(
                f"{source.path} vanished while copying it (archive-wal moved it?): run "
                "recover again"
            ) from None
    return total
