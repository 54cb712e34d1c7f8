"""The hand-written grammars of walvault.config accept what the regular expressions they
replaced accepted, and return the same values and errors.

The restore client loads the configuration once per WAL segment and must not import ``re``;
the regular expressions live on here only, as the reference.
"""

from __future__ import annotations

import re
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


def soup(alphabet: str | list[str], max_size: int = 30) -> st.SearchStrategy[str]:
    """Strings of up to ``max_size`` pieces of ``alphabet`` (characters or longer pieces)."""
    return st.lists(st.sampled_from(list(alphabet)), max_size=max_size).map("".join)


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


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("1 DAY", 86400), ("2hours", 7200), (" 12 Month ", 12 * 31 * 86400), ("3 weeks", 3 * 604800)],
)
def test_ages(raw: str, seconds: int) -> None:
    assert parsers.parse_age(raw) == seconds


@pytest.mark.parametrize(
    "raw",
    ["0 days", "1 s", "1", "day", "\u0663 weeks", "\uff12 days", "1\u3000day", "1_0 days"],
)
def test_ages_refused(raw: str) -> None:
    """ASCII digits and spaces only: an Arabic-Indic 3 or a full-width 2 is no number here."""
    with pytest.raises(ValueError, match="accepted"):
        parsers.parse_age(raw)


@pytest.mark.parametrize(
    ("raw", "policy"),
    [
        ("RECOVERY WINDOW OF 4 WEEKS", RetentionPolicy("window", 4, "weeks")),
        ("recovery window of 1 day", RetentionPolicy("window", 1, "days")),
        ("redundancy 3", RetentionPolicy("redundancy", 3)),
        ("REDUNDANCY   12", RetentionPolicy("redundancy", 12)),
    ],
)
def test_retention_policies(raw: str, policy: RetentionPolicy) -> None:
    assert parsers.parse_retention_policy(raw) == policy


@pytest.mark.parametrize(
    "raw",
    [
        "REDUNDANCY 0",
        "REDUNDANCY3",
        "recovery window of 1day",
        "recoverywindow of 1 day",
        "REDUNDANCY \u0967\u0968",  # Devanagari 12: was read as 12 by the hand matcher
        "RECOVERY WINDOW OF \u0663 DAYS",  # Arabic-Indic 3
        "recovery w\u0130ndow of 2 days",
        "redundancy " + "9" * 5000,
    ],
)
def test_retention_policies_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="accepted"):
        parsers.parse_retention_policy(raw)


@pytest.mark.parametrize("raw", ["\u0661\u0662", "1_000", "\uff11"])
def test_integers_are_ascii(raw: str) -> None:
    for parse in (parsers.parse_positive_int, parsers.parse_non_negative_int):
        with pytest.raises(ValueError, match="accepted"):
            parse(raw)
    assert parsers.parse_positive_int(" 12 ") == 12
