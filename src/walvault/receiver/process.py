"""Running pg_receivewal in the foreground: its lines to the log, signals forwarded, exit mapped."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from types import FrameType

from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.receiver.command import ReceiverCommand
from walvault.receiver.state import (
    KEEP_LINES,
    LineKeeper,
    ReceiverState,
    decisive_line,
)
from walvault.subprocesses import start_client

log = logging.getLogger("walvault.receiver")


class ReceiverFailed(WalvaultError):
    """pg_receivewal ran and failed (its exit is already recorded in the state file)."""


def run_receiver(
    server: ServerConfig,
    command: ReceiverCommand,
    state: ReceiverState,
    echo: Callable[[str], None],
) -> int:
    """Run pg_receivewal until it ends; return 0 for a requested stop or a clean end.

    Raises :class:`WalvaultError` with the reason when pg_receivewal fails or is killed.
    """
    log.info("%s: running %s", server.name, command.shown())
    proc = start_client(command)
    stop_requested = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    state.child_pid = proc.pid
    keeper = LineKeeper(server, state)
    keeper.flush()
    recent: deque[str] = deque(maxlen=KEEP_LINES)  # this run's lines only, for the cause
    cause: str | None = None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            log.info("%s: %s", server.name, line)
            echo(f"{server.name}: {line}")
            keeper.add(line)
            recent.append(line)
            cause = decisive_line(recent) or cause
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state.ended_at = time.time()
    state.exit_code = code
    state.error_line = cause if code != 0 and not stop_requested else None
    if stop_requested:
        state.exit_reason = "stopped on request (SIGINT/SIGTERM)"
    elif code < 0:
        state.exit_reason = f"pg_receivewal terminated by signal: {-code}"
    elif code > 0:
        state.exit_reason = f"pg_receivewal terminated with error code: {code}"
    else:
        state.exit_reason = "pg_receivewal ended (the server closed the stream)"
    keeper.flush()  # saves the state (a full disk is logged, not raised)
    if stop_requested:
        echo("SIGINT received. Terminate gracefully.")
        return 0
    if code != 0:
        last = next((line for line in reversed(recent) if line.strip()), "")
        detail = f" ({cause})" if cause else f" (last message: {last})" if last else ""
        raise ReceiverFailed(f"{state.exit_reason}{detail}")
    return 0
