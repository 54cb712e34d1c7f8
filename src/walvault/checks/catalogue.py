"""``WAL catalogue``: does ``<server>-xlog.db`` list what ``wals/`` holds?  Cheaply, by names.

The archive is listed (names only, no file is opened), then the journal of a batch being
committed, then the catalogue.  In that order a file archive-wal has just renamed into place
is either already catalogued or still in the journal (its line is journalled before the
rename and the journal removed after the append), so a live archive-wal never looks like a
disagreement.  A purge removes files before it rewrites the catalogue; a difference is
therefore measured twice, a moment apart, and only one that persists is reported.

Names are compared per directory (sets of file names, a few MB for 100,000 files), so a
truncated or stale catalogue (``status`` counting 11 files with 40 on disk) is found and the
first names that differ are shown.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from walvault.archive.catalogue import iter_entries
from walvault.archive.journal import read_journal
from walvault.checks import CheckResult
from walvault.config import ServerConfig
from walvault.errors import StateFileError, describe_os_error
from walvault.wal.names import WalKind, classify, hash_dir

TOP = ""  # the "directory" of history files: wals/ itself


def archive_listing(server: ServerConfig) -> dict[str, set[str]]:
    """Every WAL file name of the archive, by directory (``TOP``: the history files); raises
    OSError for an unreadable directory, StorageError for a store that does not answer."""
    from walvault.archive.walstore import WalArchive

    archive = WalArchive(server)
    listing = {
        directory: {n for n in archive.names_in(directory) if classify(n) is not WalKind.HISTORY}
        for directory in archive.hash_dirs()
    }
    listing[TOP] = set(archive.history_names())
    return listing


@dataclass
class Disagreement:
    """Names the archive holds that the catalogue lacks, and the reverse."""

    uncatalogued: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # catalogued, not on disk
    catalogued: int = 0
    on_disk: int = 0

    def __bool__(self) -> bool:
        return bool(self.uncatalogued or self.missing)


def _journalled(server: ServerConfig) -> set[str]:
    try:
        return {entry.name for entry in read_journal(server) or []}
    except StateFileError:
        return set()  # reported by the state files line; archive-wal heals it


def compare(server: ServerConfig) -> Disagreement:
    """One comparison of the catalogue with the archive (see the module docstring)."""
    listing = archive_listing(server)
    pending = _journalled(server)
    catalogued: dict[str, set[str]] = {}
    for entry in iter_entries(server.xlogdb_path):
        catalogued.setdefault(hash_dir(entry.name), set()).add(entry.name)
    result = Disagreement(
        catalogued=sum(len(v) for v in catalogued.values()),
        on_disk=sum(len(v) for v in listing.values()),
    )
    for directory in sorted(set(listing) | set(catalogued)):
        names = listing.get(directory, set())
        listed = catalogued.get(directory, set())
        if names != listed:
            result.uncatalogued += sorted(names - listed - pending)
            result.missing += sorted(listed - names)
    return result


def check_catalogue(server: ServerConfig, settle: float = 0.5) -> CheckResult:
    """FAILED when the catalogue and the archive disagree (after a second look)."""
    name = "WAL catalogue"
    path = server.xlogdb_path
    try:
        if not os.path.exists(path):
            on_disk = sum(len(v) for v in archive_listing(server).values())
            if not on_disk:
                return CheckResult(name, True, "no WAL archived yet")
            return CheckResult(
                name,
                False,
                f"{path} is missing while the archive holds {on_disk} files: archive-wal "
                f"rebuilds it at its next run, or run 'walvault rebuild-xlogdb {server.name}'",
            )
        with open(path, "rb"):
            pass  # readable at all? (iter_entries would say nothing else)
        found = compare(server)
        if found:
            time.sleep(settle)
            found = compare(server)
    except OSError as exc:
        return CheckResult(
            name, False, f"cannot compare it with the archive: {describe_os_error(exc)}"
        )
    if not found:
        files = "file" if found.catalogued == 1 else "files"
        return CheckResult(name, True, f"{found.catalogued} {files}, as in the archive")
    parts = [f"{path} lists {found.catalogued} files, the archive holds {found.on_disk}"]
    if found.uncatalogued:
        parts.append(
            f"{len(found.uncatalogued)} not in the catalogue (newest {found.uncatalogued[-1]})"
        )
    if found.missing:
        parts.append(
            f"{len(found.missing)} catalogued but not in the archive (first {found.missing[0]})"
        )
    parts.append(f"run 'walvault rebuild-xlogdb {server.name}'")
    return CheckResult(name, False, ": ".join(parts[:1]) + "; " + "; ".join(parts[1:]))
