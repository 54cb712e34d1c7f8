"""Where pg_receivewal resumes (its FindStreamingStart), where streamed WAL ends, positions
judged by archived headers, the .partial truncation rule, and gap records."""

from __future__ import annotations

import os
from pathlib import Path

from fakewal import SYSID, fake_segment, make_server
from walvault.compression import compress_bytes
from walvault.config.server import ServerConfig
from walvault.receiver.gaps import load_gaps, open_gaps, record_gap
from walvault.receiver.position import (
    archive_resume,
    data_end,
    resume_segment,
    scan_streaming,
    streamed_end,
    truncate_bad_partial,
)

MB = 1 << 20


def full(path: Path, size: int = MB) -> None:
    """A file of ``size`` bytes (sparse zeros): a complete segment, as far as names go."""
    with open(path, "wb") as handle:
        handle.truncate(size)


def test_resume_after_complete_or_at_partial(tmp_path: Path) -> None:
    for name in ("000000010000000000000003", "000000010000000000000004"):
        full(tmp_path / name)
    (tmp_path / "00000001.history").write_bytes(b"")
    (tmp_path / ".000000010000000000000009.tmp").write_bytes(b"")
    files = scan_streaming(str(tmp_path))
    assert files.segments == ("000000010000000000000003", "000000010000000000000004")
    resume = resume_segment(files, MB)
    assert resume is not None and resume.name == "000000010000000000000005"
    (tmp_path / "000000010000000000000005.partial").write_bytes(b"")
    files = scan_streaming(str(tmp_path))
    assert resume_segment(files, MB).name == "000000010000000000000005"  # type: ignore[union-attr]


def test_resume_crosses_log_boundary_and_timelines(tmp_path: Path) -> None:
    full(tmp_path / "000000010000000000000FFF")  # last 1 MiB segment of log 0
    files = scan_streaming(str(tmp_path))
    assert resume_segment(files, MB).name == "000000010000000100000000"  # type: ignore[union-attr]
    (tmp_path / "000000020000000100000000.partial").write_bytes(b"")
    files = scan_streaming(str(tmp_path))
    assert resume_segment(files, MB).name == "000000020000000100000000"  # type: ignore[union-attr]
    assert resume_segment(scan_streaming(str(tmp_path / "missing")), MB) is None


