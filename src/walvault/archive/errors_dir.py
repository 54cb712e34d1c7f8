"""Moving files archive-wal cannot take into errors/, named ``<name>.<UTC stamp>.<kind>``.

Kinds: ``duplicate`` and ``unknown`` (Barman's), ``foreign`` (a segment of another cluster)
and ``invalid`` (content that may not enter the archive: a segment whose header does not
match its name, a ``.partial`` neither empty, zeros nor headed, a ``.history`` or ``.backup``
that does not parse; :mod:`walvault.archive.admission`).  archive-wal and put-wal log the
reason of each move.  walvault's ``check`` counts them as "foreign cluster" and "invalid
content"; Barman's counts files by their last suffix, so it reports the last two as
"unknown failure".  Two files of one name in one second get ``<name>.<stamp>.1.<kind>``,
``.2``, ...: the kind stays last.
"""

from __future__ import annotations

import datetime as dt
import os

from walvault.archive.layout import errors_path
from walvault.config import ServerConfig
from walvault.fs import SyncBatch, durable_move, ensure_dir

DUPLICATE = "duplicate"
UNKNOWN = "unknown"
FOREIGN = "foreign"
INVALID = "invalid"
KINDS = (DUPLICATE, UNKNOWN, FOREIGN, INVALID)
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def error_name(name: str, kind: str, stamp: str, attempt: int = 0) -> str:
    """``<name>.<stamp>.<kind>``, or ``<name>.<stamp>.<attempt>.<kind>`` after a collision."""
    if kind not in KINDS:
        raise ValueError(f"unknown errors/ kind {kind!r}")
    middle = f"{stamp}.{attempt}" if attempt else stamp
    return f"{name}.{middle}.{kind}"


def utc_stamp(now: dt.datetime | None = None) -> str:
    """The UTC timestamp of errors/ names (``20261125T160201Z``)."""
    moment = now if now is not None else dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).strftime(STAMP_FORMAT)


def move_to_errors(
    server: ServerConfig,
    path: str,
    kind: str,
    *,
    batch: SyncBatch | None = None,
    now: dt.datetime | None = None,
    name: str | None = None,
) -> str:
    """Move the file (or directory) at ``path`` into errors/; return its new path.

    ``name`` (default: the basename of ``path``) is the WAL name the file stands for, for
    a temporary file.  Durable now, or at ``batch.flush()``.  Runs under the archive-wal
    lock, which makes the free-name probe safe against other archivers.
    """
    ensure_dir(server.errors_directory)
    name = name or os.path.basename(path)
    stamp = utc_stamp(now)
    attempt = 0
    while True:
        target = errors_path(server, error_name(name, kind, stamp, attempt))
        if not os.path.lexists(target):
            break
        attempt += 1
    durable_move(path, target, batch=batch, sync_data=False)
    return target
