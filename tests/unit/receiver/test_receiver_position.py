"""Where pg_receivewal resumes, the .partial truncation rule, and gap records."""

from __future__ import annotations

from pathlib import Path

from walvault.config.server import ServerConfig
from walvault.receiver.gaps import load_gaps, open_gaps, record_gap
from walvault.receiver.position import resume_segment, scan_streaming, truncate_bad_partial

MB = 1 << 20


def test_resume_after_complete_or_at_partial(tmp_path: Path) -> None:
    for name in ("000000010000000000000003", "000000010000000000000004", "00000001.history"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".000000010000000000000009.tmp").write_bytes(b"")
    files = scan_streaming(str(tmp_path))
    assert files.segments == ("000000010000000000000003", "000000010000000000000004")
    resume = resume_segment(files, MB)
    assert resume is not None and resume.name == "000000010000000000000005"
    (tmp_path / "000000010000000000000005.partial").write_bytes(b"")
    files = scan_streaming(str(tmp_path))
    assert resume_segment(files, MB).name == "000000010000000000000005"  # type: ignore[union-attr]


def test_resume_crosses_log_boundary_and_timelines(tmp_path: Path) -> None:
    (tmp_path / "000000010000000000000FFF").write_bytes(b"")  # last 1 MiB segment of log 0
    files = scan_streaming(str(tmp_path))
    assert resume_segment(files, MB).name == "000000010000000100000000"  # type: ignore[union-attr]
    (tmp_path / "000000020000000100000000.partial").write_bytes(b"")
    files = scan_streaming(str(tmp_path))
    assert resume_segment(files, MB).name == "000000020000000100000000"  # type: ignore[union-attr]
    assert resume_segment(scan_streaming(str(tmp_path / "missing")), MB) is None


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
