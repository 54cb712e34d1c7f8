"""The one exception family that carries a user-facing message and an exit code."""

from __future__ import annotations


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
