"""Where every file of a server's archive lives (Barman's layout); the only place paths are made.

wals/<TLI+log, 16 hex>/<segment>[.partial | .<offset>.backup]
wals/<TLI>.history
<server>-xlog.db in xlogdb_directory
"""

from __future__ import annotations

import os
import re

from walvault.config import ServerConfig
from walvault.wal.names import hash_dir, is_segment, validate_wal_name

_HASH_DIR_RE = re.compile(r"[0-9A-F]{16}")


def archived_path(server: ServerConfig, name: str) -> str:
    """``wals/<hash>/<name>`` (or ``wals/<name>`` for a history file); ``name`` is validated."""
    validate_wal_name(name)
    return os.path.join(server.wals_directory, hash_dir(name), name)


def incoming_path(server: ServerConfig, name: str) -> str:
    """``incoming/<name>`` for a validated WAL name."""
    return os.path.join(server.incoming_wals_directory, validate_wal_name(name))


def streaming_path(server: ServerConfig, name: str) -> str:
    """``streaming/<name>`` for a validated WAL name."""
    return os.path.join(server.streaming_wals_directory, validate_wal_name(name))


def hash_dirs(server: ServerConfig) -> list[str]:
    """The hash directories of ``wals/``, sorted (oldest first)."""
    try:
        entries = os.listdir(server.wals_directory)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if _HASH_DIR_RE.fullmatch(e))


def newest_archived_segment(server: ServerConfig, timeline: int | None = None) -> str | None:
    """The highest complete segment name in the archive (optionally on one timeline).

    Looks only at the newest hash directories, so the cost does not grow with the archive.
    """
    for directory in reversed(hash_dirs(server)):
        if timeline is not None and int(directory[:8], 16) != timeline:
            continue
        try:
            names = [n for n in os.listdir(os.path.join(server.wals_directory, directory))]
        except FileNotFoundError:
            continue
        segments = sorted(n for n in names if is_segment(n))
        if segments:
            return segments[-1]
    return None
