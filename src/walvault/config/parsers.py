"""Value parsers for configuration options: each turns a raw string into a typed value.

A parser raises :class:`ValueError` whose message says what is accepted; the loader adds the
option name and the offending value.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _integer(text: str) -> int:
    """An ASCII integer (``int`` alone would take Unicode digits and ``_`` separators)."""
    if _INTEGER.fullmatch(text) is None:
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


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
        value = _integer(raw.strip())
    except ValueError:
        raise ValueError("accepted: an integer >= 0") from None
    if value < 0:
        raise ValueError("accepted: an integer >= 0")
    return value


def parse_positive_int(raw: str) -> int:
    """Parse an integer >= 1."""
    try:
        value = _integer(raw.strip())
    except ValueError:
        raise ValueError("accepted: an integer >= 1") from None
    if value < 1:
        raise ValueError("accepted: an integer >= 1")
    return value


_SLOT_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz_")


def parse_slot_name(raw: str) -> str:
    """Replication slot names: lower-cased, then only lower-case letters, digits and ``_``."""
    value = raw.strip().lower()
    if not (0 < len(value) <= 63 and all(char in _SLOT_CHARS for char in value)):
        raise ValueError(
            "replication slot names may only contain lower case letters, numbers, "
            "and the underscore character (at most 63)"
        )
    return value


def parse_gpg_key_id(raw: str) -> str:
    """``encryption_key_id``: what gpg's ``--recipient`` takes -- a fingerprint or key ID
    (hex, optionally ``0x``, optionally ``!``), an e-mail address or a user ID -- as one
    line of printable characters that does not start with ``-``."""
    value = raw.strip()
    if not 0 < len(value) <= 256 or value.startswith("-") or not value.isprintable():
        raise ValueError(
            "accepted: a GnuPG key fingerprint, key ID, e-mail address or user ID "
            "(printable, at most 256 characters, not starting with '-')"
        )
    return value


def parse_command(raw: str) -> str:
    """A shell command on one line (``encryption_passphrase_command``)."""
    value = raw.strip()
    if not value or not value.isprintable():
        raise ValueError("accepted: a shell command on one line")
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
        return _integer(value)
    except ValueError:
        raise ValueError("accepted: low, medium, high or an integer") from None


# The grammars below are ASCII: a digit is 0-9 and a space an ASCII white space
# (re.ASCII), words compare case-insensitively: "REDUNDANCY \u0967\u0968" is not 12.
_AGE = re.compile(r"(\d+)\s*(hour|day|week|month)s?", re.ASCII | re.IGNORECASE)
_AGE_SECONDS = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 31 * 86400}


def parse_age(raw: str) -> int:
    """``N hours|days|weeks|months`` (a month is 31 days, as in Barman) -> seconds."""
    match = _AGE.fullmatch(raw.strip())
    count = _count(match[1]) if match is not None else 0
    if match is None or count == 0:
        raise ValueError("accepted: N HOURS|DAYS|WEEKS|MONTHS with N >= 1 (e.g. '1 hour')")
    return count * _AGE_SECONDS[match[2].lower()]


def _count(digits: str) -> int:
    """The number ``digits`` (ASCII) spell, 0 when they are too many to convert."""
    try:
        return int(digits)
    except ValueError:  # more digits than int() converts: no sane count anyway
        return 0


class RetentionPolicy(NamedTuple):
    """``REDUNDANCY n`` or ``RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS``."""

    kind: str  # "redundancy" or "window"
    value: int
    unit: str = ""  # for windows: days, weeks or months

    def __str__(self) -> str:
        if self.kind == "redundancy":
            return f"REDUNDANCY {self.value}"
        return f"RECOVERY WINDOW OF {self.value} {self.unit.upper()}"


_REDUNDANCY = re.compile(r"redundancy\s+(\d+)", re.ASCII | re.IGNORECASE)
_WINDOW = re.compile(
    r"recovery\s+window\s+of\s+(\d+)\s+(day|week|month)s?", re.ASCII | re.IGNORECASE
)


def parse_retention_policy(raw: str) -> RetentionPolicy:
    """Parse a retention policy."""
    text = raw.strip()
    redundancy = _REDUNDANCY.fullmatch(text)
    if redundancy is not None and _count(redundancy[1]) >= 1:
        return RetentionPolicy("redundancy", _count(redundancy[1]))
    window = _WINDOW.fullmatch(text)
    if window is not None and _count(window[1]) >= 1:
        return RetentionPolicy("window", _count(window[1]), window[2].lower() + "s")
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


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    **{
        spelling: 1 << shift
        for letter, shift in (("k", 10), ("m", 20), ("g", 30), ("t", 40))
        for spelling in (letter, letter + "b", letter + "ib")
    },
}
_SIZE_ACCEPTED = "accepted: a whole number of bytes, or with a unit: B, kB, MB, GB, TB (or KiB...)"


def parse_size(raw: str) -> int:
    """``N`` bytes or ``N <unit>`` (``64MB``, ``64 MiB``, ``1 GB``), units of any case and all
    binary (1 kB = 1024 B, as PostgreSQL reads its own settings)."""
    text = raw.strip()
    end = 0
    while end < len(text) and text[end] in "0123456789":  # ASCII digits only
        end += 1
    unit = text[end:].strip().lower()
    if end == 0 or unit not in _SIZE_UNITS:
        raise ValueError(_SIZE_ACCEPTED)
    return int(text[:end]) * _SIZE_UNITS[unit]


def parse_positive_size(raw: str) -> int:
    """A size (:func:`parse_size`) of at least one byte."""
    value = parse_size(raw)
    if value <= 0:
        raise ValueError(_SIZE_ACCEPTED + ", above 0 (leave the option unset for no limit)")
    return value


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


def parse_store_location(raw: str) -> str:
    """An absolute path, or an object-store URL (``s3://BUCKET[/PATH]``, validated)."""
    value = raw.strip()
    if value[:5].lower() == "s3://":
        from walvault.errors import WalvaultError
        from walvault.storage.s3config import parse_s3_url

        try:
            return parse_s3_url(value).url
        except WalvaultError as exc:
            raise ValueError(exc.message) from None
    try:
        return parse_abs_path(value)
    except ValueError:
        raise ValueError("accepted: an absolute path or s3://BUCKET[/PATH]") from None


def is_store_url(location: str) -> bool:
    """True for an object-store location (``s3://...``), False for a local path."""
    return location[:5].lower() == "s3://"


#: what an OS user name may hold (POSIX's portable set, as useradd accepts it)
_USER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def parse_user_list(raw: str) -> tuple[str, ...]:
    """OS user names separated by commas or spaces (``restore_users``)."""
    names = tuple(dict.fromkeys(word for word in raw.replace(",", " ").split() if word))
    for name in names:
        if len(name) > 32 or name.startswith("-") or not set(name) <= _USER_NAME_CHARS:
            raise ValueError(
                f"'{name}' is not an OS user name: accepted: letters, digits, '.', '_' and "
                "'-' (at most 32, not starting with '-')"
            )
    return names


#: pg_basebackup's --max-rate accepts 32 kB/s to 1024 MB/s
MAX_RATE_RANGE = (32, 1024 * 1024)


def parse_bandwidth(raw: str) -> int:
    """``bandwidth_limit``/``--bwlimit``: kB/s for pg_basebackup's ``--max-rate``; 0: none."""
    value = parse_non_negative_int(raw)
    low, high = MAX_RATE_RANGE
    if value and not low <= value <= high:
        raise ValueError(
            f"'{raw}': pg_basebackup's --max-rate takes {low} to {high} kB/s (0: no limit)"
        )
    return value
