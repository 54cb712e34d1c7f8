"""Fuzzing put-wal's tar reader: random and mutated streams end in a one-line WalvaultError or
success, never another exception, never a file outside incoming/ (and errors/ for refused
content), with disk and memory bounded by what was sent."""

from __future__ import annotations

import io
import re
import tarfile
import tempfile
import tracemalloc
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tarstream import tar_stream
from walfiles import backup_history, history_text
from walsupply import make_server, segment_name, synthetic_segment
from walvault.archive.putwal import put_wal
from walvault.compression import compress_bytes
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.wal.names import is_any_wal_name

NAME = segment_name(1, 6)
LABEL_NAME, LABEL = backup_history(0x6000028, 0x6000100)
HISTORY = history_text((1, 0x3000158, "no recovery target specified")).encode()
SMALL = {
    "00000002.history": HISTORY,
    LABEL_NAME: LABEL.encode(),
    NAME + ".partial": b"",
    NAME: compress_bytes("zstd", synthetic_segment(NAME)),
}
ERRORS_NAME = re.compile(r"(?P<wal>.+)\.\d{8}T\d{6}Z(\.\d+)?\.(invalid|foreign|duplicate)")
#: memory put-wal may use beyond what it was sent: buffers, one decoded piece, tarfile's state
MEMORY_ALLOWANCE = 8 << 20
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HOSTILE_NAMES = [
    "../" + NAME,
    "/" + NAME,
    "./" + NAME,
    NAME + "\n",
    "a\0" + NAME,
    "x/../" + NAME,
    "SHA256SUMS",
    "MD5SUMS",
    "pg_hba.conf",
    "." + NAME,
    "\x1b[31m" + NAME,
    "../" + NAME + "\nERROR: forged",
    NAME + "/\r",
]
NAME_CHARS = "/.\n\r\0\x1b 0123456789ABCDEFx*"
TYPES = [
    tarfile.REGTYPE,
    tarfile.AREGTYPE,
    tarfile.LNKTYPE,
    tarfile.SYMTYPE,
    tarfile.CHRTYPE,
    tarfile.DIRTYPE,
    tarfile.FIFOTYPE,
    tarfile.CONTTYPE,
    b"Z",
]


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """A valid stream, or one built of odd members, then maybe mutated."""
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(sorted(SMALL)), min_size=1, max_size=3, unique=True))
        sums = draw(st.sampled_from(["SHA256SUMS", "MD5SUMS", None]))
        data = tar_stream({n: SMALL[n] for n in names}, sums=sums, sums_first=draw(st.booleans()))
    else:
        out = io.BytesIO()
        fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
        with tarfile.open(fileobj=out, mode="w|", format=fmt) as tar:
            for _ in range(draw(st.integers(min_value=1, max_value=4))):
                name = draw(
                    st.sampled_from(HOSTILE_NAMES)
                    | st.sampled_from(sorted(SMALL))
                    | st.text(NAME_CHARS, max_size=40)
                )
                info = tarfile.TarInfo(name)
                info.type = draw(st.just(tarfile.REGTYPE) | st.sampled_from(TYPES))
                body = SMALL.get(name, draw(st.binary(max_size=2000)))
                if info.isreg():
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
                else:
                    info.linkname = draw(st.sampled_from(["/etc/passwd", "../x", NAME]))
                    tar.addfile(info)
        data = out.getvalue()
    return _mutate(draw, bytearray(data))


def _mutate(draw: st.DrawFn, raw: bytearray) -> bytes:
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "size", "type", "zero"]))
        where = draw(st.integers(min_value=0, max_value=max(len(raw) - 1, 0)))
        block = where - where % 512
        if action == "flip" and raw:
            raw[where] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif action == "cut":
            del raw[where:]
        elif action == "insert":
            raw[where:where] = draw(st.binary(min_size=1, max_size=600))
        elif action == "size" and block + 136 <= len(raw):  # a header's size field, then
            size = draw(st.sampled_from([1 << 33, 1 << 40, 10 << 30, 1 << 20, 0]))
            if draw(st.booleans()):  # GNU base-256
                field = b"\x80" + size.to_bytes(11, "big")
            else:
                field = f"{min(size, 0o77777777777):011o}".encode() + b"\0"
            raw[block + 124 : block + 136] = field
            _fix_checksum(raw, block)
        elif action == "type" and block + 157 <= len(raw):
            raw[block + 156] = draw(st.sampled_from(b"0125LKxgSVXZ\0"))
            _fix_checksum(raw, block)
        elif action == "zero" and raw:
            raw[block : block + 512] = bytes(min(512, len(raw) - block))
    return bytes(raw)


def _fix_checksum(raw: bytearray, block: int) -> None:
    header = raw[block : block + 512]
    if len(header) < 512:
        return
    header[148:156] = b" " * 8
    raw[block + 148 : block + 156] = f"{sum(header):06o}\0 ".encode()


def _check_tree(root: Path, server: ServerConfig, sent: int) -> None:
    """Only WAL names in incoming/, errors/ names of WAL files, nothing bigger than sent."""
    total = 0
    incoming, errors = Path(server.incoming_wals_directory), Path(server.errors_directory)
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        total += path.stat().st_size
        if path.parent == incoming:
            assert is_any_wal_name(path.name), path  # no temporary file left behind
        else:
            assert path.parent == errors, path
            match = ERRORS_NAME.fullmatch(path.name)
            assert match and is_any_wal_name(match["wal"]), path
    assert total <= sent


def _run(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = make_server(root)
        tracemalloc.start()
        try:
            put_wal(server, io.BytesIO(data), warn=lambda _: None)
        except WalvaultError as exc:
            assert exc.message and "\n" not in exc.message and "Traceback" not in exc.message
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak <= MEMORY_ALLOWANCE + 4 * len(data), peak
        _check_tree(root, server, len(data))


@FUZZ
@given(streams())
def test_mutated_streams(data: bytes) -> None:
    _run(data)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _run(data)


@FUZZ
@given(st.binary(min_size=1, max_size=512), st.integers(min_value=0, max_value=3))
def test_random_header_blocks(block: bytes, where: int) -> None:
    """Random bytes where a header is expected, with a valid checksum so tarfile reads them."""
    valid = bytearray(tar_stream({"00000002.history": HISTORY}))
    raw = bytearray(block.ljust(512, b"\0"))
    _fix_checksum(raw, 0)
    offset = min(where, len(valid) // 512 - 1) * 512
    valid[offset : offset + 512] = raw
    _run(bytes(valid))
