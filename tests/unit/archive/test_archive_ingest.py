"""Per-file steps of archive-wal: inspection verdicts, twin comparison, archived copies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from walfiles import MiB, backup_history
from walsupply import SYSID, make_server, synthetic_segment
from walvault.archive import errors_dir
from walvault.archive.ingest import (
    Staged,
    UnreadableArchive,
    Verdict,
    archived_segment_size,
    decompressed_head,
    file_pieces,
    inspect_staged,
    same_content,
    store_as_is,
    store_compressed,
)
from walvault.compression import ALGORITHMS, compress_bytes, decompress_bytes

NAME = "000000010000000000000006"


def _put(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)
    return directory / name


def test_a_valid_segment_is_archived(tmp_path: Path) -> None:
    _put(tmp_path, NAME, synthetic_segment(NAME))
    found = inspect_staged(str(tmp_path), NAME, system_identifier=SYSID)
    assert found.verdict is Verdict.ARCHIVE and found.header is not None
    assert found.staged is not None and found.staged.compression is None
    assert found.header.system_identifier == SYSID and found.header.pg_version == 15


def test_another_cluster_is_foreign(tmp_path: Path) -> None:
    _put(tmp_path, NAME, synthetic_segment(NAME, sysid=SYSID + 1))
    found = inspect_staged(str(tmp_path), NAME, system_identifier=SYSID)
    assert found.verdict is Verdict.FOREIGN
    assert found.problem == f"system identifier {SYSID + 1}, expected {SYSID}"
    # unknown identity: no opinion on the cluster
    assert inspect_staged(str(tmp_path), NAME, system_identifier=None).verdict is Verdict.ARCHIVE


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (synthetic_segment("000000010000000000000007"), "page address 0/700000 in header"),
        (synthetic_segment(NAME)[: 1 << 19], "size 524288, the header says 1048576"),
        (bytes(1 << 20), "header is all zeros"),
        (b"short", "WAL header too short"),
    ],
)
def test_broken_segments_are_invalid(tmp_path: Path, data: bytes, problem: str) -> None:
    _put(tmp_path, NAME, data)
    found = inspect_staged(str(tmp_path), NAME, system_identifier=SYSID)
    assert found.verdict is Verdict.INVALID and problem in found.problem


def test_partials_empty_or_valid(tmp_path: Path) -> None:
    _put(tmp_path, f"{NAME}.partial", b"")
    found = inspect_staged(str(tmp_path), f"{NAME}.partial", system_identifier=SYSID)
    assert found.verdict is Verdict.ARCHIVE
    half = synthetic_segment(NAME)[:4096] + bytes((1 << 20) - 4096)  # zero-padded, as streamed
    _put(tmp_path, f"{NAME}.partial", half)
    found = inspect_staged(str(tmp_path), f"{NAME}.partial", system_identifier=SYSID + 1)
    assert found.verdict is Verdict.FOREIGN


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_client_compressed_files_are_recognised_and_checked(tmp_path: Path, algo: str) -> None:
    _put(tmp_path, NAME, compress_bytes(algo, synthetic_segment(NAME)))
    found = inspect_staged(str(tmp_path), NAME, system_identifier=SYSID)
    assert found.verdict is Verdict.ARCHIVE and found.staged is not None
    assert found.staged.compression == algo
    found = inspect_staged(str(tmp_path), NAME, system_identifier=SYSID - 1)
    assert found.verdict is Verdict.FOREIGN


def test_corrupt_compressed_segment_is_invalid(tmp_path: Path) -> None:
    _put(tmp_path, NAME, b"\x28\xb5\x2f\xfd" + b"garbage" * 20)
    found = inspect_staged(str(tmp_path), NAME, system_identifier=SYSID)
    assert found.verdict is Verdict.INVALID and "zstd" in found.problem


def test_other_kinds(tmp_path: Path) -> None:
    (tmp_path / NAME).mkdir()
    assert inspect_staged(str(tmp_path), NAME, system_identifier=None).verdict is Verdict.UNKNOWN
    os.symlink("/nonexistent", tmp_path / "000000010000000000000009")
    found = inspect_staged(str(tmp_path), "000000010000000000000009", system_identifier=None)
    assert found.verdict is Verdict.UNKNOWN
    missing = inspect_staged(str(tmp_path), "000000010000000000000008", system_identifier=None)
    assert missing.verdict is Verdict.VANISHED
    _put(tmp_path, "00000002.history", b"1\t0/3000000\tno recovery target specified\n")
    found = inspect_staged(str(tmp_path), "00000002.history", system_identifier=SYSID)
    assert found.verdict is Verdict.ARCHIVE and found.header is None


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_decompressed_head(tmp_path: Path, algo: str) -> None:
    data = synthetic_segment(NAME)
    path = _put(tmp_path, "x", compress_bytes(algo, data))
    with open(path, "rb") as handle:
        assert decompressed_head(handle, algo) == data[:40]


def _staged(path: Path, compression: str | None) -> Staged:
    st = path.stat()
    return Staged(path.name, str(path), st.st_size, st.st_mtime, compression)


@pytest.mark.parametrize("left", [None, *ALGORITHMS])
@pytest.mark.parametrize("right", [None, "gzip", "zstd"])
def test_same_content_across_compressions(tmp_path: Path, left: str | None, right: str) -> None:
    data = os.urandom((1 << 20) + 12345)  # more than one CHUNK_SIZE
    archived = _put(tmp_path / "a", NAME, compress_bytes(left, data) if left else data)
    same = _put(tmp_path / "b", NAME, compress_bytes(right, data) if right else data)
    assert same_content(file_pieces(str(archived)), _staged(same, right))
    changed = data[:-1] + bytes([data[-1] ^ 1])
    other = _put(tmp_path / "c", NAME, compress_bytes(right, changed) if right else changed)
    assert not same_content(file_pieces(str(archived)), _staged(other, right))
    shorter = data[:-10]
    other = _put(tmp_path / "d", NAME, compress_bytes(right, shorter) if right else shorter)
    assert not same_content(file_pieces(str(archived)), _staged(other, right))


def test_corrupt_twins(tmp_path: Path) -> None:
    data = synthetic_segment(NAME)
    good = _put(tmp_path / "a", NAME, compress_bytes("gzip", data))
    bad = _put(tmp_path / "b", NAME, compress_bytes("gzip", data)[:-20])
    assert not same_content(file_pieces(str(good)), _staged(bad, "gzip"))
    with pytest.raises(UnreadableArchive):
        same_content(file_pieces(str(bad)), _staged(good, "gzip"))


@pytest.mark.parametrize("algo", [None, *ALGORITHMS])
def test_a_stored_copy_is_invisible_until_committed_and_carries_its_digest(
    tmp_path: Path, algo: str | None
) -> None:
    from walvault.archive.integrity import DIGEST_KEY, PLAIN_SIZE_KEY, digest_of
    from walvault.storage.posix import PosixStorage

    data = synthetic_segment(NAME)
    src = _put(tmp_path / "in", NAME, data)
    os.utime(src, (1234.5, 1234.5))
    store = PosixStorage(str(tmp_path / "out"), meta_dir=str(tmp_path / "meta"))
    batch = store.batch()
    key = f"{NAME[:16]}/{NAME}"
    if algo is None:
        info = store_as_is(_staged(src, None), key, batch)
    else:
        info = store_compressed(_staged(src, None), key, algo, 1, batch)
    dst = tmp_path / "out" / key
    assert not dst.exists() and len(os.listdir(dst.parent)) == (0 if algo is None else 1)
    assert batch.commit() == {}
    assert dst.stat().st_size == info.size and dst.stat().st_mtime == 1234.5
    assert decompress_bytes(algo, dst.read_bytes()) == data
    head = store.head(key)
    assert head is not None
    assert head.metadata[DIGEST_KEY] == digest_of(data)
    assert head.metadata[PLAIN_SIZE_KEY] == str(len(data))
    assert src.exists()  # the source goes only once the catalogue has the line


def test_errors_names_never_collide(tmp_path: Path) -> None:
    import datetime as dt

    server = make_server(tmp_path)
    now = dt.datetime(2026, 11, 25, 16, 2, 1, tzinfo=dt.UTC)
    moved = []
    for _ in range(3):
        path = _put(tmp_path / "in", NAME, b"x")
        moved.append(Path(errors_dir.move_to_errors(server, str(path), "duplicate", now=now)).name)
    assert moved == [
        f"{NAME}.20261125T160201Z.duplicate",
        f"{NAME}.20261125T160201Z.1.duplicate",
        f"{NAME}.20261125T160201Z.2.duplicate",
    ]
    assert sorted(os.listdir(server.errors_directory)) == sorted(moved)
    with pytest.raises(ValueError):
        errors_dir.error_name(NAME, "bogus", "x")


@pytest.mark.parametrize("algo", [None, "zstd"])
def test_history_and_backup_files_are_judged(tmp_path: Path, algo: str | None) -> None:
    def pack(text: str) -> bytes:
        return compress_bytes(algo, text.encode()) if algo else text.encode()

    label_name, label = backup_history(0x6000028, 0x6000100)
    files = {
        "00000002.history": (pack("1\t0/3000000\tno recovery target specified\n"), None),
        "00000003.history": (pack("3\t0/3000000\tits own timeline\n"), "not below"),
        "00000004.history": (pack(""), "no timeline switch line"),
        label_name: (pack(label), None),
        NAME + ".00000028.backup": (pack("START WAL LOCATION: 0/6000028\n"), "no CHECKPOINT"),
    }
    for name, (data, problem) in files.items():
        _put(tmp_path, name, data)
        found = inspect_staged(str(tmp_path), name, system_identifier=SYSID, segment_size=MiB)
        if problem is None:
            assert found.verdict is Verdict.ARCHIVE, found
        else:
            assert found.verdict is Verdict.INVALID and problem in found.problem, found


def test_partials_without_a_header(tmp_path: Path) -> None:
    name = f"{NAME}.partial"
    _put(tmp_path, name, bytes(20 << 20))  # a header-less 20 MiB .partial
    found = inspect_staged(str(tmp_path), name, system_identifier=SYSID, segment_size=16 << 20)
    assert found.verdict is Verdict.INVALID
    assert found.problem == "larger than 16777216 bytes, the segment size for a partial file"
    _put(tmp_path, name, bytes(4096) + b"junk" + bytes(MiB - 4100))
    found = inspect_staged(str(tmp_path), name, system_identifier=SYSID)
    assert found.verdict is Verdict.INVALID and "not all zeros" in found.problem
    _put(tmp_path, name, compress_bytes("gzip", bytes(4096) + b"junk"))
    found = inspect_staged(str(tmp_path), name, system_identifier=SYSID)
    assert found.verdict is Verdict.INVALID and "not all zeros" in found.problem
    _put(tmp_path, name, synthetic_segment(NAME) + b"\0")
    found = inspect_staged(str(tmp_path), name, system_identifier=SYSID)
    assert found.verdict is Verdict.INVALID and "larger than the segment size" in found.problem
    _put(tmp_path, name, bytes(MiB))  # created by pg_receivewal, nothing written yet
    found = inspect_staged(str(tmp_path), name, system_identifier=SYSID, segment_size=MiB)
    assert found.verdict is Verdict.ARCHIVE and found.header is None


def test_archived_segment_size(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    assert archived_segment_size(server) is None
    archived = Path(server.wals_directory, NAME[:16], NAME)
    archived.parent.mkdir(parents=True)
    archived.write_bytes(compress_bytes("lz4", synthetic_segment(NAME)))
    assert archived_segment_size(server) == MiB
    archived.write_bytes(b"junk")
    assert archived_segment_size(server) is None
