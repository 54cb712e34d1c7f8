"""``WAL continuity``: is every segment a recovery needs in the archive?  Names only.

From the begin WAL of the oldest DONE backup to the newest archived segment, every segment
number must have a file on the timeline recovery reads it from.  The timelines are those of
the highest timeline whose history (a ``.history`` file of the archive) descends from the
backup's timeline after the backup began, as ``recovery_target_timeline = latest`` does.  A
timeline serves the segments from the one where it began to the one where the next began
(that switch segment may come from either, as PostgreSQL tries the newer file first); the
last one serves everything after.  The segment size is the backup's.  Segments inside a gap
``receive-wal --reset`` recorded are not counted again (``WAL gaps`` reports those).

Only names are looked at: a file that is there but damaged is for ``walvault verify``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from walvault.backup.info import DONE, BackupInfo
from walvault.checks import CheckResult
from walvault.compression import decompress_bytes
from walvault.config import ServerConfig
from walvault.errors import StateFileError, WalvaultError
from walvault.receiver.gaps import load_gaps
from walvault.wal.history import HistoryEntry, parse_history
from walvault.wal.names import Segment, is_history, is_segment, parse_lsn

if TYPE_CHECKING:
    from walvault.archive.walstore import WalArchive

Path = list[tuple[int, int]]  # (timeline, first segment number read from it), oldest first


def _history(archive: WalArchive, tli: int) -> list[HistoryEntry] | None:
    """The parsed ``<tli>.history`` of the archive, None when absent or unusable."""
    from walvault.compression import identify

    try:
        opened = archive.open(f"{tli:08X}.history")
        if opened is None:
            return None
        with opened[1] as reader:
            data = reader.read(1 << 20)
        return parse_history(decompress_bytes(identify(data), data), timeline=tli)
    except (OSError, ValueError, WalvaultError):
        return None


def timeline_path(archive: WalArchive, backup: BackupInfo, seg_size: int) -> Path:
    """The timelines recovery from ``backup`` follows to the latest one (see the docstring)."""
    start_tli = backup.timeline or int((backup.begin_wal or "1")[:8], 16)
    begin = parse_lsn(backup.begin_xlog) if backup.begin_xlog else 0
    names = archive.history_names()
    candidates = sorted((int(n[:8], 16) for n in names if is_history(n)), reverse=True)
    for tli in candidates:
        if tli <= start_tli:
            break
        entries = _history(archive, tli)
        if not entries:
            continue
        parents = [e for e in entries if e.parent_tli >= start_tli]
        if not parents or parents[0].parent_tli != start_tli or parents[0].switch_lsn < begin:
            continue  # not a descendant of the backup's timeline after the backup began
        path = [(start_tli, 0)]
        for entry, child in zip(parents, [*(e.parent_tli for e in parents[1:]), tli], strict=True):
            path.append((child, entry.switch_lsn // seg_size))
        return path
    return [(start_tli, 0)]


def _present(archive: WalArchive, path: Path, seg_size: int) -> dict[int, set[int]]:
    """Segment numbers archived, per timeline of ``path`` (complete segments only)."""
    per_log = 0x100000000 // seg_size
    found: dict[int, set[int]] = {tli: set() for tli, _ in path}
    for directory in archive.hash_dirs():
        if int(directory[:8], 16) not in found:
            continue
        names = archive.names_in(directory)
        tli = int(directory[:8], 16)
        for name in names:
            if is_segment(name) and name[:16] == directory and int(name[16:], 16) < per_log:
                found[tli].add(int(name[8:16], 16) * per_log + int(name[16:], 16))
    return found


def _serves(path: Path, index: int, segno: int) -> bool:
    """Whether timeline ``path[index]`` may provide segment number ``segno``."""
    begins = path[index][1]
    ends = path[index + 1][1] if index + 1 < len(path) else None
    return begins <= segno and (ends is None or segno <= ends)


def missing_segments(
    server: ServerConfig, backup: BackupInfo, seg_size: int
) -> tuple[list[str], int, int]:
    """(missing segment names, first and last segment numbers looked at) after ``backup``."""
    from walvault.archive.walstore import WalArchive

    archive = WalArchive(server)  # one per check: object storage is listed once
    path = timeline_path(archive, backup, seg_size)
    present = _present(archive, path, seg_size)
    first = Segment.from_name(backup.begin_wal or "").segno(seg_size)
    served = [
        segno
        for index, (tli, _) in enumerate(path)
        for segno in present[tli]
        if _serves(path, index, segno)
    ]
    last = max(served, default=first)
    missing = []
    for segno in range(first, last + 1):
        readers = [i for i in range(len(path)) if _serves(path, i, segno)]
        if not any(segno in present[path[i][0]] for i in readers):
            missing.append(Segment.from_segno(path[readers[-1]][0], segno, seg_size).name)
    return missing, first, last


def _recorded(server: ServerConfig, names: list[str]) -> tuple[list[str], str]:
    """``names`` outside every recorded gap, and a note about the ones inside."""
    try:
        gaps = load_gaps(server)
    except StateFileError:
        return names, ""
    outside = [n for n in names if not any(g.first_missing <= n <= g.last_missing for g in gaps)]
    inside = len(names) - len(outside)
    return outside, f"; {inside} more in recorded gaps (see WAL gaps)" if inside else ""


def check_continuity(server: ServerConfig, backups: list[BackupInfo]) -> CheckResult:
    """FAILED naming the first segment missing after the oldest DONE backup's begin WAL."""
    name = "WAL continuity"
    done = [b for b in backups if b.status == DONE and b.begin_wal]
    if not done:
        return CheckResult(name, True, "no DONE backup yet: nothing to recover from")
    oldest = done[0]
    seg_size = oldest.xlog_segment_size
    if not seg_size or seg_size & (seg_size - 1) or not 1 << 20 <= seg_size <= 1 << 30:
        return CheckResult(
            name, True, f"not checked: backup {oldest.backup_id} has no segment size"
        )
    missing, first, last = missing_segments(server, oldest, seg_size)
    missing, note = _recorded(server, missing)
    span = f"{last - first + 1} segments from {oldest.begin_wal} (backup {oldest.backup_id})"
    if not missing:
        return CheckResult(name, True, f"{span}: none missing{note}")
    return CheckResult(
        name,
        False,
        f"{len(missing)} of {span} missing, the first {missing[0]}: recovery from backup "
        f"{oldest.backup_id} stops before it; put it back in the archive, or take a new "
        f"backup ('walvault backup {server.name}'){note}",
    )
