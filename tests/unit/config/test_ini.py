"""walvault.config.ini reads exactly what configparser read for the loader, without importing it.

The reference is the parser the loader used: ``ConfigParser(interpolation=None, strict=True,
default_section="\\0")``, ``read_file``, then ``dict(parser.items(section, raw=True))`` for
every section.  The differential tests feed both the same lines; the examples pin each rule.
"""

from __future__ import annotations

import configparser
import io
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from walvault.config.ini import IniError, parse_ini, read_ini
from walvault.config.loader import load_config
from walvault.errors import ConfigError

Parsed = dict[str, dict[str, str]]


def reference(lines: list[str]) -> Parsed:
    parser = configparser.ConfigParser(interpolation=None, strict=True, default_section="\0")
    parser.read_file(iter(lines), source="<test>")
    return {section: dict(parser.items(section, raw=True)) for section in parser.sections()}


def ordered(parsed: Parsed) -> list[tuple[str, list[tuple[str, str]]]]:
    """Dicts compare without order: compare the items in order."""
    return [(section, list(options.items())) for section, options in parsed.items()]


def split(text: str, newline: str | None) -> list[str]:
    """The lines of ``text`` as a text file iterates them (``newline=None``: as ``open`` does)."""
    return list(io.StringIO(text, newline=newline))


def assert_same(text: str, newline: str | None = None) -> None:
    lines = split(text, newline)
    try:
        expected = reference(lines)
    except (configparser.DuplicateSectionError, configparser.DuplicateOptionError) as exc:
        with pytest.raises(IniError) as caught:
            parse_ini(lines)
        assert caught.value.lineno == exc.lineno  # raised at once, at the repeated line
        return
    except configparser.MissingSectionHeaderError as exc:
        with pytest.raises(IniError) as caught:
            parse_ini(lines)
        assert caught.value.lineno == exc.lineno
        return
    except configparser.ParsingError as exc:
        with pytest.raises(IniError) as caught:
            parse_ini(lines)
        assert caught.value.lineno == exc.errors[0][0]  # the first line configparser rejected
        return
    assert ordered(parse_ini(lines)) == ordered(expected)


# ------------------------------------------------------------------ generated texts

SPACE = st.sampled_from([" ", "  ", "\t", "\xa0", "\u3000", "\x0c", "\x0b", "\x1c", "\x85"])
INDENT = st.lists(SPACE, max_size=3).map("".join)
WORD = st.text(
    alphabet=st.sampled_from([*"abcXYZ_-.0 é%()'\"ßİK\0", "\u2028", "\ufeff", "💾"]),
    min_size=1,
    max_size=8,
)
ANY_TEXT = st.text(
    alphabet=st.sampled_from([*"[]=:#; \tabAZ\0é", "\xa0", "\u2003", "\x85"]),
    max_size=12,
)
DELIMITER = st.sampled_from(["=", ":", " = ", " : ", "=:", ":=", "  =\t", "\xa0:"])

HEADER = st.builds(
    lambda indent, name, tail: f"{indent}[{name}]{tail}",
    INDENT,
    st.one_of(st.sampled_from(["pg", "barman", "\0", "a]b", "]", "[x", ""]), WORD),
    st.sampled_from(["", "", "", " ", " trailing", "]", "]x]", " ; comment", "=v", ":v"]),
)
OPTION = st.builds(
    lambda indent, name, delimiter, value: f"{indent}{name}{delimiter}{value}",
    INDENT,
    st.one_of(st.sampled_from(["key", "Key", "KEY", "a b", "[", "[]", "x]", ""]), WORD),
    DELIMITER,
    st.one_of(WORD, ANY_TEXT),
)
COMMENT = st.builds(
    lambda indent, mark, text: f"{indent}{mark}{text}",
    INDENT,
    st.sampled_from(["#", ";"]),
    ANY_TEXT,
)
CONTINUATION = st.builds(lambda indent, text: f"{indent} {text}", INDENT, ANY_TEXT)
WELL_FORMED = st.one_of(
    *[OPTION] * 6, *[CONTINUATION] * 3, HEADER, HEADER, COMMENT, INDENT, INDENT
)  # one garbage line fails the whole text: tests with garbage need many examples
WITH_GARBAGE = st.one_of(*[WELL_FORMED] * 8, ANY_TEXT, WORD)
ENDING = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r"])


@st.composite
def ini_texts(draw: st.DrawFn, garbage: bool = True) -> str:
    lines = draw(st.lists(WITH_GARBAGE if garbage else WELL_FORMED, max_size=14))
    if draw(st.integers(0, 5)):  # usually a header first
        lines.insert(0, draw(HEADER))
    endings = [draw(ENDING) for _ in lines]
    text = "".join(line + ending for line, ending in zip(lines, endings, strict=True))
    if text and draw(st.booleans()):
        text = text.rstrip("\r\n")  # a file without a final newline
    return text


