"""Batch selection from streaming/ and incoming/: what is taken, held back, and its cost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from walsupply import Calls, make_server, segment_name
from walvault.archive import batch as B

SEG = [segment_name(1, i) for i in range(1, 10)]


def test_streaming_takes_all_but_the_live_partial() -> None:
    names = [SEG[2], SEG[0], f"{SEG[3]}.partial", SEG[1], ".hidden", f"{SEG[4]}.tmp"]
    batch = B.select_streaming("/s", names)
    assert batch.files == (SEG[0], SEG[1], SEG[2])
    assert batch.held_back == (f"{SEG[3]}.partial",)
    assert batch.unknown == () and batch.waiting == 3 and batch.label == "streaming"


def test_streaming_archives_older_partials_and_history() -> None:
    old = f"{segment_name(1, 5)}.partial"
    live = f"{segment_name(2, 7)}.partial"
    names = [old, "00000002.history", segment_name(2, 6), live, "notes.txt"]
    batch = B.select_streaming("/s", names)
    assert batch.files == (old, "00000002.history", segment_name(2, 6))
    assert batch.held_back == (live,)
    assert batch.unknown == ("notes.txt",)


def test_streaming_holds_back_the_newest_segment_without_a_partial() -> None:
    batch = B.select_streaming("/s", [SEG[1], SEG[0], SEG[2]])
    assert batch.files == (SEG[0], SEG[1]) and batch.held_back == (SEG[2],)
    # a partial older than the newest segment (an old timeline) does not count as the live one
    old = f"{segment_name(1, 9)}.partial"
    batch = B.select_streaming("/s", [old, segment_name(2, 10)])
    assert batch.files == () and batch.held_back == (old, segment_name(2, 10))


def test_batch_size_counts_only_real_candidates() -> None:
    names = [*SEG[:5], f"{SEG[5]}.partial", ".x.tmp", "a.tmp", "zz-unknown"]
    batch = B.select_streaming("/s", names, batch_size=3)
    assert batch.files == tuple(SEG[:3]) and batch.waiting == 6 and batch.size == 3
    batch = B.select_streaming("/s", names, batch_size=6)
    assert batch.files == tuple(SEG[:5]) and batch.unknown == ("zz-unknown",)


def test_incoming_takes_every_wal_like_name() -> None:
    names = [
        f"{SEG[0]}.partial",
        f"{SEG[1]}.00000028.backup",
        "00000003.history",
        SEG[2],
        "README",
        ".dot",
        "x.tmp",
    ]
    batch = B.select_incoming("/i", names)
    assert batch.files == tuple(sorted(names[:4]))
    assert batch.unknown == ("README",) and batch.label == "file archival"


def test_missing_directory_is_empty(tmp_path: Path) -> None:
    assert B.list_names(str(tmp_path / "nope")) == []


def _fill(directory: Path, count: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        for segno in range(1, count + 1):
            os.close(os.open(segment_name(1, segno), os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
    finally:
        os.close(fd)


def test_selection_from_200000_files_does_no_per_file_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(tmp_path, streaming_archiver_batch_size=1000, archiver_batch_size=1000)
    _fill(Path(server.streaming_wals_directory), 200_000)
    calls = Calls(monkeypatch)
    batch = B.next_batch(server, B.STREAMING)
    assert batch.size == 1000 and batch.waiting == 199_999
    assert batch.files[0] == segment_name(1, 1) and batch.files[-1] == segment_name(1, 1000)
    assert calls.total() == 0  # one scandir, names only: no stat, no open


def test_a_stray_24_character_name_is_unknown_and_not_the_newest_segment() -> None:
    stray = "zz-not-a-wal-segment-zzz"
    assert len(stray) == 24
    batch = B.select_streaming("/s", [SEG[0], stray, SEG[1]])
    assert batch.files == (SEG[0],) and batch.held_back == (SEG[1],)
    assert batch.unknown == (stray,) and batch.waiting == 2
