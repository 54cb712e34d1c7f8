"""``free space``: what is left on the filesystems walvault writes to, against ``min_free_space``.

walvault writes to four places per server: its home (state files, locks), ``wals/`` (the
archive and its catalogue), ``streaming/`` (pg_receivewal) and ``incoming/`` (put-wal).  They
are grouped by filesystem, so one disk is reported once with every use it has.  The figure is
what an unprivileged writer may still use (``statvfs`` ``f_bavail``, without the blocks kept
for root), the same limit walvault's own writes meet.  A filesystem FAILS below
``min_free_space`` bytes, or with no inode left (creating a file then fails with ENOSPC too).
A directory that does not exist yet is measured at its nearest existing parent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from walvault.checks import CheckResult
from walvault.config import ServerConfig
from walvault.humanize import pretty_size

#: Fewer free inodes than this is a full filesystem: every file walvault creates needs one.
MIN_FREE_INODES = 64


@dataclass
class Filesystem:
    """One filesystem and the uses walvault has for it."""

    device: int
    path: str  # the first directory measured on it
    free: int  # bytes an unprivileged writer may still use
    free_inodes: int | None  # None: the filesystem does not count inodes
    uses: list[str] = field(default_factory=list)


def uses(server: ServerConfig) -> list[tuple[str, str]]:
    """(label, directory) of every place walvault writes to for ``server``."""
    found = [("home", server.walvault_home)]
    if not server.wals_in_object_storage:
        found.append(("wals", server.wals_directory))
    return [
        *found,
        ("streaming", server.streaming_wals_directory),
        ("incoming", server.incoming_wals_directory),
    ]


def _existing(path: str) -> str:
    """``path``, or its nearest parent that exists."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def measure(path: str) -> Filesystem:
    """The filesystem holding ``path`` (raises OSError when it cannot be measured)."""
    where = _existing(path)
    stats = os.statvfs(where)
    inodes = stats.f_favail if stats.f_files > 0 else None
    return Filesystem(os.stat(where).st_dev, where, stats.f_bavail * stats.f_frsize, inodes)


def filesystems(server: ServerConfig) -> list[Filesystem]:
    """The filesystems of :func:`uses`, each once, in the order first met."""
    found: dict[int, Filesystem] = {}
    for label, path in uses(server):
        measured = measure(path)
        found.setdefault(measured.device, measured).uses.append(label)
    return list(found.values())


def _problem(fs: Filesystem, minimum: int) -> str | None:
    if fs.free_inodes is not None and fs.free_inodes < MIN_FREE_INODES:
        return f"{fs.free_inodes} inodes left"
    if minimum and fs.free < minimum:
        return f"only {pretty_size(fs.free)} free, below min_free_space {pretty_size(minimum)}"
    return None


def check_free_space(server: ServerConfig) -> CheckResult:
    """FAILED when a filesystem walvault writes to is (nearly) full; OK with the figures."""
    parts: list[str] = []
    failed = False
    found = filesystems(server)
    for fs in found:
        where = f"{', '.join(fs.uses)} ({fs.path})"
        problem = _problem(fs, server.min_free_space)
        if problem is None:
            parts.append(f"{pretty_size(fs.free)} free for {where}")
            continue
        failed = True
        parts.append(f"{where}: {problem}: writes there fail with ENOSPC when it is full")
    if not failed:
        limit = pretty_size(server.min_free_space) if server.min_free_space else "off"
        parts.append(f"min_free_space {limit}")
    smallest = min(fs.free for fs in found)
    return CheckResult("free space", not failed, "; ".join(parts), perfdata=(("free", smallest),))


def free_for(path: str) -> int | None:
    """Bytes free on the filesystem of ``path``, None if it cannot be measured."""
    try:
        return measure(path).free
    except OSError:
        return None