@settings(max_examples=1000, deadline=None)
@given(ini_texts(garbage=False), st.sampled_from([None, "\n"]))
def test_well_formed_texts_read_as_configparser_reads_them(text: str, newline: str | None) -> None:
    assert_same(text, newline)


@settings(max_examples=1000, deadline=None)
@given(ini_texts(), st.sampled_from([None, "\n"]))
@example("[a]\nx = 1\n\n  y\n\n\n", None)
@example("[a]\nx = 1\n# c\n  y\n[\0]\nd = 0\n[b]\nx=2\n", None)
@example("[a]\n  k = v\n    c\n  [b]\n", None)
@example("[a]\nk\n", None)
@example("k = v\n[a]\n", None)
@example("[a]\n= v\n", None)
@example("[a]b]\n[]\n", None)
@example("[a]\r\nx = 1\r\n", "\n")
def test_generated_texts_read_as_configparser_reads_them(text: str, newline: str | None) -> None:
    assert_same(text, newline)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]=:#;\n\r \t\xa0ab\0")), max_size=40))
def test_character_soup_reads_as_configparser_reads_it(text: str) -> None:
    assert_same(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_unicode_reads_as_configparser_reads_it(text: str) -> None:
    assert_same("[s]\n" + text)


# ------------------------------------------------------------------ the rules, one by one


def parse(text: str) -> Parsed:
    """Our reading of ``text``, checked against configparser's on the way."""
    assert_same(text)
    return parse_ini(split(text, None))


def test_comments_are_whole_lines_only() -> None:
    text = "# top\n; top\n[s]\n  # indented\n\t; indented\na = 1 # not a comment\nb = x ; y\n"
    assert parse(text) == {"s": {"a": "1 # not a comment", "b": "x ; y"}}


def test_delimiters_the_first_one_wins() -> None:
    text = "[s]\na = 1\nb: 2\nc:d=e\nf=g:h\ni  :  j  \nk=\nl :\n"
    expected = {"a": "1", "b": "2", "c": "d=e", "f": "g:h", "i": "j", "k": "", "l": ""}
    assert parse(text) == {"s": expected}


def test_option_names_are_stripped_and_lower_cased_values_stripped() -> None:
    assert parse("[S]\n Mixed Case Name \t=  value with  spaces \t\n") == {
        "S": {"mixed case name": "value with  spaces"}  # section names keep their case
    }
    assert parse("[s]\n\xa0ÉTÉ\u3000=\u3000v\xa0\n") == {"s": {"été": "v"}}  # Unicode spaces


def test_continuation_lines() -> None:
    text = "[s]\na = one\n  two\n\tthree = 3\n    [not a section]\nb = x\n"
    assert parse(text) == {"s": {"a": "one\ntwo\nthree = 3\n[not a section]", "b": "x"}}


def test_continuation_is_relative_to_the_option_line() -> None:
    text = "[s]\n  a = 1\n   more\n  b = 2\n  [t]\n  c = 3\n"
    assert parse(text) == {"s": {"a": "1\nmore", "b": "2"}, "t": {"c": "3"}}


def test_empty_lines_in_values_kept_trailing_ones_dropped_comments_skipped() -> None:
    text = "[s]\na =\n\n  x\n  # comment\n\n   \n  y\n\n\n[t]\nb = 1\n\n"
    assert parse(text) == {"s": {"a": "\n\nx\n\n\ny"}, "t": {"b": "1"}}


def test_empty_line_before_a_section_header_is_not_kept() -> None:
    assert parse("[s]\n\n\na = 1\n") == {"s": {"a": "1"}}


def test_line_without_delimiter_is_an_error() -> None:
    with pytest.raises(IniError) as caught:
        parse("[s]\na = 1\njust words\n")
    assert caught.value.lineno == 3
    reason = "neither a [section] header nor 'option = value'"
    assert str(caught.value) == f"line 3: {reason}"
    assert caught.value.line == "just words\n"


def test_the_message_never_shows_the_line() -> None:
    """It may be a password: conninfo lines put before the section header by mistake."""
    with pytest.raises(IniError) as caught:
        parse("conninfo = host=db password=hunter2\n[pg]\n")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(IniError) as caught:
        parse("[pg]\npassword hunter2\n")
    assert "hunter2" not in str(caught.value)


def test_option_without_name_is_an_error() -> None:
    with pytest.raises(IniError, match=r"^line 2: an option without a name$"):
        parse("[s]\n= v\n")


@pytest.mark.parametrize("text", ["a = 1\n[s]\n", "\n# c\nwords\n", "x[s]\n"])
def test_text_before_the_first_section_is_an_error(text: str) -> None:
    with pytest.raises(IniError, match="before the first"):
        parse(text)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[a] trailing", {"a": {}}),
        ("[a]b]", {"a]b": {}}),
        ("[a]b]c", {"a]b": {}}),
        ("[[a]]", {"[a]": {}}),
        ("[]]", {"]": {}}),
        ("  [ spaced ]  ", {" spaced ": {}}),
        ("[a]=b", {"a": {}}),
    ],
)
def test_section_headers_run_to_the_last_bracket(line: str, expected: Parsed) -> None:
    assert parse(line + "\n") == expected


