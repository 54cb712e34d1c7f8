"""Forked workers: reports, exit codes, and signals that reach the child only."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import threading
import time

import pytest

from walvault.supervise import children
from walvault.supervise.children import Child, fork_child


@pytest.fixture(autouse=True)
def single_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service forks only while it has one thread; the test process may have more
    (servers other tests left running), which these children never touch."""
    monkeypatch.setattr(children.threading, "active_count", lambda: 1)


def wait_exit(child: Child, timeout: float = 10) -> int:
    ready, _, _ = select.select([child.pidfd], [], [], timeout)
    assert ready, f"{child.name} did not end"
    return child.reap()


def test_reports_and_exit_code() -> None:
    def target(emit: object) -> int:
        assert callable(emit)
        emit({"n": 1})
        emit({"text": "two\nlines"})
        return 3

    child = fork_child("reporter", target)
    assert wait_exit(child) == 3
    lines, eof = child.read_lines()
    assert lines == [{"n": 1}, {"text": "two\nlines"}] and eof
    child.close()


def test_an_exception_is_exit_70_and_a_signal_is_negative() -> None:
    def boom(_emit: object) -> int:
        raise RuntimeError("boom")

    child = fork_child("boom", boom)
    assert wait_exit(child) == 70
    child.close()

    def sleeper(_emit: object) -> int:
        time.sleep(30)
        return 0

    child = fork_child("sleeper", sleeper)
    child.signal(signal.SIGKILL)
    assert wait_exit(child) == -signal.SIGKILL
    child.signal(signal.SIGTERM)  # already reaped: nothing happens
    child.close()


def test_a_signal_sent_to_a_child_never_reaches_the_parents_loop() -> None:
    """The child shares asyncio's wake-up socket; its own SIGTERM must not be seen by the
    parent's handler (the service would stop when one of its workers is told to)."""
    seen: list[int] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: seen.append(signal.SIGTERM))

        def child_body(_emit: object) -> int:
            os.kill(os.getpid(), signal.SIGTERM)  # default action: the child dies
            time.sleep(5)
            return 0

        child = fork_child("self-terminating", child_body)
        code = wait_exit(child)
        child.close()
        await asyncio.sleep(0.3)  # time for a stray wake-up byte to be read
        loop.remove_signal_handler(signal.SIGTERM)
        return code

    assert asyncio.run(main()) == -signal.SIGTERM
    assert seen == []


def test_the_child_has_its_own_process_group_and_dies_with_the_parent() -> None:
    def report(emit: object) -> int:
        assert callable(emit)
        emit({"pgid": os.getpgid(0), "pid": os.getpid()})
        return 0

    child = fork_child("group", report)
    assert wait_exit(child) == 0
    lines, _ = child.read_lines()
    assert lines[0]["pgid"] == lines[0]["pid"] == child.pid
    child.close()


def test_no_fork_while_the_service_has_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real thread count
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        with pytest.raises(RuntimeError, match="several threads"):
            fork_child("unsafe", lambda _emit: 0)
    finally:
        stop.set()
        helper.join()
