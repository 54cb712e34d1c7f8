"""Value parsers for configuration options: each turns a raw string into a typed value.

A parser raises :class:`ValueError` whose message says what is accepted; the loader adds the
option name and the offending value.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(raw: str) -> bool:
    """Parse a boolean the way ConfigParser does (on/off, true/false, yes/no, 1/0)."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("accepted: on, off, true, false, yes, no, 1, 0")


def parse_non_negative_int(raw: str) -> int:
    """Parse an integer >= 0."""
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("accepted: an integer >= 0") from None
    if value < 0:
        raise ValueError("accepted: an integer >= 0")
    return value


def parse_positive_int(raw: str) -> int:
    """Parse an integer >= 1."""
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("accepted: an integer >= 1") from None
    if value < 1:
        raise ValueError("accepted: an integer >= 1")
    return value


_SLOT_RE = re.compile(r"[0-9a-z_]{1,63}")


def parse_slot_name(raw: str) -> str:
    """Replication slot names: lower-cased, then only lower-case letters, digits and ``_``."""
    value = raw.strip().lower()
    if not _SLOT_RE.fullmatch(value):
        raise ValueError(
            "replication slot names may only contain lower case letters, numbers, "
            "and the underscore character (at most 63)"
        )
    return value


def choice(*accepted: str) -> ChoiceParser:
    """A parser that accepts one of ``accepted`` (case-insensitive) and returns it lower-cased."""
    return ChoiceParser(accepted)


class ChoiceParser:
    """Accepts one value of a fixed set."""

    __slots__ = ("accepted",)

    def __init__(self, accepted: tuple[str, ...]) -> None:
        self.accepted = accepted

    def __call__(self, raw: str) -> str:
        value = raw.strip().lower()
        if value not in self.accepted:
            raise ValueError("accepted: " + ", ".join(self.accepted))
        return value


def parse_compression_level(raw: str) -> str | int:
    """``low``, ``medium``, ``high`` or an integer (clamped later to the algorithm's range)."""
    value = raw.strip().lower()
    if value in ("low", "medium", "high"):
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError("accepted: low, medium, high or an integer") from None


_AGE_RE = re.compile(r"(\d+)\s*(hour|day|week|month)s?", re.IGNORECASE)
_AGE_SECONDS = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 31 * 86400}


def parse_age(raw: str) -> int:
    """``N hours|days|weeks|months`` (a month is 31 days, as in Barman) -> seconds."""
    match = _AGE_RE.fullmatch(raw.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError("accepted: N HOURS|DAYS|WEEKS|MONTHS with N >= 1 (e.g. '1 hour')")
    return int(match.group(1)) * _AGE_SECONDS[match.group(2).lower()]


class RetentionPolicy(NamedTuple):
    """``REDUNDANCY n`` or ``RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS``."""

    kind: str  # "redundancy" or "window"
    value: int
    unit: str = ""  # for windows: days, weeks or months

    def __str__(self) -> str:
        if self.kind == "redundancy":
            return f"REDUNDANCY {self.value}"
        return f"RECOVERY WINDOW OF {self.value} {self.unit.upper()}"


_REDUNDANCY_RE = re.compile(r"redundancy\s+(\d+)", re.IGNORECASE)
_WINDOW_RE = re.compile(r"recovery\s+window\s+of\s+(\d+)\s+(day|week|month)s?", re.IGNORECASE)


def parse_retention_policy(raw: str) -> RetentionPolicy:
    """Parse a retention policy."""
    text = raw.strip()
    match = _REDUNDANCY_RE.fullmatch(text)
    if match and int(match.group(1)) >= 1:
        return RetentionPolicy("redundancy", int(match.group(1)))
    match = _WINDOW_RE.fullmatch(text)
    if match and int(match.group(1)) >= 1:
        return RetentionPolicy("window", int(match.group(1)), match.group(2).lower() + "s")
    raise ValueError("accepted: 'REDUNDANCY n' or 'RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS', n >= 1")


def parse_csv_choices(accepted: tuple[str, ...]) -> CsvChoiceParser:
    """A parser of comma-separated values from a fixed set (e.g. ``recovery_options``)."""
    return CsvChoiceParser(accepted)


class CsvChoiceParser:
    """Comma-separated values, each of a fixed set."""

    __slots__ = ("accepted",)

    def __init__(self, accepted: tuple[str, ...]) -> None:
        self.accepted = accepted

    def __call__(self, raw: str) -> tuple[str, ...]:
        items = tuple(item.strip().lower() for item in raw.split(",") if item.strip())
        for item in items:
            if item not in self.accepted:
                raise ValueError("accepted: a comma-separated list of " + ", ".join(self.accepted))
        return items


def parse_path_list(raw: str) -> tuple[str, ...]:
    """A colon-separated list of absolute directories (``path_prefix``)."""
    parts = tuple(p for p in raw.strip().split(":") if p)
    for part in parts:
        if not part.startswith("/"):
            raise ValueError("accepted: a colon-separated list of absolute directories")
    return parts


def parse_abs_path(raw: str) -> str:
    """An absolute path (no NUL, normalised)."""
    value = raw.strip()
    if not value.startswith("/") or "\0" in value:
        raise ValueError("accepted: an absolute path")
    return value.rstrip("/") or "/"
