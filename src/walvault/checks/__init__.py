"""Checks are data: they return CheckResult values; renderers print them (console, JSON, Nagios)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    """One line of ``check``: Barman's name, OK or FAILED, and a hint."""

    name: str
    ok: bool
    hint: str = ""
    details: tuple[str, ...] = ()  # extra lines (the ``configuration`` check's messages)
    perfdata: tuple[tuple[str, int], ...] = ()  # (label suffix, bytes) for Nagios

    @property
    def status(self) -> str:
        """``OK`` or ``FAILED``."""
        return "OK" if self.ok else "FAILED"
