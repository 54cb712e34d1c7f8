"""Following a WAL source whose history forked before walvault's position (failover to a
standby that had less WAL than walvault).

pg_receivewal resumes where ``streaming/`` says (its FindStreamingStart). After a failover to
an asynchronous standby, walvault may hold WAL of the old timeline past the point where the
new timeline begins; the server then refuses with "requested starting point ... is not in this
server's history" at every start, forever. Before starting pg_receivewal, receive-wal:

1. computes walvault's position (``streaming/``, else the archive judged by page headers)
   and, when its timeline is not the server's, the fork point: ``TIMELINE_HISTORY`` of the
   server's timeline against walvault's own timeline's history;
2. if walvault holds WAL past the fork point, records the fork durably
   (:mod:`walvault.receiver.forks`) before touching anything;
3. if pg_receivewal would start past the fork point: writes the new timeline's history
   files into ``streaming/``, creates an empty ``.partial`` of the segment holding the fork
   point on the new timeline, and runs archive-wal until ``streaming/`` holds nothing that
   pg_receivewal would rank above it: the old timeline's complete segments are archived as
   they are, its ``.partial`` files as ``.partial`` (or set aside in ``errors/`` by
   archive-wal with its reason). Nothing is deleted but an empty ``.partial`` status file.

Every step can be repeated after a crash: the record is deduplicated, the files are
rewritten identically, archive-wal takes up where it stopped.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from walvault.archive.archiver import archive_wal
from walvault.archive.ingest import UnreadableArchive
from walvault.archive.layout import newest_archived_segment
from walvault.compression import CompressionError, identify, open_decompressed
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.fs import durable_replace_bytes
from walvault.postgres.sources import WalSource, source_history
from walvault.receiver.forks import Fork, record_fork
from walvault.receiver.position import (
    StreamingFiles,
    archive_resume,
    resume_segment,
    scan_streaming,
    streamed_end,
)
from walvault.receiver.timelines import (
    Span,
    fork_point,
    history_path,
    path_through,
    segment_timeline,
    timeline_at,
)
from walvault.storage.base import StorageError
from walvault.wal.history import history_name, parse_history
from walvault.wal.names import Segment, format_lsn

log = logging.getLogger("walvault.receiver")
Echo = Callable[[str], None]
CLEAR_TIMEOUT = 120.0  # seconds to get the old timeline's files archived
_MAX_HISTORY = 1 << 20

#: pg_receivewal's (the server's) refusal when its start is past the fork point.
_FORK_MESSAGE = re.compile(r"requested starting point \S+ on timeline \d+ is not in this server")


def is_fork_refusal(text: str) -> bool:
    """True when a pg_receivewal error line is the server refusing a forked position."""
    return bool(_FORK_MESSAGE.search(text))


def misnamed_message(server: ServerConfig, path: str, problem: str) -> str:
    """The one-line refusal to resume after an archived file whose header contradicts it."""
    return (
        f"the newest archived WAL file {path} is not the segment its name says: {problem}. "
        "receive-wal will not resume from its name; move the file out of the archive "
        f"(then 'walvault rebuild-xlogdb {server.name}'), or run 'walvault receive-wal "
        f"--reset {server.name}' to resume from what the files' headers say"
    )


def current_position(
    server: ServerConfig, seg_size: int, system_identifier: int | None, *, strict: bool
) -> Segment | None:
    """Where streaming would resume: pg_receivewal's pick in ``streaming/``, else the segment
    after the newest archived one whose header matches its name.

    ``strict``: a newest archived file whose header contradicts its name is an error (a
    fresh start); otherwise it is passed over (``--reset``, which reports it).
    """
    files = scan_streaming(server.streaming_wals_directory)
    start = resume_segment(files, seg_size)
    if start is not None:
        return start
    found = archive_resume(server, seg_size, system_identifier)
    if strict and found.misnamed:
        raise WalvaultError(misnamed_message(server, *found.misnamed[0]))
    return found.resume


@dataclass(frozen=True)
class ForkPlan:
    """How walvault's position relates to the server's forked history."""

    position: Segment  # where pg_receivewal would start now
    seg_size: int
    fork_lsn: int
    new_timeline: int  # the server's timeline at the fork point
    restart: Segment  # the segment holding the fork point, on the server's timeline for it
    streamed_to: int  # how far walvault's WAL of the old timeline reaches
    histories: tuple[tuple[int, bytes], ...]  # the server's history files from the fork on

    @property
    def needs_restart(self) -> bool:
        """pg_receivewal follows by itself while its start is not past the fork point."""
        return self.position.to_lsn(self.seg_size) > self.fork_lsn

    @property
    def abandoned_bytes(self) -> int:
        """WAL of the old timeline walvault holds past the fork point."""
        return max(0, self.streamed_to - self.fork_lsn)


def _read_local_history(server: ServerConfig, tli: int) -> bytes | None:
    """``<tli>.history`` from ``streaming/`` or the archive, or None."""
    from walvault.archive.walstore import WalArchive

    name = history_name(tli)
    path = os.path.join(server.streaming_wals_directory, name)
    try:
        with open(path, "rb") as handle:
            algorithm = identify(handle.read(16))
            handle.seek(0)
            if algorithm is None:
                return handle.read(_MAX_HISTORY)
            return open_decompressed(algorithm, handle).read(_MAX_HISTORY)
    except FileNotFoundError:
        pass
    except (OSError, CompressionError) as exc:
        raise WalvaultError(f"cannot read {path}: {exc}") from None
    archive = WalArchive(server)
    try:
        return archive.read_head(name, _MAX_HISTORY)
    except FileNotFoundError:
        return None
    except (OSError, UnreadableArchive, StorageError) as exc:
        raise WalvaultError(f"cannot read {archive.url(name)}: {exc}") from None


def _our_path(server: ServerConfig, tli: int, theirs: list[Span]) -> list[Span]:
    if tli == 1:
        return [Span(1, 0, None)]
    through = path_through(theirs, tli)
    if through is not None:
        return through
    content = _read_local_history(server, tli)
    if content is None:
        raise WalvaultError(
            f"walvault streamed timeline {tli} of server '{server.name}', which is not in the "
            f"history of the server's timeline {theirs[-1].tli}, and {history_name(tli)} is "
            "neither in streaming/ nor in the archive: cannot tell where the two histories part"
        )
    try:
        return history_path(tli, parse_history(content, timeline=tli))
    except ValueError as exc:
        raise WalvaultError(f"{history_name(tli)} of server '{server.name}': {exc}") from None


def _streamed_to(server: ServerConfig, files: StreamingFiles, tli: int, seg_size: int) -> int:
    end = streamed_end(files, tli, seg_size)
    newest = newest_archived_segment(server, tli)
    if newest is not None:
        end = max(end, Segment.from_name(newest).next(seg_size).to_lsn(seg_size))
    return end


def plan_fork(server: ServerConfig, source: WalSource, position: Segment | None) -> ForkPlan | None:
    """The fork between walvault's ``position`` and the server's history, when walvault holds
    WAL past it or would start past it (None: nothing to do)."""
    if position is None:
        return None
    seg_size = source.info.wal_segment_size
    server_tli = source.identity.timeline
    if position.tli == server_tli:
        return None
    if position.tli > server_tli:
        raise WalvaultError(
            f"walvault has streamed timeline {position.tli} of server '{server.name}' but its "
            f"WAL source is on timeline {server_tli}: is the configuration pointing at a server "
            "from before a failover (an old primary)?"
        )
    content, entries = source_history(server, server_tli)
    theirs = history_path(server_tli, entries)
    fork = fork_point(_our_path(server, position.tli, theirs), theirs)
    if fork is None:  # pragma: no cover - two different timelines always part somewhere
        return None
    files = scan_streaming(server.streaming_wals_directory)
    streamed_to = _streamed_to(server, files, position.tli, seg_size)
    if position.to_lsn(seg_size) <= fork and streamed_to <= fork:
        return None
    segno = fork // seg_size
    restart = Segment.from_segno(segment_timeline(theirs, segno, seg_size), segno, seg_size)
    new_tli = timeline_at(theirs, fork)
    histories = tuple(
        (tli, content if tli == server_tli else source_history(server, tli)[0])
        for tli in sorted({s.tli for s in theirs if s.tli >= new_tli and s.tli > 1})
    )
    return ForkPlan(position, seg_size, fork, new_tli, restart, streamed_to, histories)


def follow_fork(
    server: ServerConfig, source: WalSource, echo: Echo, warn: Echo, *, strict: bool = True
) -> Fork | None:
    """Detect a fork before walvault's position and make pg_receivewal restart at it.

    Returns the fork record when there is one (recorded, and healed when needed).
    """
    seg_size = source.info.wal_segment_size
    sysid = int(source.identity.system_identifier)
    position = current_position(server, seg_size, sysid, strict=strict)
    plan = plan_fork(server, source, position)
    if plan is None:
        return None
    fork = record_fork(
        server,
        Fork(
            old_timeline=plan.position.tli,
            new_timeline=plan.new_timeline,
            fork_lsn=plan.fork_lsn,
            streamed_to=plan.streamed_to,
            abandoned_bytes=plan.abandoned_bytes,
            restart_segment=plan.restart.name,
            recorded_at=time.time(),
        ),
    )
    message = (
        f"The history of server '{server.name}' forked from timeline {fork.old_timeline} at "
        f"{format_lsn(fork.fork_lsn)} (it continues on timeline {fork.new_timeline}); "
        f"walvault keeps the {fork.abandoned_bytes} bytes of WAL it streamed past that point "
        "on the old timeline"
    )
    warn(message)
    log.warning("%s", message)
    if not plan.needs_restart:
        echo("pg_receivewal follows the new timeline from its current position")
        return fork
    _restart_at_fork(server, plan, echo, warn)
    return fork


def _restart_at_fork(server: ServerConfig, plan: ForkPlan, echo: Echo, warn: Echo) -> None:
    directory = server.streaming_wals_directory
    for tli, content in plan.histories:
        path = os.path.join(directory, history_name(tli))
        if not os.path.exists(path):
            durable_replace_bytes(path, content)
            echo(f"Writing the server's {history_name(tli)} into {directory}")
    files = scan_streaming(directory)
    for name in files.partials:  # empty status files of the old timeline hold no WAL
        segment = Segment.from_name(name)
        path = os.path.join(directory, name)
        if segment.tli < plan.restart.tli and os.path.getsize(path) == 0:
            os.unlink(path)
            echo(f"Removing status file {path}")
    status = os.path.join(directory, f"{plan.restart.name}.partial")
    if not os.path.exists(status):
        durable_replace_bytes(status, b"")
        echo(f"Restarting streaming at the fork point: created {status}")
    _archive_old_timeline(server, plan, echo, warn)


def _archive_old_timeline(server: ServerConfig, plan: ForkPlan, echo: Echo, warn: Echo) -> None:
    """Run archive-wal until pg_receivewal's pick in ``streaming/`` is the restart segment."""
    deadline = time.monotonic() + CLEAR_TIMEOUT
    while True:
        files = scan_streaming(server.streaming_wals_directory)
        start = resume_segment(files, plan.seg_size)
        if start == plan.restart:
            return
        result = archive_wal(server, echo, verbose=False, warn=warn)
        if result.failed:
            name, why = result.failed[0]
            raise WalvaultError(
                f"cannot archive {name}, streamed on timeline {plan.position.tli} past the "
                f"fork point: {why}; streaming restarts at the fork once it is archived"
            )
        if result.busy or not (result.archived or result.dropped or result.errors):
            if time.monotonic() > deadline:
                raise WalvaultError(
                    f"streaming/ of server '{server.name}' still holds "
                    f"{start.name if start else 'nothing'} after {CLEAR_TIMEOUT:.0f} s of "
                    f"archiving; streaming restarts at {plan.restart.name} once it is gone"
                )
            time.sleep(0.2)
