"""Value parsers for configuration options: each turns a raw string into a typed value.

A parser raises :class:`ValueError` whose message says what is accepted; the loader adds the
option name and the offending value.
"""

from __future__ import annotations

from walvault.records import NamedTuple

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
        return int(value)
    except ValueError:
        raise ValueError("accepted: low, medium, high or an integer") from None


# The grammars below are matched by hand, not with regular expressions: the restore client
# loads the configuration once per WAL segment, and ``import re`` costs it ~2 ms.  They
# accept what the regular expressions they replace accepted (tests/unit/config/
# test_config_grammar.py compares them): a digit is any Unicode decimal digit
# (:meth:`str.isdecimal`, as ``\d``), a space any Unicode white space (:meth:`str.isspace`,
# as ``\s``), and words compare as under ``re.IGNORECASE``, which also matches the Kelvin
# sign to ``k``, the long s to ``s``, and the dotted capital I and the dotless i to ``i``.
_CASELESS = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}


def _fold(text: str) -> str:
    """``text`` with every character that ``re.IGNORECASE`` matches to an ASCII letter written
    as that lower-case letter (other non-ASCII characters are kept: they match no letter)."""
    if text.isascii():
        return text.lower()
    return "".join(char.lower() if char.isascii() else _CASELESS.get(char, char) for char in text)


def _word(text: str, start: int, word: str) -> int:
    """The index after the lower-case ASCII ``word`` at ``text[start:]`` (any case), or -1."""
    end = start + len(word)
    return end if _fold(text[start:end]) == word else -1


def _spaces(text: str, start: int) -> int:
    """The index after the white space starting at ``start`` (``start`` if there is none)."""
    while start < len(text) and text[start].isspace():
        start += 1
    return start


def _digits(text: str, start: int) -> int:
    """The index after the decimal digits starting at ``start`` (``start`` if there are none)."""
    while start < len(text) and text[start].isdecimal():
        start += 1
    return start


def _unit(rest: str, units: tuple[str, ...]) -> str | None:
    """The unit ``rest`` names, singular or with an ``s`` (any case), or None."""
    folded = _fold(rest)
    if folded in units:
        return folded
    if folded.endswith("s") and folded[:-1] in units:
        return folded[:-1]
    return None


_AGE_SECONDS = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 31 * 86400}
_AGE_UNITS = tuple(_AGE_SECONDS)


def parse_age(raw: str) -> int:
    """``N hours|days|weeks|months`` (a month is 31 days, as in Barman) -> seconds."""
    text = raw.strip()
    end = _digits(text, 0)
    unit = _unit(text[_spaces(text, end) :], _AGE_UNITS) if end else None
    if unit is None or int(text[:end]) == 0:
        raise ValueError("accepted: N HOURS|DAYS|WEEKS|MONTHS with N >= 1 (e.g. '1 hour')")
    return int(text[:end]) * _AGE_SECONDS[unit]


class RetentionPolicy(NamedTuple):
    """``REDUNDANCY n`` or ``RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS``."""

    kind: str  # "redundancy" or "window"
    value: int
    unit: str = ""  # for windows: days, weeks or months

    def __str__(self) -> str:
        if self.kind == "redundancy":
            return f"REDUNDANCY {self.value}"
        return f"RECOVERY WINDOW OF {self.value} {self.unit.upper()}"


_WINDOW_UNITS = ("day", "week", "month")


def _after_words(text: str, words: tuple[str, ...]) -> int:
    """The index after ``words`` at the start of ``text``, each followed by one or more
    spaces, or -1."""
    index = 0
    for word in words:
        end = _word(text, index, word)
        if end < 0:
            return -1
        index = _spaces(text, end)
        if index == end:
            return -1
    return index


def _redundancy(text: str) -> str | None:
    """The digits of ``REDUNDANCY <digits>`` (any case), or None."""
    start = _after_words(text, ("redundancy",))
    if start < 0 or start == len(text) or _digits(text, start) != len(text):
        return None
    return text[start:]


def _window(text: str) -> tuple[str, str] | None:
    """The digits and the singular unit of ``RECOVERY WINDOW OF <digits> <unit>[S]``, or None."""
    start = _after_words(text, ("recovery", "window", "of"))
    if start < 0:
        return None
    end = _digits(text, start)
    after = _spaces(text, end)
    if end == start or after == end:
        return None
    unit = _unit(text[after:], _WINDOW_UNITS)
    return None if unit is None else (text[start:end], unit)


def parse_retention_policy(raw: str) -> RetentionPolicy:
    """Parse a retention policy."""
    text = raw.strip()
    digits = _redundancy(text)
    if digits is not None and int(digits) >= 1:
        return RetentionPolicy("redundancy", int(digits))
    window = _window(text)
    if window is not None and int(window[0]) >= 1:
        return RetentionPolicy("window", int(window[0]), window[1] + "s")
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
