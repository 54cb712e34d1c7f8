"""get-wal's engine: lookup order, races, validation, streaming (de)compression, --peek."""

from __future__ import annotations

import bz2
import gzip
import os
from pathlib import Path
from typing import Any

import pytest

from fakewal import MIB, archive_path, fake_segment, make_server
from walvault import compression as comp
from walvault.archive import retrieve
from walvault.archive.layout import ARCHIVE, lookup_order
from walvault.config import ServerConfig
from walvault.errors import InvalidWalName

NAME = "000000010000000000000005"


@pytest.fixture
def server(tmp_path: Path) -> ServerConfig:
    return make_server(tmp_path)


def fetch(server: ServerConfig, name: str, tmp_path: Path, **kw: Any) -> bytes:
    options = {k: kw.pop(k) for k in ("compression", "keep_compression") if k in kw}
    out = tmp_path / "out"
    with retrieve.open_wal(server, name, **kw) as found, out.open("wb") as handle:
        retrieve.send(found, handle, **options)
    return out.read_bytes()


def streaming(server: ServerConfig, name: str) -> Path:
    return Path(server.streaming_wals_directory) / name


def incoming(server: ServerConfig, name: str) -> Path:
    return Path(server.incoming_wals_directory) / name


def test_lookup_order_follows_barman(server: ServerConfig) -> None:
    inc, stream = server.incoming_wals_directory, server.streaming_wals_directory
    archived = (ARCHIVE, NAME)
    assert lookup_order(server, NAME) == [archived, (inc, NAME), (stream, NAME), archived]
    assert lookup_order(server, NAME, partial=True) == [
        archived,
        (inc, NAME),
        (stream, NAME),
        (stream, f"{NAME}.partial"),
        (stream, NAME),
        (ARCHIVE, f"{NAME}.partial"),
        (inc, f"{NAME}.partial"),
        archived,
    ]
    # no .partial variant for history files
    history = "00000002.history"
    assert lookup_order(server, history, partial=True)[0] == (ARCHIVE, history)
    assert len(lookup_order(server, history, partial=True)) == 4


def test_archive_then_incoming_then_streaming(server: ServerConfig, tmp_path: Path) -> None:
    copies = {where: fake_segment(NAME, seed=i) for i, where in enumerate("ais")}
    archive_path(server, NAME).write_bytes(copies["a"])
    incoming(server, NAME).write_bytes(copies["i"])
    streaming(server, NAME).write_bytes(copies["s"])
    assert fetch(server, NAME, tmp_path) == copies["a"]
    archive_path(server, NAME).unlink()
    assert fetch(server, NAME, tmp_path) == copies["i"]
    incoming(server, NAME).unlink()
    assert fetch(server, NAME, tmp_path) == copies["s"]
    streaming(server, NAME).unlink()
    with pytest.raises(retrieve.WalNotFound) as err:
        retrieve.open_wal(server, NAME)
    assert err.value.exit_code == 1
    assert err.value.message == f"WAL file '{NAME}' not found in server 'pg'"


def test_partial_only_with_partial_option(server: ServerConfig, tmp_path: Path) -> None:
    data = fake_segment(NAME)
    streaming(server, NAME + ".partial").write_bytes(data)
    with pytest.raises(retrieve.WalNotFound):
        retrieve.open_wal(server, NAME)
    with retrieve.open_wal(server, NAME, partial=True) as found:
        assert found.from_partial
    assert fetch(server, NAME, tmp_path, partial=True) == data
    # the .partial asked for by its own name is served too
    assert fetch(server, NAME + ".partial", tmp_path) == data


@pytest.mark.parametrize("content", [b"", bytes(MIB), b"\0" * 40 + b"x"], ids=str)
def test_partial_without_wal_yet_is_not_served(
    server: ServerConfig, content: bytes, tmp_path: Path
) -> None:
    """An empty or zero-filled .partial (pg_receivewal pads before writing) is no segment."""
    streaming(server, NAME + ".partial").write_bytes(content)
    with pytest.raises(retrieve.WalNotFound):
        retrieve.open_wal(server, NAME, partial=True)


