"""How far walvault's receiver is behind: written and flushed, and what its sync state means.

One place for the figure that ``check``'s ``streaming lag`` line and ``status`` show.  The
positions are what the receiver last reported to the server (``pg_stat_replication``, every
``streaming_status_interval``): *written* is in walvault's files, *flushed* is on walvault's
disk.  An asynchronous pg_receivewal flushes only at the end of each segment, so its flushed
position can be most of a segment behind while written is current: a crash of walvault's host
loses what is written but not flushed.  A synchronous one flushes at once and the server's
commits wait for it.  The threshold (``max_streaming_lag``) applies to *written*, which says
whether the receiver keeps up; both are shown, never one for the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from walvault.humanize import pretty_size
from walvault.wal.names import format_lsn

_MEANING = {
    "sync": "sync: every commit waits for walvault's flush",
    "quorum": "quorum: a commit waits for walvault's flush or another standby's",
    "potential": "potential: async until a synchronous standby fails",
    "async": "async: commits do not wait for walvault; what is written but not flushed is "
    "lost if walvault's host crashes (pg_receivewal flushes at the end of each segment)",
}


@dataclass(frozen=True)
class StreamingLag:
    """The server's current LSN and the receiver's reported positions (bytes)."""

    current: int
    sent: int
    written: int
    flushed: int
    sync_state: str

    @property
    def written_behind(self) -> int:
        """Bytes the server has that walvault has not written yet (never negative)."""
        return max(self.current - self.written, 0)

    @property
    def flushed_behind(self) -> int:
        """Bytes the server has that are not on walvault's disk yet (never negative)."""
        return max(self.current - self.flushed, 0)

    def summary(self) -> str:
        """``written 0 B behind, flushed 5.0 MiB behind`` (status's row)."""
        return (
            f"written {pretty_size(self.written_behind)} behind, flushed "
            f"{pretty_size(self.flushed_behind)} behind ({self.sync_state})"
        )

    def describe(self) -> str:
        """The positions, both distances and the sync state's meaning (check's hint)."""
        meaning = _MEANING.get(self.sync_state, self.sync_state)
        return (
            f"{pretty_size(self.written_behind)} behind written, "
            f"{pretty_size(self.flushed_behind)} behind flushed: server at "
            f"{format_lsn(self.current)}, sent {format_lsn(self.sent)}, written "
            f"{format_lsn(self.written)}, flushed {format_lsn(self.flushed)} (as the receiver "
            f"last reported them); {meaning}"
        )
