"""The xlog.db catalogue: Barman's line format, torn lines, backward lookups, rebuild."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walsupply import make_server, synthetic_segment
from walvault.archive import catalogue
from walvault.archive.catalogue import CatalogueEntry, find_names, iter_entries, parse_line
from walvault.compression import compress_bytes

BARMAN_LINES = [
    "000000010000000000000008\t1048576\t1795622445.0063925\tNone\tNone\n",
    "000000010000000000000009\t1242\t1795622449.6140215\tgzip\tNone\n",
]


@pytest.mark.parametrize("line", BARMAN_LINES)
def test_barman_lines_round_trip(line: str) -> None:
    assert parse_line(line).to_line() == line


def test_three_and_four_columns_are_accepted() -> None:
    assert parse_line("000000010000000000000008 16777216 1700000000.5") == CatalogueEntry(
        "000000010000000000000008", 16777216, 1700000000.5
    )
    entry = parse_line("000000010000000000000008\t10\t1.0\tbzip2")
    assert entry.compression == "bzip2" and entry.encryption is None


@pytest.mark.parametrize(
    "line", ["", "x 1 2", "000000010000000000000008 1", "000000010000000000000008 a 1.0"]
)
def test_bad_lines_are_rejected(line: str) -> None:
    with pytest.raises(ValueError):
        parse_line(line)


names = st.builds(
    lambda tli, seg, kind: {
        0: f"{tli:08X}{0:08X}{seg:08X}",
        1: f"{tli:08X}{0:08X}{seg:08X}.partial",
        2: f"{tli:08X}.history",
        3: f"{tli:08X}{0:08X}{seg:08X}.00000028.backup",
    }[kind],
    st.integers(1, 0xFFFFFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 3),
)


@given(
    name=names,
    size=st.integers(0, 1 << 40),
    mtime=st.floats(0, 4e9, allow_nan=False),
    compression=st.sampled_from([None, "gzip", "bzip2", "xz", "zstd", "lz4"]),
)
def test_any_entry_round_trips(name: str, size: int, mtime: float, compression: str | None) -> None:
    entry = CatalogueEntry(name, size, mtime, compression)
    line = entry.to_line()
    assert line.count("\t") == 4 and line.endswith("\n")
    assert parse_line(line) == entry


def _write(path: Path, count: int, torn: bool = False) -> list[str]:
    lines = [f"{1:08X}{0:08X}{i:08X}\t{i}\t{i}.5\tNone\tNone\n" for i in range(count)]
    text = "".join(lines) + ("0000000100000000000" if torn else "")
    path.write_text(text)
    return [line.split("\t")[0] for line in lines]


def test_iter_entries_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "pg-xlog.db"
    written = _write(path, 5, torn=True)
    assert [e.name for e in iter_entries(path)] == written


def test_find_names_reads_backwards_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue, "_BLOCK", 37)  # lines straddle every block boundary
    path = tmp_path / "pg-xlog.db"
    written = _write(path, 300, torn=True)
    wanted = {written[0], written[150], written[-1], "000000010000000000000FFF"}
    assert find_names(path, wanted) == wanted - {"000000010000000000000FFF"}
    # the torn line's name is not "present"
    assert find_names(path, {"0000000100000000000"}) == set()


def test_append_cuts_a_torn_tail_and_skips_existing(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    os.makedirs(server.xlogdb_directory)
    path = Path(server.xlogdb_path)
    written = _write(path, 3, torn=True)
    new = CatalogueEntry("000000010000000000000010", 1, 2.0)
    old = CatalogueEntry(written[1], 1, 1.5)
    done = catalogue.append_entries(server, [old, new], skip_existing=True)
    assert done == [new]
    assert [e.name for e in iter_entries(path)] == [*written, new.name]
    assert path.read_text().endswith(new.to_line())


def test_append_to_a_missing_catalogue_rebuilds_it_first(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    name = "000000010000000000000003"
    hashed = Path(server.wals_directory, name[:16])
    hashed.mkdir(parents=True)
    (hashed / name).write_bytes(synthetic_segment(name))
    entry = CatalogueEntry(name, 1 << 20, 1.0)
    other = CatalogueEntry("000000010000000000000004", 5, 1.0)
    assert catalogue.append_entries(server, [entry, other]) == [other]
    assert [e.name for e in iter_entries(server.xlogdb_path)] == [name, other.name]


def test_rebuild_keeps_partials_in_barman_order(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    wals = Path(server.wals_directory)
    files = {
        "0000000100000000/000000010000000000000001": synthetic_segment("000000010000000000000001"),
        "0000000100000000/000000010000000000000002.partial": b"",
        "0000000100000000/000000010000000000000002.00000028.backup": b"START WAL",
        "00000002.history": compress_bytes("gzip", b"1\t0/2000000\treason\n"),
        "0000000200000000/000000020000000000000002": compress_bytes(
            "lz4", synthetic_segment("000000020000000000000002")
        ),
        "0000000100000000/.000000010000000000000009.123.abcdef01.tmp": b"temp",
        "0000000100000000/stray": b"?",
        "0000000200000000/000000010000000000000005": b"in the wrong hash dir",
        "lost+found/x": b"",
        "pg-xlog.db": b"stale\n",  # the catalogue itself, and its pre-3.13 name
        "xlog.db": b"",
    }
    for rel, data in files.items():
        (wals / rel).parent.mkdir(parents=True, exist_ok=True)
        (wals / rel).write_bytes(data)
    os.utime(wals / "00000002.history", (5.0, 5.0))
    result = catalogue.rebuild(server)
    assert result.summary("pg") == (
        "Done rebuilding xlogdb for server pg (history: 1, backup_labels: 1, wal_file: 2, "
        "partial: 1)"
    )
    entries = list(iter_entries(server.xlogdb_path))
    assert [e.name for e in entries] == [
        "000000010000000000000001",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000002.partial",
        "00000002.history",
        "000000020000000000000002",
    ]
    history = entries[3]
    assert (history.compression, history.time, history.encryption) == ("gzip", 5.0, None)
    assert entries[4].compression == "lz4" and entries[0].compression is None
    assert sorted(Path(p).name for p in result.unexpected) == [
        "000000010000000000000005",
        "stray",
        "x",  # lost+found/x: files are reported, not the directories holding them
    ]
