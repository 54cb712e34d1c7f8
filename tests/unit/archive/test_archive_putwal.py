"""put-wal's engine: checks on the tar stream, durable landing in incoming/, duplicates."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from tarstream import sums_text, symlink_member, tar_stream
from walfiles import backup_history
from walsupply import SYSID, make_server, segment_name, synthetic_segment
from walvault.archive.putwal import PutWalError, check_accepting, put_wal, ssh_suffix
from walvault.compression import compress_bytes
from walvault.config import ServerConfig

NAME = segment_name(1, 6)
SEGMENT = synthetic_segment(NAME)


def _put(server: ServerConfig, data: bytes, warnings: list[str] | None = None) -> None:
    sink = warnings if warnings is not None else []
    put_wal(server, io.BytesIO(data), suffix=" (SSH host: 10.0.0.9)", warn=sink.append)


def _refused(server: ServerConfig, data: bytes) -> str:
    with pytest.raises(PutWalError) as caught:
        _put(server, data)
    assert caught.value.exit_code == 1
    return caught.value.message


def _incoming(server: ServerConfig) -> list[str]:
    return sorted(os.listdir(server.incoming_wals_directory))


@pytest.fixture
def server(tmp_path: Path) -> ServerConfig:
    return make_server(tmp_path)


def test_lands_the_file_durably_with_the_tar_mtime(server: ServerConfig) -> None:
    _put(server, tar_stream({NAME: SEGMENT}, mtime=1_600_000_000))
    path = Path(server.incoming_wals_directory, NAME)
    assert _incoming(server) == [NAME]  # no temporary file left behind
    assert path.read_bytes() == SEGMENT
    assert path.stat().st_mtime == 1_600_000_000


@pytest.mark.parametrize("sums_first", [False, True])
def test_md5sums_before_or_after_the_file_and_dot_slash_names(
    server: ServerConfig, sums_first: bool
) -> None:
    history = b"1\t0/3000000\tno recovery target specified\n"
    files = {f"./{NAME}": SEGMENT, "./00000002.history": history}
    _put(server, tar_stream(files, sums="MD5SUMS", sums_first=sums_first))
    assert _incoming(server) == sorted(["00000002.history", NAME])


def test_client_compressed_data_is_kept_as_sent(server: ServerConfig) -> None:
    data = compress_bytes("zstd", SEGMENT)
    _put(server, tar_stream({NAME: data}))
    assert Path(server.incoming_wals_directory, NAME).read_bytes() == data


def test_checksum_errors_use_barmans_messages(server: ServerConfig) -> None:
    where = "in put-wal for server 'pg' (SSH host: 10.0.0.9)"
    bad = "0" * 64
    message = _refused(server, tar_stream({NAME: SEGMENT}, sums_data=f"{bad} *{NAME}\n".encode()))
    assert message.startswith("Bad file checksum '")
    assert f"(should be {bad}) for file '{NAME}' {where}" in message
    message = _refused(server, tar_stream({NAME: SEGMENT}, sums=None))
    assert message == f"Missing checksum for file '{NAME}' {where}"
    other = segment_name(1, 7)
    lines = f"{bad} *{NAME}\n{bad} *{other}\n".encode()
    message = _refused(server, tar_stream({NAME: SEGMENT}, sums_data=lines))
    assert message == f"Checksum without corresponding file '{other}' {where}"
    assert _incoming(server) == []


def test_bad_checksum_line_is_a_warning(server: ServerConfig) -> None:
    warnings: list[str] = []
    lines = b"not a checksum line\n" + sums_text({NAME: SEGMENT})
    data = tar_stream({NAME: SEGMENT}, sums_data=lines)
    _put(server, data, warnings)
    assert warnings == [
        "Bad checksum line 'not a checksum line' found in put-wal for server 'pg' "
        "(SSH host: 10.0.0.9)"
    ]
    assert _incoming(server) == [NAME]


def test_unsupported_members_are_refused(server: ServerConfig) -> None:
    where = "in put-wal for server 'pg' (SSH host: 10.0.0.9)"
    message = _refused(server, tar_stream({f"pg_wal/{NAME}": SEGMENT}))
    assert message == f"Unsupported filename 'pg_wal/{NAME}' {where}"
    link = symlink_member(NAME, "/etc/passwd")
    message = _refused(server, tar_stream({}, sums=None, extra=[link]))
    assert message == f"Unsupported file type 'symbolic link' for file '{NAME}' {where}"
    message = _refused(server, tar_stream({"pg_hba.conf": b"x"}))
    assert message == f"'pg_hba.conf' is not a valid WAL file name {where}"
    assert _incoming(server) == []


def test_truncated_or_empty_streams_leave_nothing(server: ServerConfig) -> None:
    data = tar_stream({NAME: SEGMENT})
    assert "Invalid tar stream" in _refused(server, data[: len(data) // 2])
    assert "Invalid tar stream" in _refused(server, b"")
    assert "No WAL file received" in _refused(server, tar_stream({}, sums=None))
    assert _incoming(server) == []


def test_identical_copy_in_incoming_or_archive_is_success(server: ServerConfig) -> None:
    _put(server, tar_stream({NAME: SEGMENT}))
    _put(server, tar_stream({NAME: compress_bytes("gzip", SEGMENT)}))  # same content
    assert _incoming(server) == [NAME]
    archived = Path(server.wals_directory, NAME[:16], NAME)
    archived.parent.mkdir(parents=True)
    archived.write_bytes(compress_bytes("lz4", SEGMENT))
    os.unlink(Path(server.incoming_wals_directory, NAME))
    _put(server, tar_stream({NAME: SEGMENT}))
    assert _incoming(server) == []  # already archived: nothing to add
    assert not os.path.exists(server.errors_directory)


def test_different_content_goes_to_errors_once_and_fails(server: ServerConfig) -> None:
    _put(server, tar_stream({NAME: SEGMENT}))
    other = synthetic_segment(NAME, filler=b"another history")
    message = _refused(server, tar_stream({NAME: other}))
    assert message.startswith(
        "Duplicate Files Detected with Mismatched Checksums. "
        f"File {NAME} already exists on server pg with checksum "
    )
    assert "but the checksum of the incoming file is " in message
    assert "The file has been moved to the errors directory" in message
    assert message.endswith("It is NOT archived: check which copy is right (SSH host: 10.0.0.9)")
    (kept,) = os.listdir(server.errors_directory)
    assert kept.startswith(NAME + ".") and kept.endswith(".duplicate")
    assert Path(server.errors_directory, kept).read_bytes() == other
    assert Path(server.incoming_wals_directory, NAME).read_bytes() == SEGMENT
    message = _refused(server, tar_stream({NAME: other}))  # PostgreSQL's retry
    assert "An identical copy of the file is already in the errors directory" in message
    assert os.listdir(server.errors_directory) == [kept]
    assert _incoming(server) == [NAME]


def test_segment_of_another_cluster_is_refused(server: ServerConfig) -> None:
    os.makedirs(server.backup_directory, exist_ok=True)
    Path(server.identity_path).write_text(json.dumps({"systemid": "42", "version": "15"}))
    message = _refused(server, tar_stream({NAME: SEGMENT}))
    assert f"WAL file '{NAME}' belongs to another PostgreSQL cluster" in message
    assert f"system identifier {SYSID}, expected 42" in message
    assert _incoming(server) == []
    Path(server.identity_path).write_text(json.dumps({"systemid": str(SYSID)}))
    _put(server, tar_stream({NAME: SEGMENT}))
    assert _incoming(server) == [NAME]


def test_invalid_contents_are_refused(server: ServerConfig) -> None:
    misnamed = segment_name(1, 9)
    message = _refused(server, tar_stream({misnamed: SEGMENT}))
    assert f"'{misnamed}' is not a valid WAL file for its name (page address" in message
    message = _refused(server, tar_stream({NAME: SEGMENT[:-1]}))
    assert "size 1048575, the header says 1048576" in message
    corrupt = compress_bytes("gzip", SEGMENT)[:-20]
    message = _refused(server, tar_stream({NAME: corrupt}))
    assert f"'{NAME}' is not a valid WAL file for its name (it cannot be decompressed" in message
    assert "not a valid WAL file" in _refused(server, tar_stream({NAME: bytes(len(SEGMENT))}))
    assert _incoming(server) == []


def test_empty_partial_and_backup_files_are_accepted(server: ServerConfig) -> None:
    label_name, label = backup_history(0x6000028, 0x6000100)
    files = {NAME + ".partial": bytes(len(SEGMENT)), label_name: label.encode()}
    _put(server, tar_stream(files))
    assert _incoming(server) == sorted(files)


def test_stale_temporary_files_of_dead_writers_are_removed(server: ServerConfig) -> None:
    incoming = Path(server.incoming_wals_directory)
    stale = incoming / f".{NAME}.999999999.0123abcd.tmp"
    fresh = incoming / f".{NAME}.999999998.0123abcd.tmp"
    for path in (stale, fresh):
        path.write_bytes(SEGMENT[:100])
    old = time.time() - 3600
    os.utime(stale, (old, old))
    _put(server, tar_stream({NAME: SEGMENT}))
    assert _incoming(server) == [fresh.name, NAME]


def test_accepting_needs_the_archiver(tmp_path: Path) -> None:
    with pytest.raises(PutWalError, match="archiver = off"):
        check_accepting(make_server(tmp_path, archiver=False))
    check_accepting(make_server(tmp_path / "b"))


def test_ssh_suffix() -> None:
    assert ssh_suffix({"SSH_CONNECTION": "192.0.2.7 50000 192.0.2.1 22"}) == (
        " (SSH host: 192.0.2.7)"
    )
    assert ssh_suffix({}) == ""


def test_commit_new_never_replaces(tmp_path: Path) -> None:
    from walvault.fs import commit_new, write_temp

    dst = tmp_path / NAME
    tmp, size = write_temp(dst, lambda handle: handle.write(b"first"))
    assert size == 5 and tmp.name.startswith(f".{NAME}.") and tmp.name.endswith(".tmp")
    assert commit_new(tmp, dst) and not tmp.exists()
    tmp, _ = write_temp(dst, lambda handle: handle.write(b"second"))
    assert not commit_new(tmp, dst)
    assert dst.read_bytes() == b"first" and tmp.read_bytes() == b"second"