def test_empty_brackets_are_not_a_header() -> None:
    with pytest.raises(IniError):
        parse("[]\n")
    assert parse("[s]\n[]=x\n") == {"s": {"[]": "x"}}
    assert parse("[s]\n[] : y\n") == {"s": {"[]": "y"}}


def test_a_repeated_section_is_an_error_naming_both_lines() -> None:
    """configparser's strict mode: a second [pg] in one file is refused, not merged."""
    with pytest.raises(IniError) as caught:
        parse("[a]\nx = 1\n[b]\nz = 3\n[a]\nw = 4\n")
    assert str(caught.value) == "line 5: section [a] appears twice (first on line 1)"


def test_a_repeated_option_is_an_error_and_the_value_is_never_shown() -> None:
    with pytest.raises(IniError) as caught:
        parse("[pg]\nconninfo = password=one\n  more\nCONNINFO = password=hunter2\n")
    assert str(caught.value) == (
        "line 4: option 'conninfo' appears twice in section [pg] (first on line 2)"
    )
    assert "hunter2" not in str(caught.value) and "one" not in str(caught.value)


def test_a_repeated_option_wins_over_an_earlier_bad_line() -> None:
    """configparser raises a repetition at once and other errors at the end of the file."""
    with pytest.raises(IniError) as caught:
        parse("[a]\njunk\nx = 1\nx = 2\n")
    assert caught.value.lineno == 4
    with pytest.raises(IniError) as caught:
        parse("[a]\njunk\nx = 1\n[b]\nx = 2\n")
    assert caught.value.lineno == 2


def test_the_same_option_in_two_sections_is_fine() -> None:
    assert parse("[a]\nx = 1\n[b]\nx = 2\n[\0]\nx = 0\n") == {
        "a": {"x": "1"},
        "b": {"x": "2"},
    }


def test_the_nul_section_holds_defaults_for_every_section() -> None:
    text = "[a]\nx = 1\n[\0]\nd = 0\nx = default\n[b]\ny = 2\n"
    parsed = parse(text)
    assert ordered(parsed) == [
        ("a", [("d", "0"), ("x", "1")]),
        ("b", [("d", "0"), ("x", "default"), ("y", "2")]),
    ]
    assert "\0" not in parsed
    assert parse("[\0]\nd = 0\n") == {}


def test_no_sections() -> None:
    assert parse("") == {}
    assert parse("\n  \n# only comments\n") == {}


# ------------------------------------------------------------------ files and the loader


def test_read_ini_reads_utf8_with_universal_newlines(tmp_path: Path) -> None:
    path = tmp_path / "w.conf"
    path.write_bytes("[s]\r\na = é\r\n  b\rc = 3\n".encode())
    assert read_ini(str(path)) == {"s": {"a": "é\nb", "c": "3"}}
    parser = configparser.ConfigParser(interpolation=None, strict=True, default_section="\0")
    with open(path, encoding="utf-8") as handle:
        parser.read_file(handle)
    assert read_ini(str(path)) == {s: dict(parser.items(s, raw=True)) for s in parser.sections()}


def test_loader_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "w.conf"
    path.write_text("[walvault]\nwalvault_home = /x\noops\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == (
        f"cannot parse configuration file '{path}': line 3: "
        "neither a [section] header nor 'option = value'"
    )


def test_loader_names_the_file_and_line_of_a_repeated_option(tmp_path: Path) -> None:
    path = tmp_path / "w.conf"
    path.write_text(
        "[walvault]\nwalvault_home = /x\n[pg]\nconninfo = host=a password=s1\n"
        "conninfo = host=b password=s2\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == (
        f"cannot parse configuration file '{path}': line 5: option 'conninfo' appears twice "
        "in section [pg] (first on line 4)"
    )
    assert "s1" not in str(caught.value) and "s2" not in str(caught.value)


def test_loader_reports_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "w.conf"
    path.write_bytes(b"[walvault]\nwalvault_home = /\xff\n")
    with pytest.raises(ConfigError, match=f"cannot parse configuration file '{path}': 'utf-8'"):
        load_config(str(path))


def test_loader_reports_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read configuration file .*Is a directory"):
        load_config(str(tmp_path))
