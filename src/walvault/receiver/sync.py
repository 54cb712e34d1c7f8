"""``synchronous_standby_names``: is a given application_name one of the synchronous standbys?"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN_RE = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([(),])|([^\s,()"]+))')


@dataclass(frozen=True)
class SyncStandbyNames:
    """The parsed setting: method ``first``/``any``/``none``, count and names."""

    method: str
    count: int
    names: tuple[str, ...]

    def lists(self, application_name: str) -> bool:
        """True when ``application_name`` is listed (case-insensitively, as PostgreSQL does)."""
        wanted = application_name.lower()
        return any(name == "*" or name.lower() == wanted for name in self.names)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot parse synchronous_standby_names at {text[pos:]!r}")
        quoted, punct, word = match.groups()
        if quoted is not None:
            tokens.append(("name", quoted.replace('""', '"')))
        elif punct is not None:
            tokens.append(("punct", punct))
        else:
            tokens.append(("word", word))
        pos = match.end()
    return tokens


def parse_sync_standby_names(text: str) -> SyncStandbyNames:
    """Parse ``s1, s2``, ``FIRST n (s1, s2)``, ``ANY n (...)``, ``n (...)``, quotes and ``*``."""
    tokens = _tokens(text)
    if not tokens:
        return SyncStandbyNames("none", 0, ())
    method, count = "first", 1
    index = 0
    kind, value = tokens[0]
    if kind == "word" and value.upper() in ("FIRST", "ANY") and len(tokens) > 1:
        if tokens[1][0] == "word" and tokens[1][1].isdigit():
            method, count, index = value.lower(), int(tokens[1][1]), 2
    elif kind == "word" and value.isdigit() and len(tokens) > 1 and tokens[1] == ("punct", "("):
        count, index = int(value), 1
    rest = tokens[index:]
    if index:
        if not rest or rest[0] != ("punct", "(") or rest[-1] != ("punct", ")"):
            raise ValueError(f"cannot parse synchronous_standby_names {text!r}")
        rest = rest[1:-1]
    names = [value for kind, value in rest if kind in ("name", "word")]
    if any(kind == "punct" and value != "," for kind, value in rest):
        raise ValueError(f"cannot parse synchronous_standby_names {text!r}")
    return SyncStandbyNames(method, count, tuple(names))
