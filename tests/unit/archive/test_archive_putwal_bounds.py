"""put-wal's bounds: sizes refused before a byte is copied, an idle timeout, junk kept once."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tarstream import tar_stream
from walfiles import MiB, backup_history
from walsupply import make_server, segment_name, synthetic_segment
from walvault.archive.putwal import (
    MAX_WAL_FILES,
    STREAM_SEGMENTS,
    PutWalError,
    put_wal,
    stream_budget,
)
from walvault.checks.local import summarise_errors
from walvault.compression import compress_bytes
from walvault.config import ServerConfig

NAME = segment_name(1, 6)
SEGMENT = synthetic_segment(NAME)
GiB = 1 << 30


class Endless:
    """A sender that declares a member and then never stops sending zeros."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else 65536
        data = self.prefix[:size]
        self.prefix = self.prefix[size:]
        data += bytes(size - len(data))
        self.total += len(data)
        return data


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o600
    return info.tobuf(tarfile.GNU_FORMAT if kind != tarfile.REGTYPE else tarfile.PAX_FORMAT)


def _everything(server: ServerConfig) -> list[str]:
    root = Path(server.backup_directory)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def server(tmp_path: Path) -> ServerConfig:
    return make_server(tmp_path)


def _refused(server: ServerConfig, source: object) -> str:
    with pytest.raises(PutWalError) as caught:
        put_wal(server, source, warn=lambda _: None)  # type: ignore[arg-type]
    assert "\n" not in caught.value.message
    return caught.value.message


_, LABEL = backup_history(0x6000028, 0x6000100)


