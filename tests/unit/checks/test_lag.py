"""The receiver's lag: written and flushed are both shown, with what the sync state means."""

from __future__ import annotations

from walvault.checks.lag import StreamingLag


def test_an_async_receiver_with_unflushed_wal_says_so() -> None:
    lag = StreamingLag(
        current=0x1500000, sent=0x1500000, written=0x1500000, flushed=0x1000000, sync_state="async"
    )
    assert lag.written_behind == 0 and lag.flushed_behind == 5 << 20
    text = lag.describe()
    assert text.startswith("0 B behind written, 5.0 MiB behind flushed: server at 0/1500000")
    assert "flushed 0/1000000" in text and "lost if walvault's host crashes" in text
    assert lag.summary() == "written 0 B behind, flushed 5.0 MiB behind (async)"


def test_a_position_ahead_of_the_server_is_not_a_negative_lag() -> None:
    lag = StreamingLag(current=100, sent=200, written=200, flushed=200, sync_state="sync")
    assert lag.written_behind == 0 and lag.flushed_behind == 0
    assert "every commit waits for walvault's flush" in lag.describe()
