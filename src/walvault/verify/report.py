"""``walvault verify SERVER [BACKUP_ID|all]``: is every backup restorable, and how far?

For each backup (every DONE one by default):

* ``backup <id> files`` -- its copy against its ``backup_manifest`` (:mod:`.files`);
* ``backup <id> WAL timeline <T>`` -- for every timeline T a recovery of it can end on (its
  own, and every later one forked from it after its start): the segments from its begin LSN
  along T's history to the last one archived on T, walked record by record with the chain
  carried across segments (:mod:`.chain`).  OK when nothing breaks the chain and it goes
  past the backup's end (its consistency point); the hint names the range and the RPO: the
  end of the last valid record, and its segment.

Without a backup, ``archive WAL timeline <T>`` lines walk each timeline from its oldest
archived segment.  ``timeline history`` lines report history files that cannot be read, and
timelines that have WAL but no history file (recovery cannot follow them).

The lines are :class:`walvault.checks.CheckResult` values with facts for JSON beside them;
cli/verify.py renders them like ``check``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from walvault.backup import info as binfo
from walvault.backup.info import DONE, WAITING_FOR_WALS, BackupInfo
from walvault.backup.walcheck import id_lock
from walvault.checks import CheckResult
from walvault.config import ServerConfig
from walvault.errors import LockBusy, WalvaultError
from walvault.identity import stored_system_identifier
from walvault.verify.chain import PathResult, SegmentSource, walk_path
from walvault.verify.files import verify_files
from walvault.verify.plan import chain_of, expected_name, path_steps, reachable_targets
from walvault.verify.source import ArchiveIndex, load_histories, segment_size_of
from walvault.wal.history import HistoryEntry, history_name
from walvault.wal.names import DEFAULT_SEGMENT_SIZE, Segment, format_lsn, parse_lsn

Echo = Callable[[str], None]
#: Seconds verify waits for a backup's lock (held by delete, check-backup or another verify).
LOCK_WAIT = 30.0


@dataclass(frozen=True)
class Line:
    """One line of the report: the check result and its facts (for ``-f json``)."""

    result: CheckResult
    facts: dict[str, object] = field(default_factory=dict)


@dataclass
class _Context:
    server: ServerConfig
    index: ArchiveIndex
    histories: dict[int, list[HistoryEntry]]
    source: SegmentSource


def _chosen_backups(server: ServerConfig, wanted: str | None) -> list[BackupInfo]:
    if wanted is None or wanted == "all":
        return [b for b in binfo.iter_backups(server) if b.status == DONE]
    info = binfo.resolve_backup_id(server, wanted)
    if info.status not in (DONE, WAITING_FOR_WALS) or not info.begin_xlog:
        raise WalvaultError(
            f"backup {info.backup_id} of server {server.name} is {info.status}: nothing to "
            "verify (accepted: a DONE or WAITING_FOR_WALS backup)"
        )
    return [info]


def _segment_size(
    server: ServerConfig, backups: list[BackupInfo], index: ArchiveIndex
) -> int | None:
    for backup in backups:
        if backup.xlog_segment_size:
            return backup.xlog_segment_size
    for name in sorted(index.segments)[:3]:
        size = segment_size_of(server, name)
        if size is not None:
            return size
    return None


def _system_identifier(server: ServerConfig, backups: list[BackupInfo]) -> int | None:
    stored = stored_system_identifier(server)
    if stored is not None:
        return stored
    for backup in backups:
        if backup.systemid and backup.systemid.isdigit():
            return int(backup.systemid)
    return None


def _history_lines(index: ArchiveIndex, problems: list[str]) -> list[Line]:
    lines = [Line(CheckResult("timeline history", False, problem)) for problem in problems]
    with_wal = {int(n[:8], 16) for n in index.segments | index.partials}
    if with_wal:
        lowest = min(with_wal)
        for tli in sorted(with_wal - index.histories):
            if tli > lowest:
                hint = (
                    f"timeline {tli} has WAL but the archive has no {history_name(tli)}: "
                    "recovery cannot follow it"
                )
                lines.append(Line(CheckResult("timeline history", False, hint), {"timeline": tli}))
    return lines


def _path_facts(result: PathResult, target: int) -> dict[str, object]:
    return {
        "timeline": target,
        "first_segment": result.first,
        "last_segment": result.last,
        "segments": result.segments,
        "records": result.records,
        "rpo_lsn": format_lsn(result.reached) if result.reached is not None else None,
        "rpo_segment": result.reached_segment,
        "problem": result.problem,
    }


def _reach(result: PathResult) -> str:
    if result.reached is None:
        return "no record can be replayed"
    return f"RPO {format_lsn(result.reached)} in {result.reached_segment}"


def _backup_lines(ctx: _Context, info: BackupInfo, files: bool) -> list[Line]:
    lines = []
    prefix = f"backup {info.backup_id}"
    if files:
        verdict = verify_files(ctx.server, info)
        lines.append(
            Line(
                CheckResult(f"{prefix} files", verdict.ok, verdict.hint),
                {"backup_id": info.backup_id, "errors": verdict.error_count},
            )
        )
    if not (info.begin_xlog and info.end_xlog and (info.timeline or info.begin_wal)):
        hint = "its backup.info has no begin and end LSN: its WAL cannot be verified"
        return [*lines, Line(CheckResult(f"{prefix} WAL", False, hint))]
    start, end = parse_lsn(info.begin_xlog), parse_lsn(info.end_xlog)
    start_tli = info.timeline or Segment.from_name(info.begin_wal or "").tli
    seg_size = ctx.source.segment_size
    for target in reachable_targets(start_tli, start, ctx.index.timelines(), ctx.histories):
        legs = chain_of(target, ctx.histories)
        steps = path_steps(legs, start, seg_size, ctx.index.newest(target))
        result = walk_path(ctx.source, ctx.index, steps, start)
        facts: dict[str, object] = {"backup_id": info.backup_id, "backup_end_lsn": format_lsn(end)}
        facts |= _path_facts(result, target)
        unreached = result.reached is None or result.reached < end
        ok = result.problem is None and not unreached
        parts = []
        if result.problem is not None:
            parts.append(f"first problem: {result.problem}")
        parts.append(f"{result.describe_range()}, {_reach(result)}")
        if unreached:
            parts.append(
                f"the chain does not reach the backup's end {format_lsn(end)}: this backup "
                f"cannot be restored on timeline {target}"
            )
        name = f"{prefix} WAL timeline {target}"
        lines.append(Line(CheckResult(name, ok, "; ".join(parts)), facts))
    return lines


def _archive_lines(ctx: _Context) -> list[Line]:
    lines = []
    seg_size = ctx.source.segment_size
    if not ctx.index.segments and not ctx.index.partials:
        return [Line(CheckResult("archive WAL", False, "the archive holds no WAL segment"))]
    for target in sorted(ctx.index.timelines()):
        legs = chain_of(target, ctx.histories)
        on_path = [
            Segment.from_name(name).segno(seg_size)
            for name in ctx.index.segments | ctx.index.partials
            if expected_name(legs, Segment.from_name(name).segno(seg_size), seg_size) == name
        ]
        if not on_path:
            continue
        start = min(on_path) * seg_size
        steps = path_steps(legs, start, seg_size, ctx.index.newest(target))
        result = walk_path(ctx.source, ctx.index, steps, None)
        parts = [f"first problem: {result.problem}"] if result.problem else []
        parts.append(f"{result.describe_range()}, {_reach(result)}")
        lines.append(
            Line(
                CheckResult(
                    f"archive WAL timeline {target}", result.problem is None, "; ".join(parts)
                ),
                _path_facts(result, target),
            )
        )
    return lines


def verify_server(
    server: ServerConfig, wanted: str | None = None, *, files: bool = True
) -> list[Line]:
    """Every line of ``verify`` for ``server`` (``wanted``: a backup, or None/``all``)."""
    started = time.monotonic()
    backups = _chosen_backups(server, wanted)
    index = ArchiveIndex.scan(server)
    histories, history_problems = load_histories(server, index.histories)
    seg_size = _segment_size(server, backups, index)
    source = SegmentSource(
        server, seg_size or DEFAULT_SEGMENT_SIZE, _system_identifier(server, backups)
    )
    ctx = _Context(server, index, histories, source)
    lines = _history_lines(index, history_problems)
    if seg_size is None:
        hint = (
            "no readable WAL segment in the archive"
            if index.segments
            else "the archive holds no WAL segment"
        )
        lines.append(Line(CheckResult("archive WAL", False, hint)))
        backups = []
    elif not backups:
        lines += _archive_lines(ctx)
    for info in backups:
        try:
            with id_lock(server, info.backup_id, wait=LOCK_WAIT):
                lines += _backup_lines(ctx, info, files)
        except LockBusy:
            hint = f"another process holds the backup's lock for more than {LOCK_WAIT:.0f} s"
            lines.append(Line(CheckResult(f"backup {info.backup_id}", False, hint)))
    failed = sum(1 for line in lines if not line.result.ok)
    elapsed = time.monotonic() - started
    summary = (
        f"{len(backups)} backup{'s' if len(backups) != 1 else ''}, {source.files_read} WAL "
        f"files read ({source.bytes_read >> 20} MiB) in {elapsed:.1f} s"
    )
    if failed:
        summary += f"; {failed} line{'s' if failed != 1 else ''} FAILED"
    facts: dict[str, object] = {
        "backups": len(backups),
        "files_read": source.files_read,
        "bytes_read": source.bytes_read,
        "seconds": round(elapsed, 3),
    }
    lines.append(Line(CheckResult("verification", failed == 0, summary), facts))
    return lines
