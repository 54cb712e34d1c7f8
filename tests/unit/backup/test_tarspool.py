"""The spool of a backup with tablespaces: growing tars read and freed, pg_basebackup paced.

A real child process stands in for pg_basebackup (stopped and continued with real signals);
the tars are real files whose blocks are really freed (fallocate PUNCH_HOLE).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from walvault.backup.tarspool import GrowingTar, _Spool

MiB = 1 << 20


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def state(pid: int, expected: str) -> str:
    """The process state (``/proc/PID/stat``) once it is ``expected`` (signals take a moment),
    or whatever it is after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        now = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if now in expected or time.monotonic() > deadline:
            return now
        time.sleep(0.01)


def test_a_growing_tar_is_read_in_order_and_freed_behind_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "16385.tar"
    chunks = [bytes([n]) * MiB for n in range(1, 6)]
    path.write_bytes(chunks[0])
    done = threading.Event()

    def writer() -> None:
        with open(path, "ab") as handle:
            for chunk in chunks[1:]:
                time.sleep(0.05)
                handle.write(chunk)
                handle.flush()
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reader = GrowingTar(str(path), lambda _path: done.is_set())
    got = bytearray()
    while piece := reader.read(300_000):
        got += piece
    reader.close()
    thread.join()
    assert bytes(got) == b"".join(chunks)
    assert os.path.getsize(path) == 5 * MiB  # the size stays...
    assert allocated(path) < MiB  # ...but what was read is no longer on disk


def test_the_spool_stops_the_writer_above_its_limit_and_continues_it_below_half(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        spool = _Spool(str(tmp_path), proc, limit=2 * MiB)
        big = tmp_path / "base.tar"
        big.write_bytes(os.urandom(3 * MiB))
        spool.regulate()
        assert spool.stopped and state(proc.pid, "T") == "T"
        spool.regulate()  # still above: stays stopped
        assert state(proc.pid, "T") == "T"
        big.write_bytes(os.urandom(MiB + MiB // 2))  # under the limit, not under half
        spool.regulate()
        assert state(proc.pid, "T") == "T"
        big.write_bytes(b"x")
        spool.regulate()
        assert not spool.stopped and state(proc.pid, "SR") in "SR"
        assert spool.new_tars() == ["base.tar"] and spool.new_tars() == []
        (tmp_path / "16385.tar").write_bytes(b"")
        assert spool.moved_on(str(big))  # a tar noticed after it: pg_basebackup moved on
        big.write_bytes(os.urandom(3 * MiB))
        spool.regulate()
        spool.release()  # whatever happens next, pg_basebackup is never left stopped
        assert not spool.stopped and state(proc.pid, "SR") in "SR"
    finally:
        proc.kill()
        proc.wait()