def test_resume_ranks_as_pg_receivewal_does(tmp_path: Path) -> None:
    """Highest segment number first, then timeline, then complete over .partial; a complete
    segment of the wrong size is skipped (pg_receivewal warns and skips it)."""
    full(tmp_path / "00000001000000000000000A")  # old timeline, past the fork
    (tmp_path / "00000002000000000000000A.partial").write_bytes(b"")
    # by "next segment" the old complete one would win (0B > 0A); pg_receivewal compares the
    # files' own numbers: same number, the higher timeline wins
    assert resume_segment(scan_streaming(str(tmp_path)), MB).name == (  # type: ignore[union-attr]
        "00000002000000000000000A"
    )
    full(tmp_path / "00000001000000000000000B")
    assert resume_segment(scan_streaming(str(tmp_path)), MB).name == (  # type: ignore[union-attr]
        "00000001000000000000000C"
    )
    (tmp_path / "00000001000000000000000B.partial").write_bytes(b"")
    assert resume_segment(scan_streaming(str(tmp_path)), MB).name == (  # type: ignore[union-attr]
        "00000001000000000000000C"  # the complete copy beats the .partial of the same segment
    )
    full(tmp_path / "00000001000000000000000C", MB // 2)  # wrong size: skipped
    assert resume_segment(scan_streaming(str(tmp_path)), MB).name == (  # type: ignore[union-attr]
        "00000001000000000000000C"
    )
    (tmp_path / "00000001000000000000000D").write_bytes(b"")
    assert resume_segment(scan_streaming(str(tmp_path)), MB).name == (  # type: ignore[union-attr]
        "00000001000000000000000C"
    )


def test_streamed_end_counts_partials_to_their_last_written_byte(tmp_path: Path) -> None:
    full(tmp_path / "000000010000000000000003")
    partial = tmp_path / "000000010000000000000004.partial"
    data = fake_segment("000000010000000000000004")[:300_000] + b"\0" * 5
    partial.write_bytes(data.ljust(MB, b"\0"))
    assert data_end(str(partial)) == len(data.rstrip(b"\0"))
    files = scan_streaming(str(tmp_path))
    assert streamed_end(files, 1, MB) == 4 * MB + data_end(str(partial))
    assert streamed_end(files, 2, MB) == 0
    (tmp_path / "000000020000000000000004.partial").write_bytes(b"")
    assert streamed_end(scan_streaming(str(tmp_path)), 2, MB) == 0  # a status file: no WAL
    empty = tmp_path / "zeros"
    full(empty)
    assert data_end(str(empty)) == 0


def test_archive_resume_goes_by_headers(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    hashdir = Path(server.wals_directory) / "0000000100000000"
    hashdir.mkdir()
    for number in (3, 4, 5):
        name = f"00000001000000000000000{number}"
        (hashdir / name).write_bytes(compress_bytes("zstd", fake_segment(name)))
    found = archive_resume(server, MB, SYSID)
    assert found.resume is not None and found.resume.name == "000000010000000000000006"
    assert found.misnamed == ()
    # segment 05 stored (compressed) under the name 09: never a resume point, reported
    os.rename(hashdir / "000000010000000000000005", hashdir / "000000010000000000000009")
    found = archive_resume(server, MB, SYSID)
    assert found.resume is not None and found.resume.name == "000000010000000000000005"
    (path, problem), *rest = found.misnamed
    assert not rest and path.endswith("000000010000000000000009")
    assert "page address 0/500000 in header does not match the start 0/900000" in problem
    # a segment of another cluster is no resume point either
    (hashdir / "00000001000000000000000A").write_bytes(
        fake_segment("00000001000000000000000A", sysid=SYSID + 1)
    )
    found = archive_resume(server, MB, SYSID)
    assert [os.path.basename(p) for p, _ in found.misnamed] == [
        "00000001000000000000000A",
        "000000010000000000000009",
    ]
    assert "system identifier" in found.misnamed[0][1]
    (hashdir / "00000001000000000000000B").write_bytes(b"junk")
    assert "cannot read its WAL header" in archive_resume(server, MB, SYSID).misnamed[0][1]


def test_truncate_only_a_wrongly_sized_newest_partial(tmp_path: Path) -> None:
    old = tmp_path / "000000010000000000000004.partial"
    new = tmp_path / "000000010000000000000005.partial"
    old.write_bytes(b"x" * 100)
    new.write_bytes(b"x" * MB)
    assert truncate_bad_partial(str(tmp_path), scan_streaming(str(tmp_path)), MB) is None
    new.write_bytes(b"x" * 1000)
    message = truncate_bad_partial(str(tmp_path), scan_streaming(str(tmp_path)), MB)
    assert message is not None and "wrong size 1000 while 1048576 was expected" in message
    assert new.stat().st_size == 0
    assert old.stat().st_size == 100  # older partials are data for the archive: untouched


def test_gap_records_are_durable_and_filtered_by_backups(tmp_path: Path) -> None:
    server = ServerConfig(
        name="pg",
        walvault_home=str(tmp_path),
        lock_directory=str(tmp_path),
        backup_directory=str(tmp_path / "pg"),
    )
    assert load_gaps(server) == []
    record_gap(server, "000000010000000000000003", "000000010000000000000007", "test")
    record_gap(server, "000000010000000000000010", "000000010000000000000011", "again")
    gaps = load_gaps(server)
    assert [g.first_missing for g in gaps] == [
        "000000010000000000000003",
        "000000010000000000000010",
    ]
    assert "000000010000000000000003..000000010000000000000007" in gaps[0].describe()
    assert len(open_gaps(server, "000000010000000000000009")) == 1
    assert len(open_gaps(server, "000000010000000000000020")) == 0
    assert len(open_gaps(server, None)) == 2
