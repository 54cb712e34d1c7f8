"""What may enter the archive: one judgement of a WAL file's content, for put-wal and archive-wal.

A file is admitted by the rules of its name:

- a segment: a long page header matching the name (page address, timeline, flags, block
  size; the archive's segment size when known), the cluster's system identifier when
  ``identity.json`` knows it, and exactly the segment size its header states (when the size
  is known: archive-wal does not decode a client-compressed segment to the end);
- a ``.partial``: empty; or all zeros and one segment long (pg_receivewal fills a new
  ``.partial`` with zeros to the segment size before it writes WAL into it from its start);
  or a long page header matching the name as for a segment.  Never longer than the segment
  size;
- a ``.history``: PostgreSQL's reader accepts it (:func:`walvault.wal.history.parse_history_file`);
- a ``.backup``: a backup history file whose name matches its content
  (:func:`walvault.backup.label.parse_backup_history`).

Anything else goes to ``errors/`` as ``invalid`` (or ``foreign``, another cluster's segment).

Sizes are bounded before a byte is copied.  Contents: a segment or ``.partial`` at most the
segment size (the archive's, else PostgreSQL's maximum, 1 GiB); a ``.history`` at most
1 MiB (PostgreSQL writes one ~50-byte line per ancestor timeline, and reads lines of at most
1023 bytes: 1 MiB holds over a thousand of the longest); a ``.backup`` at most 64 KiB (ten
lines, the longest a LABEL of at most 1024 bytes: real ones are ~300 bytes).  Stored or sent
compressed, a file may be a little larger than its content (incompressible data): 1/64 of
the content plus 64 KiB covers every codec walvault reads (measured on random data: bzip2,
the worst, adds 0.8 %; the others under 0.05 %).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from walvault.archive import errors_dir
from walvault.backup.label import parse_backup_history
from walvault.wal.header import LONG_HEADER_SIZE, WalHeader, check_segment, parse_long_header
from walvault.wal.history import parse_history_file
from walvault.wal.names import WalKind, classify
from walvault.wal.pagecheck import MAX_SEGMENT_SIZE, valid_segment_size

MAX_HISTORY_SIZE = 1 << 20
MAX_BACKUP_LABEL_SIZE = 64 << 10
#: compressed data may exceed its content by 1/_OVERHEAD_SHARE of it plus _OVERHEAD_BYTES
_OVERHEAD_SHARE = 64
_OVERHEAD_BYTES = 64 << 10


def content_limit(kind: WalKind, segment_size: int | None) -> int:
    """The largest (decompressed) content a file of ``kind`` may have."""
    if kind is WalKind.HISTORY:
        return MAX_HISTORY_SIZE
    if kind is WalKind.BACKUP:
        return MAX_BACKUP_LABEL_SIZE
    return segment_size or MAX_SEGMENT_SIZE


def stored_limit(kind: WalKind, segment_size: int | None) -> int:
    """The largest file of ``kind`` as stored or sent, compressed or not."""
    limit = content_limit(kind, segment_size)
    return limit + limit // _OVERHEAD_SHARE + _OVERHEAD_BYTES


@dataclass(frozen=True)
class Content:
    """What was read of a file's (decompressed) content.

    ``size`` is None when the content was not decoded to its end; ``zeros`` (all bytes are
    zero) and ``text`` (the whole content) are None when not read; ``over`` means reading
    stopped past the limit (``size`` then counts only what was read).  A ``.partial``
    starting with zeros needs ``zeros``, a ``.history`` or ``.backup`` its ``text``.
    """

    head: bytes
    size: int | None
    zeros: bool | None = None
    text: bytes | None = None
    over: bool = False


def read_content(
    pieces: Iterable[bytes], limit: int, *, keep_text: bool = False, scan_zeros: bool = True
) -> Content:
    """Read decompressed ``pieces`` up to ``limit`` bytes: head, size, all zeros (unless
    not ``scan_zeros``), text (with ``keep_text``)."""
    head = bytearray()
    text = bytearray() if keep_text else None
    size = 0
    zeros: bool | None = scan_zeros
    for piece in pieces:
        if len(head) < LONG_HEADER_SIZE:
            head += piece[: LONG_HEADER_SIZE - len(head)]
        size += len(piece)
        if size > limit:
            return Content(bytes(head), size, over=True)
        if zeros and piece != bytes(len(piece)):  # a memcmp, stopping at the first difference
            zeros = False
        if text is not None:
            text += piece
    return Content(
        bytes(head), size, zeros if scan_zeros else None, None if text is None else bytes(text)
    )


@dataclass(frozen=True)
class Judgement:
    """``kind`` None: admitted; else the errors/ kind (invalid, foreign) and why."""

    kind: str | None
    problem: str = ""
    header: WalHeader | None = None


def _invalid(problem: str, header: WalHeader | None = None) -> Judgement:
    return Judgement(errors_dir.INVALID, problem, header)


def judge(
    name: str,
    content: Content,
    *,
    system_identifier: int | None,
    segment_size: int | None,
) -> Judgement:
    """Whether the file ``name`` with ``content`` may enter the archive (see the module)."""
    kind = classify(name)
    if kind is None:
        return _invalid("not a WAL file name")
    if content.over:
        limit = content_limit(kind, segment_size)
        what = "the segment size" if kind in (WalKind.SEGMENT, WalKind.PARTIAL) else "the limit"
        return _invalid(f"larger than {limit} bytes, {what} for a {kind.value} file")
    if kind is WalKind.HISTORY or kind is WalKind.BACKUP:
        return _judge_text(name, kind, content, segment_size)
    if kind is WalKind.PARTIAL and _unwritten(content):
        return _judge_unwritten(content, segment_size)
    return _judge_header(name, kind, content, system_identifier, segment_size)


def _judge_unwritten(content: Content, segment_size: int | None) -> Judgement:
    """An empty ``.partial``, or one pg_receivewal has padded with zeros to a whole segment
    and not written to yet."""
    size = content.size
    if size == 0:
        return Judgement(None)
    if not content.zeros:
        return _invalid("no page header (it starts with zeros) but not all zeros")
    if segment_size is None and size is not None and not valid_segment_size(size):
        return _invalid(f"all zeros, but its size {size} is not a WAL segment size")
    if segment_size is not None and size != segment_size:
        return _invalid(f"all zeros, but its size {size} is not the segment size {segment_size}")
    return Judgement(None)


def _unwritten(content: Content) -> bool:
    """Empty, or zeros where the page header would be."""
    return content.size == 0 or (
        len(content.head) == min(LONG_HEADER_SIZE, content.size or LONG_HEADER_SIZE)
        and not any(content.head)
    )


def _judge_text(name: str, kind: WalKind, content: Content, segment_size: int | None) -> Judgement:
    if content.text is None:
        raise ValueError(f"the content of {name} was not read")
    try:
        if kind is WalKind.HISTORY:
            parse_history_file(name, content.text)
        else:
            parse_backup_history(name, content.text, segment_size=segment_size)
    except ValueError as exc:
        what = "timeline history file" if kind is WalKind.HISTORY else "backup history file"
        return _invalid(f"not a {what}: {exc}")
    return Judgement(None)


def _judge_header(
    name: str,
    kind: WalKind,
    content: Content,
    system_identifier: int | None,
    segment_size: int | None,
) -> Judgement:
    try:
        header = parse_long_header(content.head)
    except ValueError as exc:
        return _invalid(str(exc))
    if system_identifier is not None and header.system_identifier != system_identifier:
        return Judgement(
            errors_dir.FOREIGN,
            f"system identifier {header.system_identifier}, expected {system_identifier}",
            header,
        )
    problems = check_segment(header, expected_name=name, segment_size=segment_size)
    size = content.size
    if size is not None and kind is WalKind.SEGMENT and size != header.segment_size:
        problems.append(f"size {size}, the header says {header.segment_size}")
    if size is not None and kind is WalKind.PARTIAL and size > header.segment_size:
        problems.append(f"size {size} is larger than the segment size {header.segment_size}")
    if problems:
        return _invalid("; ".join(problems), header)
    return Judgement(None, header=header)
