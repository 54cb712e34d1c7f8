"""The receiver's evidence for ``status`` and ``check``: PID, start, last lines, exit reason.

Kept in ``<backup_directory>/walvault-receiver.json`` and replaced atomically; cron adds its
restart counters to the same record.

Reading validates the types of the known fields (unknown ones are ignored).  ``check`` and
``status`` read strictly and report a malformed or unreadable file; receive-wal and cron read
leniently: they log the problem and start from an empty record, which their next save
replaces (the record is evidence and counters, nothing the archive depends on).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from walvault.config import ServerConfig
from walvault.errors import StateFileError, describe_os_error
from walvault.fs import durable_replace_bytes

STATE_FILE = "walvault-receiver.json"
KEEP_LINES = 20
log = logging.getLogger("walvault.receiver")


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


_NUMBER = (float, int)
#: The JSON types each known field may hold (None is allowed where the default is None).
_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "child_pid": (int,),
    "started_at": _NUMBER,
    "ended_at": _NUMBER,
    "program": (str,),
    "version": (str,),
    "synchronous": (bool,),
    "application_name": (str,),
    "exit_code": (int,),
    "exit_reason": (str,),
    "last_lines": (list,),
    "restarts": (int,),
    "consecutive_failures": (int,),
    "next_start_after": _NUMBER,
    "counted_start": _NUMBER,
}


_WORDS = {float: "a number", int: "an integer", str: "text", bool: "true or false", list: "a list"}


def _validated(data: object) -> dict[str, Any]:
    """The known fields of a parsed record, type-checked (ValueError names the first bad one)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    fields = ReceiverState.__dataclass_fields__
    known = {k: v for k, v in data.items() if k in fields}
    for key, value in known.items():
        types = _TYPES.get(key)
        if types is None or (value is None and fields[key].default is None):
            continue
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ValueError(f"{key} is not {_WORDS[types[0]]}")
    if not all(isinstance(line, str) for line in known.get("last_lines") or []):
        raise ValueError("last_lines is not a list of text lines")
    return known


def load_state(server: ServerConfig, *, strict: bool = False) -> ReceiverState:
    """The stored state, or an empty one when there is none.

    A malformed or unreadable file raises :class:`StateFileError` with ``strict``; otherwise
    it is logged and an empty state is returned (see the module docstring).
    """
    path = state_path(server)
    try:
        with open(path, encoding="utf-8") as handle:
            known = _validated(json.load(handle))
    except FileNotFoundError:
        return ReceiverState()
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        what = f"unreadable: {describe_os_error(exc)}" if isinstance(exc, OSError) else None
        problem = StateFileError(path, what or f"malformed: {exc}")
        if strict:
            raise problem from None
        log.warning("%s; starting from an empty receiver record", problem.message)
        return ReceiverState()
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
        """Save the state with the current lines.

        A save that fails (a full disk) is logged and retried at the next save: the lines
        are evidence, and failing here would leave pg_receivewal running without its parent.
        """
        self.state.last_lines = list(self.lines)
        self.saved_at = time.monotonic()
        try:
            save_state(self.server, self.state)
        except OSError as exc:
            log.warning("cannot save the receiver record: %s", describe_os_error(exc))