@pytest.mark.parametrize(
    ("name", "size", "limit"),
    [
        (NAME, 10 * GiB, GiB + GiB // 64 + (64 << 10)),  # no archive: PostgreSQL's maximum
        (NAME + ".partial", 2 * GiB, GiB + GiB // 64 + (64 << 10)),
        ("00000002.history", 2 * MiB, MiB + MiB // 64 + (64 << 10)),
        (f"{NAME}.00000028.backup", 200 << 10, (64 << 10) + 1024 + (64 << 10)),
    ],
)
def test_impossible_sizes_are_refused_before_copying(
    server: ServerConfig, name: str, size: int, limit: int
) -> None:
    sender = Endless(_header(name, size))
    message = _refused(server, sender)
    assert message.startswith(f"'{name}' is {size} bytes long: ")
    assert f"can be at most {limit} bytes" in message and "nothing was kept" in message
    assert sender.total <= 128 << 10  # the tar header and tarfile's read-ahead, no content
    assert _everything(server) == []


def test_the_archive_segment_size_tightens_the_bound(server: ServerConfig) -> None:
    archived = Path(server.wals_directory, NAME[:16], segment_name(1, 5))
    archived.parent.mkdir(parents=True)
    archived.write_bytes(synthetic_segment(segment_name(1, 5)))
    message = _refused(server, Endless(_header(NAME, 2 * MiB)))
    assert "at most 1130496 bytes (a segment of this archive, and room for compression)" in message
    noise = compress_bytes("bzip2", SEGMENT[:40] + os.urandom(MiB - 40))  # incompressible
    assert len(noise) > MiB
    put_wal(server, io.BytesIO(tar_stream({NAME: noise})))
    assert _everything(server) == [f"incoming/{NAME}", f"wals/{NAME[:16]}/{segment_name(1, 5)}"]


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (_header("SHA256SUMS", 100 << 10), "Checksum file 'SHA256SUMS' is too large"),
        (_header("././@PaxHeader", 10 * GiB, tarfile.XHDTYPE), "Tar header extension of"),
        (_header("././@LongLink", GiB, tarfile.GNUTYPE_LONGNAME), "Tar header extension of"),
        (_header(NAME, MiB, tarfile.GNUTYPE_SPARSE), "Unsupported file type 'sparse file'"),
    ],
)
def test_other_huge_members(server: ServerConfig, member: bytes, problem: str) -> None:
    sender = Endless(member)
    assert problem in _refused(server, sender)
    assert sender.total <= 128 << 10
    assert _everything(server) == []


def test_too_many_files(server: ServerConfig) -> None:
    files = {segment_name(1, n) + ".partial": b"" for n in range(MAX_WAL_FILES + 1)}
    message = _refused(server, io.BytesIO(tar_stream(files)))
    assert message.startswith(f"More than {MAX_WAL_FILES} WAL files in one stream")
    assert _everything(server) == []


def test_the_stream_as_a_whole_is_bounded(server: ServerConfig) -> None:
    archived = Path(server.wals_directory, NAME[:16], segment_name(1, 5))
    archived.parent.mkdir(parents=True)
    archived.write_bytes(synthetic_segment(segment_name(1, 5)))  # 1 MiB segments
    files = {segment_name(1, n) + ".partial": bytes(MiB) for n in range(6, 6 + STREAM_SEGMENTS)}
    put_wal(server, io.BytesIO(tar_stream(files)))  # four segments' worth: accepted
    budget = stream_budget(MiB)  # with room for a PAX header of 64 KiB per member
    for segno in range(20, 23):
        files[segment_name(1, segno) + ".partial"] = bytes(MiB)
    sender = io.BytesIO(tar_stream(files))
    assert len(sender.getvalue()) > budget
    assert _refused(server, sender).startswith(f"the stream is larger than {budget} bytes; ")
    assert sender.tell() <= budget + (128 << 10)


def test_a_decompression_bomb_under_a_small_name(server: ServerConfig) -> None:
    bomb = compress_bytes("gzip", bytes(2 * MiB))
    message = _refused(server, io.BytesIO(tar_stream({"00000002.history": bomb})))
    assert "larger than 1048576 bytes, the limit for a history file" in message


def _pipe_server(tmp_path: Path, timeout: int) -> ServerConfig:
    return make_server(tmp_path, put_wal_timeout=timeout)


@pytest.mark.parametrize("sent", [0, 1000, 60_000])  # under the 64 KiB a pipe holds
def test_a_stalled_sender_is_given_up(tmp_path: Path, sent: int) -> None:
    server = _pipe_server(tmp_path, 1)
    read_end, write_end = os.pipe()
    if sent:
        os.write(write_end, tar_stream({NAME: SEGMENT})[:sent])
    try:
        with open(read_end, "rb") as stream:
            started = time.monotonic()
            message = _refused(server, stream)
            elapsed = time.monotonic() - started
    finally:
        os.close(write_end)
    assert message.startswith("no data received for 1 seconds (put_wal_timeout): the sender")
    assert message.endswith("stalled; nothing was kept in put-wal for server 'pg'")
    assert 1 <= elapsed < 10
    assert _everything(server) == []  # no temporary file left in incoming/


def test_a_slow_but_steady_sender_is_not_cut(tmp_path: Path) -> None:
    server = _pipe_server(tmp_path, 1)
    data = tar_stream({NAME: SEGMENT})
    read_end, write_end = os.pipe()

    def send() -> None:
        with open(write_end, "wb", buffering=0) as out:
            for start in range(0, len(data), len(data) // 4 + 1):
                out.write(data[start : start + len(data) // 4 + 1])
                time.sleep(0.5)

    sender = threading.Thread(target=send)
    sender.start()
    with open(read_end, "rb") as stream:
        put_wal(server, stream)
    sender.join()
    assert _everything(server) == [f"incoming/{NAME}"]


def test_refused_content_is_kept_once_in_errors(server: ServerConfig) -> None:
    junk = {"00000002.history": b"this is not a history file\n"}
    first = _refused(server, io.BytesIO(tar_stream(junk)))
    assert first.startswith(
        "'00000002.history' is not a valid WAL file for its name (not a timeline history "
        "file: line 1: malformed timeline history line 'this is not a history file' "
    )
    assert "; it is NOT archived, a copy is kept in the errors directory (" in first
    again = _refused(server, io.BytesIO(tar_stream(junk)))  # PostgreSQL's retry
    assert "an identical copy is already in the errors directory" in again
    (kept,) = os.listdir(server.errors_directory)
    assert kept.startswith("00000002.history.") and kept.endswith(".invalid")
    assert summarise_errors(server) == "invalid content: 1"
    label_name, label = backup_history(0x6000028, 0x6000100)
    tampered = label.replace("START TIMELINE: 1", "START TIMELINE: 2")
    message = _refused(server, io.BytesIO(tar_stream({label_name: tampered.encode()})))
    assert "(not a backup history file: START WAL LOCATION file" in message
    corrupt = compress_bytes("gzip", SEGMENT)[:-20]
    for _ in range(2):  # does not decompress: compared byte for byte
        _refused(server, io.BytesIO(tar_stream({NAME: corrupt})))
    assert summarise_errors(server) == "invalid content: 3"
    assert os.listdir(server.incoming_wals_directory) == []


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        f"{NAME}\nERROR: forged",
        f"../{NAME}\nERROR: forged",
        f"x\x1b[2J{NAME}",
        "a" * 5000,
    ],
)
def test_hostile_names_get_one_line_and_no_file(server: ServerConfig, name: str) -> None:
    message = _refused(server, io.BytesIO(tar_stream({name: SEGMENT})))
    assert "\x1b" not in message and len(message) < 500
    assert _everything(server) == []
