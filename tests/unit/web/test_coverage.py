"""Archive coverage from the catalogue: ranges per timeline, read incrementally."""

from __future__ import annotations

import os
from pathlib import Path

from walvault.archive.catalogue import CatalogueEntry
from walvault.web.coverage import Coverage, CoverageReader

MIB = 1024 * 1024


def line(name: str, when: float = 1.0) -> str:
    return CatalogueEntry(name, 100, when, "zstd").to_line()


def test_ranges_merge_in_any_order() -> None:
    cov = Coverage(segment_size=16 * MIB)
    for seg in (5, 7, 6, 1, 9, 2):
        cov.add_segment(f"00000001000000000000000{seg}")
    cov.add_segment("000000010000000000000006")  # again: nothing changes
    assert cov.ranges == {1: [[1, 2], [5, 7], [9, 9]]}
    cov.add_segment("000000010000000000000008")
    assert cov.ranges == {1: [[1, 2], [5, 9]]}


def test_log_boundary_depends_on_the_segment_size() -> None:
    small = Coverage(segment_size=MIB)  # 4096 segments per log file
    big = Coverage(segment_size=16 * MIB)  # 256
    for cov in (small, big):
        cov.add_segment("0000000100000000000000FF")
        cov.add_segment("000000010000000100000000")
    assert len(big.ranges[1]) == 1  # FF is the last segment of a log with 16 MiB
    assert len(small.ranges[1]) == 2  # 100..FFF are missing with 1 MiB segments
    assert big.name_of(1, big.ranges[1][0][1]) == "000000010000000100000000"


def test_reader_is_incremental_and_starts_over_after_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "pg-xlog.db"
    reader = CoverageReader(str(path))
    assert reader.update().files == 0  # no catalogue yet
    path.write_text(line("000000010000000000000001") + line("000000010000000000000002"))
    cov = reader.update(16 * MIB)
    assert cov.ranges == {1: [[1, 2]]} and cov.files == 2
    with open(path, "a") as handle:
        handle.write(line("00000002.history", 5.0) + line("000000020000000000000003", 6.0))
        handle.write("000000020000000000000004\t10")  # a torn line: not yet
    cov = reader.update(16 * MIB)
    assert cov.ranges == {1: [[1, 2]], 2: [[3, 3]]} and cov.history == {2}
    assert (cov.last_name, cov.last_time, cov.files) == ("000000020000000000000003", 6.0, 4)
    with open(path, "a") as handle:
        handle.write("\t7.0\tzstd\tNone\n")
    assert reader.update(16 * MIB).ranges[2] == [[3, 4]]
    # retention rewrote it (a new file): read again from the start
    new = tmp_path / "new"
    new.write_text(line("000000020000000000000004"))
    os.replace(new, path)
    cov = reader.update(16 * MIB)
    assert cov.ranges == {2: [[4, 4]]} and cov.files == 1
    # the segment size became known: ranges rebuilt
    assert reader.update(MIB).segment_size == MIB
