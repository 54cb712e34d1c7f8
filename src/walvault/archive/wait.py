"""Waiting for WAL to reach the archive, running archive-wal in-process (switch-wal --archive)."""

from __future__ import annotations

import time
from collections.abc import Callable

from walvault.archive.archiver import ArchiveResult, archive_wal
from walvault.archive.walstore import WalArchive
from walvault.config import ServerConfig
from walvault.errors import WalvaultError

Echo = Callable[[str], None]

POLL_INTERVAL = 0.1


def _no_repeats(echo: Echo) -> Echo:
    """``echo`` that drops a line equal to the previous one (archive-wal's "busy" notice)."""
    last: list[str] = []

    def emit(line: str) -> None:
        if last != [line]:
            last[:] = [line]
            echo(line)

    return emit


def _raise_if_refused(result: ArchiveResult, wal: str) -> None:
    """Stop waiting for a WAL file that archive-wal moved to errors/ (a failed copy is retried)."""
    for kind, names in result.errors.items():
        if wal in names:
            raise WalvaultError(
                f"The WAL file {wal} will not reach the archive: archive-wal moved it to "
                f"errors/ ({kind})"
            )


def wait_for_wal(
    server: ServerConfig,
    wal: str | None,
    timeout: float,
    echo: Echo,
    warn: Echo,
    *,
    interval: float = POLL_INTERVAL,
) -> bool:
    """Run archive-wal every ``interval`` seconds until ``wal`` is in the archive.

    Without a name (nothing was closed, or the server is a standby), waits until the newest
    archived segment changes. ``timeout`` 0 waits without limit. Returns whether the WAL
    arrived. When another archive-wal holds the lock, its work counts just as well: the
    archive is looked at again on the next round. Raises :class:`WalvaultError` when archive-wal
    fails, or moves the awaited file to errors/.
    """
    archive = WalArchive(server)
    baseline = archive.newest_segment()
    deadline = time.monotonic() + timeout if timeout > 0 else None
    echo_once, warn_once = _no_repeats(echo), _no_repeats(warn)

    def arrived() -> bool:
        if wal:
            return archive.exists(wal)
        return archive.newest_segment() != baseline

    while True:
        if arrived():
            return True
        result = archive_wal(server, echo_once, verbose=False, warn=warn_once)
        if arrived():
            return True
        if wal:
            _raise_if_refused(result, wal)
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(interval)
