"""The one exception family that carries a user-facing message and an exit code."""

from __future__ import annotations

#: The exit status of get-wal and walvault-wal-restore when they could not answer (the file
#: is there but unreadable, corrupt or wrong; the archive, the configuration or ssh failed).
#: PostgreSQL takes every status from 1 to 125 of restore_command for "no such file" and ends
#: recovery there, promoting a server that lacks the rest of the WAL; above 125 it aborts the
#: recovery instead, and a restart resumes it once the fault is repaired.  Not 126 or 127,
#: which PostgreSQL's log renders as "command not executable" / "command not found" (a wrong
#: lead in an incident), and not 255, ssh's own failure: 200, in the range LSB leaves to
#: applications; PostgreSQL logs "child process exited with exit code 200".
ABORT_RECOVERY = 200


class WalvaultError(Exception):
    """An expected failure: the CLI prints ``ERROR: <message>`` and exits with ``exit_code``."""

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(WalvaultError):
    """The configuration cannot be used (missing file, invalid global values, clashes)."""


class ServerError(WalvaultError):
    """A named server is unknown, disabled or inactive where it must be active."""


class InvalidWalName(WalvaultError):
    """A WAL name from outside does not match any accepted pattern (exit 3, like Barman)."""

    exit_code = 3


class LockBusy(WalvaultError):
    """A per-server lock is held by another process."""


class ArchiveReadError(WalvaultError):
    """An archived file exists but cannot be read, decoded or trusted (never "not found")."""

    exit_code = ABORT_RECOVERY


class StateFileError(WalvaultError):
    """A file walvault keeps beside the archive (``walvault-gaps.json``, ``backup.info``...)
    cannot be used: ``path`` names it, ``problem`` says what is wrong with it
    (``malformed: ...`` or ``unreadable: ...``).

    Readers raise it instead of guessing; ``check`` reports it as a FAILED line and commands
    work around the file where they safely can.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def describe_os_error(exc: OSError) -> str:
    """``<path>: <reason> (<ERRNO NAME>)``: one line naming what failed and why.

    >>> describe_os_error(OSError(28, "No space left on device", "/srv/wals/x"))
    '/srv/wals/x: No space left on device (ENOSPC)'
    """
    import errno
    import os

    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno is not None and exc.errno in errno.errorcode:
        reason += f" ({errno.errorcode[exc.errno]})"
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    if not paths:
        return reason
    return " -> ".join(os.fsdecode(p) for p in paths) + f": {reason}"
