"""What may enter the archive: size bounds and the judgement of each kind of WAL file."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from walfiles import MiB, backup_history, history_text
from walsupply import SYSID, segment_name, synthetic_segment
from walvault.archive import errors_dir
from walvault.archive.admission import (
    MAX_BACKUP_LABEL_SIZE,
    MAX_HISTORY_SIZE,
    Content,
    Judgement,
    content_limit,
    judge,
    read_content,
    stored_limit,
)
from walvault.compression import ALGORITHMS, CODECS, compress_bytes
from walvault.wal.names import WalKind
from walvault.wal.pagecheck import MAX_SEGMENT_SIZE

NAME = segment_name(1, 6)
SEGMENT = synthetic_segment(NAME)


def _judge(
    name: str, data: bytes, *, segment_size: int | None = None, sysid: int | None = SYSID
) -> Judgement:
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    content = read_content(pieces, 1 << 31, keep_text=True)
    return judge(name, content, system_identifier=sysid, segment_size=segment_size)


def test_limits_by_kind() -> None:
    assert content_limit(WalKind.SEGMENT, None) == MAX_SEGMENT_SIZE == 1 << 30
    assert content_limit(WalKind.PARTIAL, 16 * MiB) == 16 * MiB
    assert content_limit(WalKind.HISTORY, 16 * MiB) == MAX_HISTORY_SIZE == MiB
    assert content_limit(WalKind.BACKUP, None) == MAX_BACKUP_LABEL_SIZE == 64 << 10
    assert stored_limit(WalKind.SEGMENT, 16 * MiB) == 16 * MiB + 256 * 1024 + 64 * 1024


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_the_allowance_covers_every_codec_on_incompressible_data(algo: str) -> None:
    data = os.urandom(MiB)
    levels = sorted(set(CODECS[algo].levels))
    for level in levels:
        assert len(compress_bytes(algo, data, level)) <= stored_limit(WalKind.SEGMENT, MiB)
    tiny = os.urandom(100)  # a small file: the fixed part of the allowance is far enough
    for level in levels:
        assert len(compress_bytes(algo, tiny, level)) < len(tiny) + 1024


def test_read_content_stops_past_the_limit() -> None:
    taken = 0

    def endless() -> Iterator[bytes]:
        nonlocal taken
        for _ in itertools.count():
            taken += 1
            yield b"\0" * 4096

    content = read_content(endless(), 10_000)
    assert content.over and taken == 3
    plain = read_content([b"ab", b"", b"cd"], 10, keep_text=True)
    assert plain == Content(b"abcd", 4, False, b"abcd")
    assert read_content([], 10) == Content(b"", 0, True, None)


def test_segments() -> None:
    assert _judge(NAME, SEGMENT).kind is None
    assert _judge(NAME, SEGMENT, segment_size=MiB).header is not None
    found = _judge(NAME, SEGMENT, segment_size=16 * MiB)
    assert found.kind == errors_dir.INVALID and "expected 16777216" in found.problem
    found = _judge(NAME, SEGMENT, sysid=SYSID + 1)
    assert found.kind == errors_dir.FOREIGN
    assert found.problem == f"system identifier {SYSID}, expected {SYSID + 1}"
    assert "page address" in _judge(segment_name(1, 7), SEGMENT).problem
    assert "size 1048575" in _judge(NAME, SEGMENT[:-1]).problem
    assert "all zeros" in _judge(NAME, bytes(MiB)).problem
    # a compressed segment whose end was not decoded: header checks only
    head_only = Content(SEGMENT[:40], None)
    assert judge(NAME, head_only, system_identifier=SYSID, segment_size=MiB).kind is None


def test_partials() -> None:
    partial = NAME + ".partial"
    streamed = SEGMENT[:8192] + bytes(MiB - 8192)  # what pg_receivewal leaves, zero-padded
    for data in (b"", bytes(MiB), streamed, SEGMENT[:8192]):
        assert _judge(partial, data, segment_size=MiB).kind is None, len(data)
    assert _judge(partial, bytes(2 * MiB)).kind is None  # a segment size, the archive's unknown
    cases = {
        "all zeros, but its size 10 is not a WAL segment size": bytes(10),
        "all zeros, but its size 3145728 is not a WAL segment size": bytes(3 * MiB),
        "not all zeros": bytes(100) + b"junk" + bytes(MiB - 104),
        "WAL header too short": b"junk",
        "long-header flag missing": b"\x01" * MiB,
        "larger than the segment size": SEGMENT + b"\0",
    }
    for problem, data in cases.items():
        found = _judge(partial, data)
        assert found.kind == errors_dir.INVALID and problem in found.problem, found
    found = _judge(partial, bytes(2 * MiB), segment_size=4 * MiB)
    assert found.problem == "all zeros, but its size 2097152 is not the segment size 4194304"
    assert _judge(partial, streamed, sysid=1).kind == errors_dir.FOREIGN
    assert "page address" in _judge(segment_name(1, 8) + ".partial", streamed).problem


def test_a_header_less_partial_larger_than_a_segment() -> None:
    """The issue's case: 20 MiB of zeros as a .partial, beside 16 MiB segments or not."""
    limit = content_limit(WalKind.PARTIAL, 16 * MiB)
    content = read_content(iter([bytes(MiB)] * 20), limit)
    found = judge(NAME + ".partial", content, system_identifier=SYSID, segment_size=16 * MiB)
    assert found.kind == errors_dir.INVALID
    assert found.problem == "larger than 16777216 bytes, the segment size for a partial file"
    content = read_content(iter([bytes(MiB)] * 20), content_limit(WalKind.PARTIAL, None))
    found = judge(NAME + ".partial", content, system_identifier=None, segment_size=None)
    assert found.problem == "all zeros, but its size 20971520 is not a WAL segment size"


def test_history_and_backup_files() -> None:
    good = history_text((1, 0x3000158, "no recovery target specified")).encode()
    assert _judge("00000002.history", good).kind is None
    found = _judge("00000002.history", b"junk\n")
    assert found.kind == errors_dir.INVALID
    assert found.problem.startswith("not a timeline history file: line 1: malformed")
    assert "not below" in _judge("00000002.history", b"2\t0/10\tloop\n").problem
    name, text = backup_history(0x2000028, 0x3000100)
    assert _judge(name, text.encode(), segment_size=MiB).kind is None
    found = _judge(name, b"START WAL LOCATION: 0/3000028\n")
    assert found.problem.startswith("not a backup history file: no CHECKPOINT LOCATION")
    found = _judge(name, text.encode(), segment_size=16 * MiB)
    assert "is not in file" in found.problem
    over = read_content(iter([bytes(MiB), b"x"]), MAX_HISTORY_SIZE, keep_text=True)
    found = judge("00000002.history", over, system_identifier=None, segment_size=None)
    assert found.problem == f"larger than {MiB} bytes, the limit for a history file"
