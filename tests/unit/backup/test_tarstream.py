"""The tar streams of backups: the watcher on the way up, the checked unpack on the way down."""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
from pathlib import Path

import pytest

from walvault.backup.progress import Progress
from walvault.backup.tarstream import MANIFEST_LIMIT, TarError, TarWatcher, unpack


def member(name: str, data: bytes = b"", **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = 1_700_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def make_tar(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


LABEL = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
CONTROL = (1234567890123456789).to_bytes(8, "little") + b"\0" * 8184


def pgdata_tar() -> bytes:
    return make_tar(
        member("PG_VERSION", b"15\n"),
        member("global", type=tarfile.DIRTYPE, mode=0o700),
        member("global/pg_control", CONTROL),
        member("base/1/1259", os.urandom(20000)),
        member("backup_label", LABEL),
        member("backup_manifest", b'{"WAL-Ranges": []}'),
    )


def feed(watcher: TarWatcher, data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    position = 0
    while position < len(data):
        step = rng.choice((1, 7, 511, 512, 513, 4096, 65536))
        watcher.feed(data[position : position + step])
        position += step


@pytest.mark.parametrize("seed", range(5))
def test_watcher_keeps_label_manifest_and_control_whatever_the_pieces(seed: int) -> None:
    data = pgdata_tar()
    watcher = TarWatcher()
    feed(watcher, data, seed)
    watcher.finish()
    assert watcher.members["backup_label"] == LABEL
    assert watcher.members["backup_manifest"] == b'{"WAL-Ranges": []}'
    assert watcher.members["global/pg_control"] == CONTROL
    assert "base/1/1259" not in watcher.members
    assert watcher.count == 6 and watcher.size == len(data)


def test_watcher_refuses_every_truncation_and_trailing_garbage() -> None:
    data = pgdata_tar()
    end = len(data.rstrip(b"\0"))  # where the last member's data ends
    for cut in (0, 100, 512, 1024, end - 1, end, end + 511, end + 1023):
        watcher = TarWatcher()
        watcher.feed(data[:cut])
        with pytest.raises(TarError, match="truncated"):
            watcher.finish()
    watcher = TarWatcher()
    watcher.feed(data[: end + 1024 + (512 - end % 512) % 512])  # exactly at the two zero blocks
    watcher.finish()
    with pytest.raises(TarError, match="after the end"):
        TarWatcher().feed(data + b"junk")
    broken = bytearray(data)
    broken[0] ^= 0xFF  # the first header's checksum no longer matches
    with pytest.raises(TarError, match="checksum"):
        TarWatcher().feed(bytes(broken))


def test_watcher_drops_an_oversized_manifest_but_still_checks_the_stream() -> None:
    big = b"x" * (MANIFEST_LIMIT + 1)
    watcher = TarWatcher()
    watcher.feed(make_tar(member("backup_label", LABEL), member("backup_manifest", big)))
    watcher.finish()
    assert "backup_manifest" not in watcher.members
    assert watcher.members["backup_label"] == LABEL


def test_unpack_writes_files_modes_times_and_repoints_tablespace_links(tmp_path: Path) -> None:
    data = make_tar(
        member(".", type=tarfile.DIRTYPE, mode=0o700),
        member("PG_VERSION", b"15\n", mode=0o640),
        member("pg_wal", type=tarfile.DIRTYPE, mode=0o700),
        member("base/1/1259", b"page" * 100),
        member("base/1/1259_link", type=tarfile.LNKTYPE, linkname="base/1/1259"),
        member("pg_tblspc/16385", type=tarfile.SYMTYPE, linkname="/original/server/path"),
        member("conf/current", type=tarfile.SYMTYPE, linkname="../PG_VERSION"),
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    count = unpack(
        io.BytesIO(data), str(dest), what="t", tablespace_links={"16385": "/new/place/16385"}
    )
    assert count == 7
    assert (dest / "PG_VERSION").read_bytes() == b"15\n"
    assert stat.S_IMODE((dest / "PG_VERSION").stat().st_mode) == 0o640
    assert (dest / "PG_VERSION").stat().st_mtime == 1_700_000_000
    assert (dest / "pg_wal").is_dir()
    assert os.path.samefile(dest / "base/1/1259", dest / "base/1/1259_link")
    assert os.readlink(dest / "pg_tblspc/16385") == "/new/place/16385"
    assert os.readlink(dest / "conf/current") == "../PG_VERSION"


@pytest.mark.parametrize(
    ("members", "says"),
    [
        ([member("/etc/passwd", b"x")], "unsafe member name"),
        ([member("a/../../x", b"x")], "unsafe member name"),
        ([member("../x", b"x")], "unsafe member name"),
        ([member("l", type=tarfile.SYMTYPE, linkname="/etc")], "points outside"),
        ([member("a/l", type=tarfile.SYMTYPE, linkname="../../x")], "points outside"),
        ([member("pg_tblspc/99", type=tarfile.SYMTYPE, linkname="/elsewhere")], "points outside"),
        ([member("dev", type=tarfile.CHRTYPE)], "device, FIFO"),
        ([member("fifo", type=tarfile.FIFOTYPE)], "device, FIFO"),
        ([member("h", type=tarfile.LNKTYPE, linkname="/etc/passwd")], "names no file"),
        ([member("x", b"1"), member("x", b"2")], "appears twice"),
        (
            [
                member("sub", type=tarfile.DIRTYPE),
                member("l", type=tarfile.SYMTYPE, linkname="sub"),
                member("l/x", b"through the link"),
            ],
            "through a symbolic link",
        ),
    ],
)
def test_unpack_refuses_unsafe_members_before_writing_them(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], says: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(TarError, match=says) as caught:
        unpack(io.BytesIO(make_tar(*members, fmt=tarfile.GNU_FORMAT)), str(dest), what="t.tar")
    assert caught.value.message.startswith("t.tar: ")
    assert not (tmp_path / "etc").exists() and not (tmp_path / "x").exists()
    assert not (dest / "dev").exists() and not (dest / "fifo").exists()


def test_unpack_refuses_a_truncated_or_corrupt_stream_in_one_line(tmp_path: Path) -> None:
    data = pgdata_tar()
    end = len(data.rstrip(b"\0"))
    for number, cut in enumerate((3000, end, end + 200)):
        dest = tmp_path / str(number)
        dest.mkdir()
        with pytest.raises(TarError, match=r"truncated|unexpected end of data") as caught:
            unpack(io.BytesIO(data[:cut]), str(dest), what="t.tar")
        assert "\n" not in caught.value.message and caught.value.message.startswith("t.tar: ")
    broken = bytearray(data)
    broken[1536 + 20] ^= 0xFF  # the name in the third header: its checksum fails
    with pytest.raises(TarError, match=r"t\.tar: ") as caught:
        unpack(io.BytesIO(bytes(broken)), str(tmp_path / "x"), what="t.tar")
    assert "\n" not in caught.value.message


def test_progress_line_and_quiet_off_a_terminal() -> None:
    progress = Progress("Backup", io.StringIO(), total=4 << 20)
    assert not progress.shown  # a StringIO is no terminal: nothing is ever printed
    progress.add(1 << 20)
    assert progress.line(1.0) == "Backup: 1.0 MiB of ~4.0 MiB (25%), 1.0 MiB/s, ETA 3 seconds"
    progress.set_total(None)
    assert progress.line(2.0) == "Backup: 1.0 MiB, 512.0 KiB/s"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    shown = Progress("Recover", screen, total=100)
    shown.add(50)
    shown.close()
    assert screen.getvalue().startswith("\rRecover: 50 B of ~100 B (50%)")
    assert screen.getvalue().endswith("\r")
    quiet = Terminal()
    muted = Progress("Recover", quiet, enabled=False)
    muted.add(50)
    muted.close()
    assert quiet.getvalue() == ""
