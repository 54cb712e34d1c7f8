"""``walvault stream-wal``: many WAL files over one process, as the restore agent asks over ssh.

Real streamed segments, archived with zstd: each comes back byte for byte after the greeting;
a missing one is NOTFOUND (the only answer that may end a recovery); a malformed name and a
corrupt file are ERROR -- the corrupt one after its DATA began, so the client discards what
it wrote; a request that breaks the protocol ends the session.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from walvault.clients.streamwire import GREETING, read_chunks, read_line
from wvharness import (
    WALVAULT,
    make_segments,
    segment_names,
    start_receiver,
    streaming_server,
    wait_for,
)


def _session(wv: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*WALVAULT, "-c", str(wv.conf), "stream-wal", "pg"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == GREETING
    return proc


def _ask(proc: subprocess.Popen[bytes], name: str, partial: int = 0) -> tuple[bytes, bytes]:
    """(the answer's first line, the bytes of a DATA answer + its tail line)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"GET {name} {partial}\n".encode())
    proc.stdin.flush()
    first = read_line(proc.stdout)
    if first != b"DATA":
        return first, b""
    got = bytearray()
    read_chunks(proc.stdout, got.extend)
    return read_line(proc.stdout), bytes(got)


def test_stream_wal_serves_many_files_and_says_what_is_wrong(
    pg: Any, walvault_factory: Any
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, compression="zstd")})
    receiver = start_receiver(wv, pg)
    names = make_segments(pg, 3)
    streaming = Path(wv.server().streaming_wals_directory)
    wait_for(lambda: set(names) <= set(segment_names(streaming)), what="segments streamed")
    originals = {n: (streaming / n).read_bytes() for n in names}
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    receiver.wait(timeout=30)
    assert wv.run("archive-wal", "pg").returncode == 0
    wals = Path(wv.server().wals_directory)

    proc = _session(wv)
    for name, data in originals.items():
        tail, got = _ask(proc, name)
        assert tail == b"OK" and got == data, name
    missing = f"{names[-1][:16]}000000EE"
    answer, _ = _ask(proc, missing)
    assert answer.startswith(b"NOTFOUND ") and missing.encode() in answer, answer
    answer, _ = _ask(proc, "../../etc/passwd")
    assert answer.startswith(b"ERROR "), answer
    # a flipped bit in the archived (zstd) file: DATA began, the tail says ERROR
    victim = wals / names[0][:16] / names[0]
    stored = bytearray(victim.read_bytes())
    stored[len(stored) // 2] ^= 0x10
    victim.write_bytes(bytes(stored))
    tail, _ = _ask(proc, names[0])  # refused at open, or after DATA began: ERROR either way
    assert tail.startswith(b"ERROR "), tail
    tail, got = _ask(proc, names[1])  # the session goes on
    assert tail == b"OK" and got == originals[names[1]]
    assert proc.stdin is not None
    proc.stdin.write(b"PUT something\n")
    proc.stdin.flush()
    assert proc.wait(timeout=30) == 2
    assert proc.stdout is not None and proc.stdout.read().startswith(b"ERROR bad request")
