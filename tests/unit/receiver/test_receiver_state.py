"""The receiver's evidence: pg_receivewal's decisive error line, advice, robust loading."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from fakewal import make_server
from walvault.receiver import state as state_module
from walvault.receiver.state import (
    ReceiverState,
    advice,
    decisive_line,
    load_state,
    save_state,
    state_path,
)

# real pg_receivewal 15 output, as recorded in the integration tests
FORKED = [
    "pg_receivewal: starting log streaming at 0/D00000 (timeline 1)",
    'pg_receivewal: error: could not send replication command "START_REPLICATION": ERROR:  '
    "requested starting point 0/D00000 on timeline 1 is not in this server's history",
    "DETAIL:  This server's history forked from timeline 1 at 0/A00000.",
    "pg_receivewal: error: disconnected",
]
CRASHED = [
    "pg_receivewal: finished segment at 0/D00000 (timeline 1)",
    "pg_receivewal: error: could not receive data from WAL stream: server closed the "
    "connection unexpectedly",
    "\tThis probably means the server terminated abnormally",
    "\tbefore or while processing the request.",
    "pg_receivewal: error: disconnected",
]
REMOVED = [
    "pg_receivewal: starting log streaming at 0/500000 (timeline 1)",
    "pg_receivewal: error: unexpected termination of replication stream: ERROR:  requested "
    "WAL segment 000000010000000000000005 has already been removed",
    "pg_receivewal: error: disconnected",
    "pg_receivewal: disconnected; waiting 5 seconds to try again",
]


def test_decisive_line_skips_the_incidental_last_lines() -> None:
    forked = decisive_line(FORKED)
    assert forked is not None
    assert "is not in this server's history" in forked
    assert forked.endswith("DETAIL: This server's history forked from timeline 1 at 0/A00000.")
    crashed = decisive_line(CRASHED)
    assert crashed is not None and crashed.startswith("pg_receivewal: error: could not receive")
    assert crashed.endswith("before or while processing the request.")
    removed = decisive_line(REMOVED)
    assert removed is not None and "has already been removed" in removed
    assert decisive_line(["pg_receivewal: finished segment at 0/800000 (timeline 1)"]) is None
    assert decisive_line(["pg_receivewal: error: disconnected"]) is None
    long = decisive_line(["pg_receivewal: error: " + "x" * 2000])
    assert long is not None and len(long) == 500 and long.endswith("...")


def test_advice_names_the_remedy() -> None:
    assert "receive-wal --reset pg" in (advice(decisive_line(REMOVED), "pg") or "")
    assert "follows the fork" in (advice(decisive_line(FORKED), "pg") or "")
    assert advice("could not write: No space left on device", "pg") is not None
    assert advice(None, "pg") is None and advice("something else", "pg") is None


def test_cause_comes_from_older_records_too(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    save_state(server, ReceiverState(exit_code=1, last_lines=REMOVED))
    loaded = load_state(server)
    assert loaded.error_line is None and loaded.cause is not None
    assert "has already been removed" in loaded.cause


def test_load_state_drops_what_it_cannot_trust(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    path = Path(state_path(server))
    path.write_text(json.dumps([1, 2]))
    assert load_state(server) == ReceiverState()
    path.write_text(
        json.dumps(
            {"pid": "12", "restarts": None, "next_start_after": None, "last_lines": [1], "x": 1}
        )
    )
    assert load_state(server) == ReceiverState()
    path.write_text(json.dumps({"pid": 12, "exit_reason": "r", "synchronous": True}))
    assert load_state(server) == ReceiverState(pid=12, exit_reason="r", synchronous=True)
    assert set(state_module._TYPES) == set(ReceiverState.__dataclass_fields__)


def test_a_full_disk_rewrites_the_state_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(tmp_path)
    save_state(server, ReceiverState(exit_reason="x" * 1000))

    def no_space(path: str, data: bytes, **_: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(state_module, "durable_replace_bytes", no_space)
    cause = "pg_receivewal: error: could not write: No space left on device"
    save_state(server, ReceiverState(exit_code=1, error_line=cause))
    assert load_state(server).cause == cause
    with pytest.raises(OSError):  # more than the file's blocks: cannot be saved at all
        save_state(server, ReceiverState(last_lines=["y" * 100_000]))


def test_a_start_up_failure_replaces_the_cause_of_an_older_run(tmp_path: Path) -> None:
    from walvault.receiver.service import _record_failure

    server = make_server(tmp_path)
    save_state(server, ReceiverState(exit_code=1, error_line=decisive_line(REMOVED)))
    _record_failure(server, 'password authentication failed for user "streaming_walvault"')
    loaded = load_state(server)
    assert loaded.cause == loaded.exit_reason
    assert "password authentication failed" in (loaded.cause or "")
