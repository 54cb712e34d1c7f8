"""cron's receiver decisions: back-off, and a changed configuration that ends the wait."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from fakewal import make_server
from walvault.receiver.state import ReceiverState, load_state, save_state
from walvault.supervise import cron


def _failing(server: Any, failures: int) -> None:
    now = time.time()
    save_state(
        server,
        ReceiverState(
            started_at=now - 5,
            ended_at=now - 1,
            exit_code=1,
            exit_reason="pg_receivewal terminated with error code: 1",
            last_lines=[
                "pg_receivewal: error: could not connect to server: Connection refused",
                "pg_receivewal: error: disconnected",
            ],
            consecutive_failures=failures - 1,
        ),
    )


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(cron, "spawn_walvault", lambda conf, *args: calls.append(args))
    monkeypatch.setattr(cron, "wait_for_lock_or_exit", lambda *args, **kwargs: True)
    return calls


def test_back_off_names_the_cause_and_a_changed_configuration_ends_it(
    tmp_path: Path, spawned: list[tuple[str, ...]]
) -> None:
    conf = tmp_path / "walvault.conf"
    conf.write_text("[walvault]\n")
    old = time.time() - 3600
    os.utime(conf, (old, old))
    server = make_server(tmp_path, config_file=str(conf))
    _failing(server, failures=3)
    said: list[str] = []
    cron.ensure_receiver(str(conf), server, said.append)
    assert spawned == []
    assert "failed 3 times in a row" in said[-1]
    assert "could not connect to server: Connection refused" in said[-1]  # not "disconnected"
    assert "next attempt after" in said[-1]
    conf.write_text("[walvault]\n# repointed at the promoted standby\n")
    cron.ensure_receiver(str(conf), server, said.append)
    assert spawned == [("receive-wal", "pg")]
    assert any("changed since receive-wal last failed" in line for line in said)
    assert load_state(server).restarts == 1


def test_configuration_changed_since(tmp_path: Path) -> None:
    conf = tmp_path / "walvault.conf"
    conf.write_text("")
    mtime = conf.stat().st_mtime
    server = make_server(tmp_path, config_file=str(conf))
    assert cron.configuration_changed_since(server, mtime - 1)
    assert not cron.configuration_changed_since(server, mtime)
    assert not cron.configuration_changed_since(server, None)  # never ran: nothing to compare
    assert not cron.configuration_changed_since(make_server(tmp_path), mtime - 1)
    gone = make_server(tmp_path, config_file=str(tmp_path / "missing.conf"))
    assert not cron.configuration_changed_since(gone, 0.0)
