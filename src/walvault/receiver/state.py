"""The receiver's evidence for ``status`` and ``check``: PID, start, last lines, exit reason.

Kept in ``<backup_directory>/walvault-receiver.json`` and replaced atomically; cron adds its
restart counters to the same record.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from walvault.config import ServerConfig
from walvault.fs import durable_replace_bytes

STATE_FILE = "walvault-receiver.json"
KEEP_LINES = 20


@dataclass
class ReceiverState:
    """What the last (or current) receive-wal run did."""

    pid: int | None = None
    child_pid: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    program: str | None = None
    version: str | None = None
    synchronous: bool = False
    application_name: str | None = None
    exit_code: int | None = None
    exit_reason: str | None = None
    last_lines: list[str] = field(default_factory=list)
    restarts: int = 0
    consecutive_failures: int = 0
    next_start_after: float = 0.0
    counted_start: float | None = None


def state_path(server: ServerConfig) -> str:
    """Where the receiver state of ``server`` lives."""
    return os.path.join(server.backup_directory, STATE_FILE)


def load_state(server: ServerConfig) -> ReceiverState:
    """The stored state, or an empty one."""
    try:
        with open(state_path(server), encoding="utf-8") as handle:
            data: dict[str, Any] = json.load(handle)
    except (FileNotFoundError, ValueError):
        return ReceiverState()
    known = {k: v for k, v in data.items() if k in ReceiverState.__dataclass_fields__}
    return ReceiverState(**known)


def save_state(server: ServerConfig, state: ReceiverState) -> None:
    """Replace the stored state atomically."""
    os.makedirs(server.backup_directory, exist_ok=True)
    payload = json.dumps(asdict(state), indent=2, sort_keys=True) + "\n"
    durable_replace_bytes(state_path(server), payload.encode())


class LineKeeper:
    """Keeps the last lines of pg_receivewal and saves them now and then (not per line)."""

    def __init__(self, server: ServerConfig, state: ReceiverState, every: float = 2.0) -> None:
        self.server = server
        self.state = state
        self.lines: deque[str] = deque(state.last_lines, maxlen=KEEP_LINES)
        self.every = every
        self.saved_at = 0.0

    def add(self, line: str) -> None:
        """Remember a line; save the state if the last save is old enough."""
        self.lines.append(line)
        now = time.monotonic()
        if now - self.saved_at >= self.every:
            self.flush()

    def flush(self) -> None:
        """Save the state with the current lines."""
        self.state.last_lines = list(self.lines)
        save_state(self.server, self.state)
        self.saved_at = time.monotonic()
