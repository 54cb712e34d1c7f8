"""Timeline history files: their names and a strict parser for their contents."""

from __future__ import annotations

import re
from dataclasses import dataclass

from walvault.wal.names import format_lsn, parse_lsn

__all__ = ["HistoryEntry", "history_name", "parse_history"]

_MAX_TLI = 0xFFFFFFFF

# "<parent TLI, decimal><TAB><switch LSN><TAB><free-text reason>".  PostgreSQL
# writes a tab between fields; like its sscanf-based reader, any run of blanks
# is accepted.  The reason is optional and kept verbatim (minus outer blanks).
_LINE_RE = re.compile(r"(\d+)[ \t]+([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})(?:[ \t]+(.*?))?[ \t]*")


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a history file: ``parent_tli`` ended (switched) at ``switch_lsn``."""

    parent_tli: int
    switch_lsn: int
    reason: str

    def __str__(self) -> str:
        return f"{self.parent_tli}\t{format_lsn(self.switch_lsn)}\t{self.reason}"


def history_name(tli: int) -> str:
    """File name of the history file of timeline ``tli`` (``%08X.history``)."""
    if not isinstance(tli, int) or isinstance(tli, bool) or not 1 <= tli <= _MAX_TLI:
        raise ValueError(f"invalid timeline ID {tli!r}")
    return f"{tli:08X}.history"


def parse_history(content: str | bytes, *, timeline: int | None = None) -> list[HistoryEntry]:
    """Parse the text of a timeline history file into its entries, oldest first.

    Blank lines and lines starting with ``#`` (after leading blanks) are
    skipped.  A malformed line raises ValueError naming its line number, as do
    parent timelines that are not strictly increasing, switch points that go
    backwards, and (when ``timeline`` -- the file's own timeline -- is given)
    a parent timeline that is not below it.
    """
    text = content.decode("utf-8", errors="replace") if isinstance(content, bytes) else content
    entries: list[HistoryEntry] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise ValueError(
                f"line {lineno}: malformed timeline history line {raw!r} "
                "(expected <parent TLI><TAB><switch LSN><TAB><reason>)"
            )
        tli = int(match.group(1))
        lsn = parse_lsn(match.group(2))
        if not 1 <= tli <= _MAX_TLI:
            raise ValueError(f"line {lineno}: invalid timeline ID {tli}")
        if entries and tli <= entries[-1].parent_tli:
            raise ValueError(
                f"line {lineno}: timeline IDs must be in increasing sequence "
                f"({tli} after {entries[-1].parent_tli})"
            )
        if entries and lsn < entries[-1].switch_lsn:
            raise ValueError(
                f"line {lineno}: switch point {format_lsn(lsn)} precedes the previous "
                f"one ({format_lsn(entries[-1].switch_lsn)})"
            )
        if timeline is not None and tli >= timeline:
            raise ValueError(
                f"line {lineno}: parent timeline {tli} is not below the file's timeline {timeline}"
            )
        entries.append(HistoryEntry(tli, lsn, match.group(3) or ""))
    return entries