def test_short_plain_segment_is_skipped_with_a_warning(
    server: ServerConfig, tmp_path: Path
) -> None:
    good = fake_segment(NAME)
    incoming(server, NAME).write_bytes(good[: MIB // 2])
    streaming(server, NAME).write_bytes(good)
    warnings: list[str] = []
    with retrieve.open_wal(server, NAME, warn=warnings.append) as found:
        assert found.path == str(streaming(server, NAME))
    assert len(warnings) == 1 and "the segment size is 1048576" in warnings[0]
    assert warnings[0].endswith(f"serving {streaming(server, NAME)} instead")


def test_a_wrong_copy_with_no_good_one_is_an_error_not_not_found(
    server: ServerConfig, tmp_path: Path
) -> None:
    """Refusing must never look like "no such file": PostgreSQL would end recovery there."""
    incoming(server, NAME).write_bytes(fake_segment(NAME)[: MIB // 2])
    with pytest.raises(retrieve.IntegrityError) as err:
        retrieve.open_wal(server, NAME)
    assert err.value.exit_code == 200
    assert "the segment size is 1048576" in err.value.message


OTHER = "000000010000000000000009"


@pytest.mark.parametrize("algorithm", [None, "zstd", "gzip"])
def test_a_valid_segment_under_another_name_is_refused(
    server: ServerConfig, tmp_path: Path, algorithm: str | None
) -> None:
    archive_path(server, NAME).write_bytes(comp.compress_bytes(algorithm, fake_segment(OTHER)))
    with pytest.raises(retrieve.IntegrityError, match="does not match the start"):
        fetch(server, NAME, tmp_path)


@pytest.mark.parametrize("algorithm", [None, "lz4"])
def test_a_segment_of_another_cluster_is_refused(
    server: ServerConfig, tmp_path: Path, algorithm: str | None
) -> None:
    from walvault.identity import write_identity

    archive_path(server, NAME).write_bytes(
        comp.compress_bytes(algorithm, fake_segment(NAME, sysid=424242))
    )
    assert len(fetch(server, NAME, tmp_path)) == MIB  # no identity recorded: nothing to compare
    write_identity(server, 7000000000000000001, 15)
    with pytest.raises(retrieve.IntegrityError, match="system identifier 424242 in header"):
        fetch(server, NAME, tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        fake_segment(NAME, sysid=424242),
        fake_segment(NAME, pageaddr=0x9000000),
        b"\x01" * 40 + bytes(MIB - 40),
        os.urandom(20 * MIB),
    ],
    ids=["other-cluster", "wrong-address", "no-header", "header-less-20MB"],
)
def test_a_wrong_streamed_partial_is_refused(
    server: ServerConfig, tmp_path: Path, content: bytes
) -> None:
    from walvault.identity import write_identity

    write_identity(server, 7000000000000000001, 15)
    streaming(server, NAME + ".partial").write_bytes(content)
    with pytest.raises(retrieve.IntegrityError):
        fetch(server, NAME, tmp_path, partial=True)


def test_keep_compression_still_verifies(server: ServerConfig, tmp_path: Path) -> None:
    archive_path(server, NAME).write_bytes(comp.compress_bytes("gzip", fake_segment(OTHER)))
    with pytest.raises(retrieve.IntegrityError):
        fetch(server, NAME, tmp_path, keep_compression=True)


def test_file_moved_by_archiver_during_lookup_is_found(
    server: ServerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """streaming/X moves to wals/ after wals/ was checked: the final re-check finds it."""
    data = fake_segment(NAME)
    streaming(server, NAME).write_bytes(data)
    real_open = os.open

    def racing_open(path: str, *args: Any) -> int:
        if path == str(incoming(server, NAME)) and streaming(server, NAME).exists():
            os.rename(streaming(server, NAME), archive_path(server, NAME))
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", racing_open)
    with retrieve.open_wal(server, NAME) as found:
        assert found.path == str(archive_path(server, NAME))
    monkeypatch.undo()
    assert fetch(server, NAME, tmp_path) == data


def test_file_removed_after_open_is_still_sent(server: ServerConfig, tmp_path: Path) -> None:
    data = fake_segment(NAME)
    archive_path(server, NAME).write_bytes(comp.compress_bytes("zstd", data))
    out = tmp_path / "out"
    with retrieve.open_wal(server, NAME) as found, out.open("wb") as handle:
        archive_path(server, NAME).unlink()  # archive-wal or retention removed it
        retrieve.send(found, handle)
    assert out.read_bytes() == data


@pytest.mark.parametrize("algorithm", comp.ALGORITHMS)
def test_every_compression_is_decoded_on_the_fly(
    server: ServerConfig, algorithm: str, tmp_path: Path
) -> None:
    data = fake_segment(NAME)
    stored = comp.compress_bytes(algorithm, data)
    archive_path(server, NAME).write_bytes(stored)
    assert fetch(server, NAME, tmp_path) == data
    assert fetch(server, NAME, tmp_path, keep_compression=True) == stored
    assert gzip.decompress(fetch(server, NAME, tmp_path, compression="gzip")) == data
    assert bz2.decompress(fetch(server, NAME, tmp_path, compression="bzip2")) == data
    assert sorted(os.listdir(archive_path(server, NAME).parent)) == [NAME]  # no temp files


def test_plain_file_recompressed_on_request(server: ServerConfig, tmp_path: Path) -> None:
    data = fake_segment(NAME)
    archive_path(server, NAME).write_bytes(data)
    assert gzip.decompress(fetch(server, NAME, tmp_path, compression="gzip")) == data


def test_corrupt_or_short_compressed_copy_is_an_error(server: ServerConfig, tmp_path: Path) -> None:
    data = fake_segment(NAME)
    stored = comp.compress_bytes("gzip", data)
    archive_path(server, NAME).write_bytes(stored[: len(stored) // 2])
    with pytest.raises(retrieve.WalSendError) as err:
        fetch(server, NAME, tmp_path)
    assert err.value.exit_code == 200
    archive_path(server, NAME).write_bytes(comp.compress_bytes("gzip", data[: MIB // 2]))
    with pytest.raises(retrieve.IntegrityError, match="the segment size is 1048576"):
        fetch(server, NAME, tmp_path)


def test_history_and_backup_files_are_sent_as_they_are(
    server: ServerConfig, tmp_path: Path
) -> None:
    history = Path(server.wals_directory) / "00000002.history"
    history.write_bytes(b"1\t0/5000000\tno recovery target specified\n")
    assert fetch(server, "00000002.history", tmp_path) == history.read_bytes()
    label = NAME + ".00000028.backup"
    archive_path(server, label).write_bytes(comp.compress_bytes("gzip", b"START WAL LOCATION"))
    assert fetch(server, label, tmp_path) == b"START WAL LOCATION"


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "00000001000000000000000G",
        NAME + "\n",
        "0000000100000000/" + NAME,
        "",
        NAME + ".partial/..",
    ],
)
def test_malformed_names_read_nothing(
    server: ServerConfig, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kw: Any) -> Any:
        raise AssertionError(f"file access for a malformed name: {args}")

    for function in ("open", "stat", "lstat", "listdir", "scandir"):
        monkeypatch.setattr(os, function, forbidden)
    with pytest.raises(InvalidWalName) as err:
        retrieve.open_wal(server, name, partial=True)
    assert err.value.exit_code == 3
    with pytest.raises(InvalidWalName):
        retrieve.peek(server, name, 3)


def write_segments(server: ServerConfig, first: str, count: int, seg_size: int) -> list[str]:
    from walvault.wal.names import Segment

    names = []
    current = Segment.from_name(first)
    for _ in range(count):
        data = fake_segment(current.name, seg_size=seg_size)
        archive_path(server, current.name).write_bytes(comp.compress_bytes("zstd", data))
        names.append(current.name)
        current = current.next(seg_size)
    return names


@pytest.mark.parametrize(
    ("seg_size", "first"),
    [(MIB, "000000010000000000000FFE"), (16 * MIB, "0000000100000000000000FE")],
    ids=["1MiB", "16MiB"],
)
def test_peek_crosses_log_boundaries(server: ServerConfig, seg_size: int, first: str) -> None:
    names = write_segments(server, first, 4, seg_size)
    assert names[2] == "000000010000000100000000"
    assert retrieve.peek(server, first, 10) == names
    assert retrieve.peek(server, first, 2) == names[:2]
    assert retrieve.peek(server, names[1], 1) == names[1:2]


def test_peek_stops_at_a_gap_and_ignores_partials(server: ServerConfig) -> None:
    names = write_segments(server, "000000010000000000000008", 4, MIB)
    archive_path(server, names[2]).unlink()
    streaming(server, names[2] + ".partial").write_bytes(fake_segment(names[2]))
    assert retrieve.peek(server, names[0], 10) == names[:2]
    assert retrieve.peek(server, names[2], 10) == []
    assert retrieve.peek(server, "000000010000000000000099", 10) == []


def test_peek_of_a_history_file_lists_only_itself(server: ServerConfig) -> None:
    (Path(server.wals_directory) / "00000002.history").write_text("1\t0/3000000\treason\n")
    assert retrieve.peek(server, "00000002.history", 5) == ["00000002.history"]


@pytest.mark.parametrize("codec", [None, "zstd-no-checksum", "lz4-no-checksum"])
def test_a_file_without_digest_or_checksum_has_its_records_walked(
    server: ServerConfig, tmp_path: Path, codec: str | None
) -> None:
    """Barman's files carry no integrity data (uncompressed, zstd and lz4 without content
    checksums) and walvault recorded no digest for them: the records' CRCs are checked."""
    import lz4.frame
    import zstandard

    def store(data: bytes) -> bytes:
        if codec == "zstd-no-checksum":
            return zstandard.ZstdCompressor(level=4).compress(data)
        if codec == "lz4-no-checksum":
            return bytes(lz4.frame.compress(data))
        return data

    good = fake_segment(NAME)
    archive_path(server, NAME).write_bytes(store(good))
    with retrieve.open_wal(server, NAME) as found:
        assert not found.check.protected and found.check.walks_records
    assert fetch(server, NAME, tmp_path) == good
    broken = bytearray(good)
    broken[MIB // 2 + 1234] ^= 0x10  # inside a record, far from any header
    archive_path(server, NAME).write_bytes(store(bytes(broken)))
    with pytest.raises(retrieve.IntegrityError, match="WAL records are damaged"):
        fetch(server, NAME, tmp_path)
