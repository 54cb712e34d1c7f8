"""The receiver's evidence for ``status`` and ``check``: PID, start, last lines, exit reason,
and the *cause*: pg_receivewal's decisive error line.

Kept in ``<backup_directory>/walvault-receiver.json`` and replaced atomically; cron adds its
restart counters to the same record.

Reading validates the types of the known fields (unknown ones are ignored).  ``check`` and
``status`` read strictly and report a malformed or unreadable file; receive-wal and cron read
leniently: they log the problem and start from an empty record, which their next save
replaces (the record is evidence and counters, nothing the archive depends on).

pg_receivewal ends a failed run with incidental lines ("error: disconnected", libpq's
"This probably means..."); the line that says why is its last ``error:``/``fatal:`` line
that is not one of those (with the server's ``DETAIL:`` and libpq's continuation lines
appended): :func:`decisive_line`. When the disk is full, the state cannot be replaced by a
new file; it is then rewritten in place if it fits in the blocks the file already has, so
``check`` still names the real cause.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Iterable
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
    error_line: str | None = None

    @property
    def cause(self) -> str | None:
        """pg_receivewal's decisive error line (from older records: found in the last lines)."""
        return self.error_line or decisive_line(self.last_lines)


_ERROR_RE = re.compile(r"^(?:\S+: )?(?:error|fatal|FATAL|ERROR|PANIC): *(?P<message>.*)$")
_INCIDENTAL = ("disconnected",)
_FOLLOWS_RE = re.compile(r"^(?:DETAIL|HINT): |^\t")
MAX_CAUSE = 500


def _incidental(message: str) -> bool:
    return not message.strip() or message.startswith(_INCIDENTAL)


def decisive_line(lines: Iterable[str]) -> str | None:
    """The line of a pg_receivewal run that says why it failed, or None.

    The last error line that is not incidental, with the lines that continue it (the
    server's ``DETAIL:``/``HINT:``, libpq's tab-indented explanation) joined to it.
    """
    found: list[str] | None = None
    following = False
    for raw in lines:
        line = raw.rstrip()
        match = _ERROR_RE.match(line)
        if match is not None:
            following = not _incidental(match.group("message"))
            if following:
                found = [line]
            continue
        if following and found is not None and _FOLLOWS_RE.match(line):
            found.append(" ".join(line.split()))
            continue
        following = False
    if found is None:
        return None
    text = " ".join(found)
    return text if len(text) <= MAX_CAUSE else text[: MAX_CAUSE - 3] + "..."


_ADVICE = (
    (
        "has already been removed",
        "the server no longer has the WAL to resume from: run 'walvault receive-wal --reset "
        "{server}' (it records the gap)",
    ),
    (
        "is ahead of the WAL flush position",
        "walvault's position is past the server's: run 'walvault receive-wal --reset {server}'",
    ),
    (
        "is not in this server's history",
        "the server's history forked: receive-wal follows the fork at its next start",
    ),
    ("No space left on device", "free space for walvault (cron restarts receive-wal)"),
)


def advice(cause: str | None, server_name: str) -> str | None:
    """What to do about a receiver failure, when its cause is a known one."""
    for needle, text in _ADVICE:
        if cause and needle in cause:
            return text.format(server=server_name)
    return None


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
    "error_line": (str,),
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
    """Replace the stored state atomically (in place, when the disk is full and it fits)."""
    os.makedirs(server.backup_directory, exist_ok=True)
    payload = (json.dumps(asdict(state), indent=2, sort_keys=True) + "\n").encode()
    try:
        durable_replace_bytes(state_path(server), payload)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not _rewrite_in_place(
            state_path(server), payload
        ):
            raise


def _rewrite_in_place(path: str, payload: bytes) -> bool:
    """Overwrite ``path`` within its allocated blocks; False when it would need more space.

    Not atomic: a crash in the middle leaves a torn file, which :func:`load_state` reads as
    an empty state. Only for a full disk, where the atomic way cannot work at all.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if len(payload) > os.fstat(fd).st_blocks * 512:
            return False
        os.pwrite(fd, payload, 0)
        os.ftruncate(fd, len(payload))
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


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
