"""Timeline history files: their names and the one strict parser for their contents.

PostgreSQL reads a history file in ``readTimeLineHistory`` (src/backend/access/transam/
timeline.c): ``fgets`` into a 1024-byte buffer, lines whose first non-blank character is
``#`` and blank lines skipped, then ``sscanf("%u\\t%X/%X")``: a numeric parent timeline, a
switch point, the rest of the line ignored (the reason).  Parent timelines must increase,
and all must be below the file's own timeline, or recovery stops with FATAL.  It writes
them (``writeTimeLineHistory``) as the parent's file followed by ``<parent>\\t<LSN>\\t<reason>``.

The parser here accepts every file PostgreSQL writes and refuses everything PostgreSQL
would refuse, plus what it would misread: a line longer than its buffer (read in pieces,
each taken for a line), NUL bytes, a timeline ID or LSN half that does not fit 32 bits,
switch points that go backwards, and a history file without any switch (PostgreSQL never
writes one, and timeline 1 has none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from walvault.wal.names import format_lsn, is_history, parse_lsn

__all__ = [
    "MAX_HISTORY_LINE",
    "HistoryEntry",
    "history_name",
    "parse_history",
    "parse_history_file",
]

_MAX_TLI = 0xFFFFFFFF
#: the longest line PostgreSQL's reader takes in one piece (fgets into MAXPGPATH = 1024)
MAX_HISTORY_LINE = 1023
_SHOWN_LINE = 60

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


def _shown(line: str) -> str:
    """A line quoted for a one-line message (escaped, shortened)."""
    text = line if len(line) <= _SHOWN_LINE else line[:_SHOWN_LINE] + "..."
    return repr(text)


def _lines(content: str | bytes) -> list[tuple[str, int]]:
    """(text, length in bytes) of each line; bytes are decoded leniently (a reason is free
    text in the server's encoding)."""
    if isinstance(content, bytes):
        return [(raw.decode("utf-8", errors="replace"), len(raw)) for raw in content.split(b"\n")]
    return [(raw, len(raw.encode("utf-8", errors="surrogatepass"))) for raw in content.split("\n")]


def parse_history(content: str | bytes, *, timeline: int | None = None) -> list[HistoryEntry]:
    """Parse the text of a timeline history file into its entries, oldest first.

    Blank lines and lines starting with ``#`` (after leading blanks) are
    skipped.  A malformed line raises ValueError naming its line number, as do
    a line longer than PostgreSQL reads at once, a NUL byte, parent timelines
    that are not strictly increasing, switch points that go backwards, and
    (when ``timeline`` -- the file's own timeline -- is given) a parent
    timeline that is not below it.
    """
    entries: list[HistoryEntry] = []
    for lineno, (raw, length) in enumerate(_lines(content), start=1):
        if length > MAX_HISTORY_LINE:
            raise ValueError(
                f"line {lineno}: longer than the {MAX_HISTORY_LINE} bytes PostgreSQL reads "
                f"at once ({length} bytes)"
            )
        if "\0" in raw:
            raise ValueError(f"line {lineno}: NUL byte (a history file is text)")
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise ValueError(
                f"line {lineno}: malformed timeline history line {_shown(raw)} "
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


def parse_history_file(name: str, content: str | bytes) -> list[HistoryEntry]:
    """The entries of the history file called ``name`` (``<8 hex>.history``), checked.

    :func:`parse_history` against the timeline of the name, and at least one entry: every
    history file PostgreSQL writes records the switch that created its timeline.  Raises
    ValueError saying what is wrong.
    """
    if not is_history(name):
        raise ValueError(f"{name!r} is not a timeline history file name (<8 hex>.history)")
    timeline = int(name[:8], 16)
    if timeline < 2:
        raise ValueError(f"timeline {timeline} has no history file (it has no parent)")
    entries = parse_history(content, timeline=timeline)
    if not entries:
        raise ValueError("no timeline switch line (every history file PostgreSQL writes has one)")
    return entries
