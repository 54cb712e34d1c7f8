"""put-wal's input: the idle timeout and the byte budget of BoundedInput."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from walvault.archive.instream import BoundedInput, InputRefused


def test_budget() -> None:
    source = BoundedInput(io.BytesIO(b"x" * 100), timeout=None, budget=100)
    assert source.read(60) == b"x" * 60 and source.read(60) == b"x" * 40
    assert source.read(10) == b""
    over = BoundedInput(io.BytesIO(b"x" * 101), timeout=None, budget=100)
    assert over.read(100) == b"x" * 100
    with pytest.raises(InputRefused, match=r"^the stream is larger than 100 bytes$"):
        over.read(100)


def test_reads_return_what_is_there_and_time_out_when_nothing_comes() -> None:
    read_end, write_end = os.pipe()
    with open(read_end, "rb", buffering=0) as stream:
        source = BoundedInput(stream, timeout=0.5, budget=1 << 20)
        os.write(write_end, b"abc")
        assert source.read(65536) == b"abc"  # no waiting for the rest of the 64 KiB
        started = time.monotonic()
        with pytest.raises(InputRefused, match=r"no data received for 0\.5 seconds"):
            source.read(10)
        assert 0.5 <= time.monotonic() - started < 5
        os.close(write_end)
        assert source.read(10) == b""  # end of stream


def test_each_arrival_restarts_the_wait() -> None:
    read_end, write_end = os.pipe()

    def drip() -> None:
        for _ in range(4):
            time.sleep(0.3)
            os.write(write_end, b"x")
        os.close(write_end)

    threading.Thread(target=drip).start()
    with open(read_end, "rb", buffering=0) as stream:
        source = BoundedInput(stream, timeout=1, budget=100)
        got = b""
        while chunk := source.read(10):
            got += chunk
    assert got == b"xxxx"
