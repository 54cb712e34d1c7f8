"""Nothing wrong is served: real archived WAL, tampered, never reaches PostgreSQL as WAL.

For every codec walvault writes (and none), a segment streamed from a real PostgreSQL 15 and
archived by archive-wal gets a single bit flipped at 20 spread offsets, one at a time:
get-wal must refuse each (exit 200, which makes PostgreSQL stop) and walvault-wal-restore
must exit 200 leaving no WAL_DEST.  Before this, zstd and lz4 archive files had no content
checksum and 13 of 20 (zstd) and 11 of 20 (lz4) flips were served with exit 0.  The
uncompressed archive has no checksum of its own: the digest recorded at archive time
(xxh3-128 of the plain segment) is what refuses it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wvharness import WALVAULT, make_segments, start_receiver, streaming_server, wait_for

BIN = Path(sys.executable).parent
CODECS = [None, "gzip", "bzip2", "xz", "zstd", "lz4"]
FLIPS = 20


def _archived_segment(pg: Any, walvault_factory: Any, codec: str | None) -> tuple[Any, Path]:
    wv = walvault_factory({"pg": streaming_server(pg, compression=codec)})
    receiver = start_receiver(wv, pg)
    closed = make_segments(pg, 3)
    wals = Path(wv.server().wals_directory)
    target = wals / closed[1][:16] / closed[1]

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return target.exists()

    wait_for(archived, what=f"{closed[1]} archived")
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    receiver.wait(timeout=30)
    return wv, target


def _get_wal(wv: Any, name: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*WALVAULT, "-c", str(wv.conf), "get-wal", "pg", name], capture_output=True, timeout=60
    )


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c or "none")
def test_single_bit_flips_are_never_served(
    pg: Any, walvault_factory: Any, tmp_path: Path, codec: str | None
) -> None:
    wv, target = _archived_segment(pg, walvault_factory, codec)
    name = target.name
    original = target.read_bytes()
    good = _get_wal(wv, name)
    assert good.returncode == 0, good.stderr
    plain = good.stdout
    step = max(1, len(original) // FLIPS)
    served_wrong = []
    for index in range(FLIPS):
        offset = min(index * step + 7, len(original) - 1)
        broken = bytearray(original)
        broken[offset] ^= 1 << (index % 8)
        target.write_bytes(bytes(broken))
        result = _get_wal(wv, name)
        if result.returncode == 0 and result.stdout != plain:
            served_wrong.append(offset)
        elif result.returncode == 0:
            continue  # a bit the decoder ignores (a gzip header field): the WAL is intact
        else:
            assert result.returncode == 200, result.stderr
            dest = tmp_path / "RECOVERYXLOG"
            restore = subprocess.run(
                [
                    str(BIN / "walvault-wal-restore"),
                    "-c",
                    str(wv.conf),
                    "local",
                    "pg",
                    name,
                    str(dest),
                ],
                capture_output=True,
                text=True,
                cwd=tmp_path,
            )
            assert restore.returncode == 200, restore.stderr
            assert not dest.exists()
    target.write_bytes(original)
    assert served_wrong == [], f"{codec}: wrong WAL served for flips at {served_wrong}"
    assert _get_wal(wv, name).stdout == plain
