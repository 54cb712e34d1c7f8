"""The hand-written grammars of walvault.config accept what the regular expressions they
replaced accepted, and return the same values and errors.

The restore client loads the configuration once per WAL segment and must not import ``re``;
the regular expressions live on here only, as the reference.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from walvault.config import loader, parsers
from walvault.config.options import OPTIONS
from walvault.config.parsers import RetentionPolicy

# ------------------------------------------------------------------ the replaced expressions

SERVER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
QUOTED_RE = re.compile(r"""^(['"])(.*)\1$""", re.DOTALL)
INTERP_RE = re.compile(r"%\(([^)]+)\)s|%%|%")
TEMPLATE_KEY_RE = re.compile(r"%\(([^)]+)\)s")
SLOT_RE = re.compile(r"[0-9a-z_]{1,63}")
AGE_RE = re.compile(r"(\d+)\s*(hour|day|week|month)s?", re.IGNORECASE)
REDUNDANCY_RE = re.compile(r"redundancy\s+(\d+)", re.IGNORECASE)
WINDOW_RE = re.compile(r"recovery\s+window\s+of\s+(\d+)\s+(day|week|month)s?", re.IGNORECASE)
AGE_SECONDS = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 31 * 86400}


def old_unquote(raw: str) -> str | None:
    value = raw.strip()
    match = QUOTED_RE.match(value)
    if match:
        value = match.group(2)
    return None if value in ("", "None") else value


def old_strip_quotes(value: str) -> str:
    match = QUOTED_RE.match(value)
    return match.group(2) if match else value


class OldInterpolator:
    def __init__(self, *sources: Mapping[str, str | None]) -> None:
        self.sources = sources

    def expand(self, text: str, depth: int = 0) -> str:
        if depth > 10:
            raise ValueError("interpolation is too deeply nested (a loop?)")

        def substitute(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "%%":
                return "%"
            if token == "%":
                raise ValueError("a lone '%' must be written '%%'")
            key = match.group(1).lower()
            for source in self.sources:
                if key in source and source[key] is not None:
                    return self.expand(str(source[key]), depth + 1)
            raise ValueError(f"'%({key})s' refers to an option that is not set")

        return INTERP_RE.sub(substitute, text)


def old_slot_name(raw: str) -> str:
    value = raw.strip().lower()
    if not SLOT_RE.fullmatch(value):
        raise ValueError(
            "replication slot names may only contain lower case letters, numbers, "
            "and the underscore character (at most 63)"
        )
    return value


def old_age(raw: str) -> int:
    match = AGE_RE.fullmatch(raw.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError("accepted: N HOURS|DAYS|WEEKS|MONTHS with N >= 1 (e.g. '1 hour')")
    return int(match.group(1)) * AGE_SECONDS[match.group(2).lower()]


def old_retention_policy(raw: str) -> RetentionPolicy:
    text = raw.strip()
    match = REDUNDANCY_RE.fullmatch(text)
    if match and int(match.group(1)) >= 1:
        return RetentionPolicy("redundancy", int(match.group(1)))
    match = WINDOW_RE.fullmatch(text)
    if match and int(match.group(1)) >= 1:
        return RetentionPolicy("window", int(match.group(1)), match.group(2).lower() + "s")
    raise ValueError("accepted: 'REDUNDANCY n' or 'RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS', n >= 1")


def outcome(function: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """The value, or the ValueError's message: what the loader shows either way."""
    try:
        return ("value", function(*args))
    except ValueError as exc:
        return ("error", str(exc))


# ------------------------------------------------------------------ strategies

#: the characters where hand-written matching and ``re`` could part: Unicode white space
#: and digits, the non-ASCII letters IGNORECASE folds to ASCII, newlines, near-misses
SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2003", "\u3000"]
DIGITS = ["0", "1", "3", "9", "\u0663", "\uff11", "\U0001d7d9", "\u00b2", "\u2460", "a"]
CASELESS = ["\u0130", "\u0131", "\u017f", "\u212a", "\u00df", "\ufb06", "\u0345", "\u1e9e"]


def cased(words: list[str]) -> st.SearchStrategy[str]:
    """One of ``words`` with random case, sometimes with a letter swapped for a look-alike."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        word = draw(st.sampled_from(words))
        chars = [draw(st.sampled_from([c, c.upper()])) for c in word]
        if chars and draw(st.integers(0, 3)) == 0:
            index = draw(st.integers(0, len(chars) - 1))
            chars[index] = draw(st.sampled_from(CASELESS))
        return "".join(chars)

    return build()


NUMBER = st.one_of(
    st.lists(st.sampled_from(DIGITS[:8]), min_size=1, max_size=3).map("".join),
    st.lists(st.sampled_from(DIGITS), max_size=4).map("".join),
)
GAP = st.one_of(
    st.lists(st.sampled_from(SPACES), min_size=1, max_size=2).map("".join),
    st.lists(st.sampled_from(SPACES), max_size=3).map("".join),
)
UNIT = st.builds(
    lambda unit, plural: unit + plural,
    cased(["hour", "day", "week", "month", "year", "minute", ""]),
    st.sampled_from(["", "s", "S", "\u017f", "es", "ss"]),
)


def soup(alphabet: str | list[str], max_size: int = 30) -> st.SearchStrategy[str]:
    """Strings of up to ``max_size`` pieces of ``alphabet`` (characters or longer pieces)."""
    return st.lists(st.sampled_from(list(alphabet)), max_size=max_size).map("".join)


AGES = st.one_of(
    st.builds(lambda *parts: "".join(parts), GAP, NUMBER, GAP, UNIT, GAP),
    soup(["h", "o", "u", "r", "d", "s", "1", "0", *SPACES[:4], *CASELESS[:4]], 12),
)
RETENTIONS = st.one_of(
    st.builds(lambda *parts: "".join(parts), GAP, cased(["redundancy"]), GAP, NUMBER, GAP),
    st.builds(
        lambda *parts: "".join(parts),
        GAP,
        cased(["recovery"]),
        GAP,
        cased(["window"]),
        GAP,
        cased(["of"]),
        GAP,
        NUMBER,
        GAP,
        UNIT,
        GAP,
    ),
)

# ------------------------------------------------------------------ server names


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        soup("aZ09._-/ é\nK" + "\u212a\u0663", 70),
        st.builds(
            lambda head, size, tail: head + "x" * size + tail,
            st.sampled_from(["a", "0", ".", "_", "-", "é", ""]),
            st.integers(60, 66),
            st.sampled_from(["", "\n", "-", "/", "\u0663"]),
        ),
    )
)
@example("a" * 64)
@example("a" * 65)
@example("pg\n")
def test_server_names(name: str) -> None:
    assert loader.is_server_name(name) == bool(SERVER_NAME_RE.fullmatch(name))


# ------------------------------------------------------------------ quoting


QUOTING = soup("'\"a \n\tNone", 8)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        QUOTING,
        st.builds(
            lambda quote, text, end: quote + text + end,
            st.sampled_from("'\""),
            QUOTING,
            st.sampled_from(["'", '"', "'\n", '"\n', "\n", "", "'\n\n"]),
        ),
    )
)
@example("'\n")
@example("''\n")
@example('"a"\n')
@example("' None '")
def test_quotes(raw: str) -> None:
    assert loader._strip_quotes(raw) == old_strip_quotes(raw)
    assert loader._unquote(raw) == old_unquote(raw)


# ------------------------------------------------------------------ interpolation

TEMPLATE = soup(
    ["%(a)s", "%(B)s", "%(name)s", "%(x)s", "%%", "%", "(", ")", "s", "a", "B", "\n", "x", " "], 10
)
SOURCE = st.dictionaries(
    st.sampled_from(["a", "b", "name", "x", "a\n", " "]),
    st.one_of(st.none(), TEMPLATE),
    max_size=4,
)


@settings(max_examples=1000, deadline=None)
@given(TEMPLATE, st.lists(SOURCE, min_size=1, max_size=3))
@example("%(a)s", [{"a": "%(a)s"}])  # a loop
@example("%%(a)s %(A)s", [{"a": None}, {"a": "1"}])
@example("%(a)x %", [{}])
@example("%(a\n)s", [{"a\n": "v"}])
@example("%()s", [{}])
@example("%(a))s", [{"a)": "v"}])
def test_interpolation(template: str, sources: list[dict[str, str | None]]) -> None:
    new = outcome(loader._Interpolator(*sources).expand, template)
    assert new == outcome(OldInterpolator(*sources).expand, template)


@settings(max_examples=1000, deadline=None)
@given(TEMPLATE)
@example("%%(a)s")
@example("%(a%(b)s")
@example("%(a)s%(b)s%(c)x")
def test_template_keys(template: str) -> None:
    assert loader._template_keys(template) == TEMPLATE_KEY_RE.findall(template)


def test_templates_of_the_option_table() -> None:
    for option in OPTIONS:
        if option.default is not None:
            assert loader._template_keys(option.default) == TEMPLATE_KEY_RE.findall(option.default)


# ------------------------------------------------------------------ value parsers


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        soup("az09_ -AZ\n\t" + "\u212a\u0130\u0131é\u0663", 66),
        st.builds(lambda n, t: "a" * n + t, st.integers(60, 66), st.sampled_from(["", "_", "-"])),
    )
)
@example("\u212aelvin")  # the Kelvin sign lower-cases to an ASCII k: accepted by both
@example("\u0130")  # lower-cases to two characters, one not ASCII: refused by both
@example("a" * 63)
@example("a" * 64)
def test_slot_names(raw: str) -> None:
    assert outcome(parsers.parse_slot_name, raw) == outcome(old_slot_name, raw)


@settings(max_examples=1000, deadline=None)
@given(AGES)
@example("1 DAY")
@example("2hours")
@example("0 days")
@example("\u0663 wee\u212a\u017f")
@example("1 s")
@example("1")
@example("day")
@example(" 12\u3000Month ")
def test_ages(raw: str) -> None:
    assert outcome(parsers.parse_age, raw) == outcome(old_age, raw)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(RETENTIONS, soup("redunacywiofREDUNACYWIOF 1\n\u0131\u0130", 24)))
@example("RECOVERY WINDOW OF 4 WEEKS")
@example("redundancy 3")
@example("REDUNDANCY 0")
@example("REDUNDANCY3")
@example("recovery window of 1day")
@example("recovery w\u0130ndow of \uff12 days")
@example("recoverywindow of 1 day")
def test_retention_policies(raw: str) -> None:
    assert outcome(parsers.parse_retention_policy, raw) == outcome(old_retention_policy, raw)


@pytest.mark.parametrize(
    ("new", "old", "text"),
    [
        (parsers.parse_age, old_age, "9" * 5000 + " days"),
        (parsers.parse_retention_policy, old_retention_policy, "redundancy " + "9" * 5000),
        (
            parsers.parse_retention_policy,
            old_retention_policy,
            "recovery window of " + "9" * 5000 + " days",
        ),
    ],
    ids=["age", "redundancy", "window"],
)
def test_too_many_digits_fail_as_int_fails(
    new: Callable[[str], Any], old: Callable[[str], Any], text: str
) -> None:
    assert outcome(new, text) == outcome(old, text)
    assert outcome(new, text)[0] == "error"


# ------------------------------------------------------------------ the character classes


def every_character() -> str:
    return "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)


def test_unicode_classes_match_the_str_methods() -> None:
    """``\\s`` is :meth:`str.isspace`, ``\\d`` is :meth:`str.isdecimal` (and ``int`` reads
    every such digit), and IGNORECASE matches an ASCII letter to exactly the characters
    ``_fold`` maps to it, in the Unicode database of this Python."""
    text = every_character()
    assert re.findall(r"\s", text) == [c for c in text if c.isspace()]
    digits = re.findall(r"\d", text)
    assert digits == [c for c in text if c.isdecimal()]
    assert all(0 <= int(c) <= 9 for c in digits)
    letters = "abcdefghijklmnopqrstuvwxyz"
    folded: dict[str, list[str]] = {letter: [] for letter in letters}
    for char, fold in zip(text, map(parsers._fold, text), strict=True):
        if fold in folded:
            folded[fold].append(char)
    for letter in letters:
        matched = re.findall(letter, text, re.IGNORECASE)
        assert matched == folded[letter], letter
        if letter in "hourdaywekmnt":  # the letters of units, which the old code lower-cased
            assert all(char.lower() == letter for char in matched), letter
