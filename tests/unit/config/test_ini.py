"""walvault.config.ini: configparser in strict mode, its errors named by line, never by text."""

from __future__ import annotations

from pathlib import Path

import pytest

from walvault.config import load_config
from walvault.config.ini import IniError, parse_ini, read_ini
from walvault.errors import ConfigError


def parse(text: str) -> dict[str, dict[str, str]]:
    return parse_ini(text.splitlines(keepends=True))


def test_configparser_rules() -> None:
    text = "[s]\n# comment\nA = 1\nb: two\n  continued\n\n[t]\nc = %(x)s\n"
    assert parse(text) == {"s": {"a": "1", "b": "two\ncontinued"}, "t": {"c": "%(x)s"}}


def test_a_line_without_delimiter_is_named_by_number() -> None:
    with pytest.raises(IniError) as caught:
        parse("[s]\na = 1\njust words\n")
    assert caught.value.lineno == 3
    assert str(caught.value) == "line 3: neither a [section] header nor 'option = value'"


def test_the_message_never_shows_the_line() -> None:
    """It may be a password: conninfo lines put before the section header by mistake."""
    for text in ("conninfo = host=db password=hunter2\n[pg]\n", "[pg]\npassword hunter2\n"):
        with pytest.raises(IniError) as caught:
            parse(text)
        assert "hunter2" not in str(caught.value)


def test_text_before_the_first_section_is_an_error() -> None:
    with pytest.raises(IniError, match=r"^line 1: text before the first \[section\] header$"):
        parse("a = 1\n[s]\n")


def test_a_repeated_section_is_an_error() -> None:
    """configparser's strict mode: a second [pg] in one file is refused, not merged."""
    with pytest.raises(IniError) as caught:
        parse("[a]\nx = 1\n[b]\nz = 3\n[a]\nw = 4\n")
    assert str(caught.value) == "line 5: section [a] appears twice"


def test_a_repeated_option_is_an_error_and_the_value_is_never_shown() -> None:
    with pytest.raises(IniError) as caught:
        parse("[pg]\nconninfo = password=one\n  more\nCONNINFO = password=hunter2\n")
    assert str(caught.value) == "line 4: option 'conninfo' appears twice in section [pg]"
    assert "hunter2" not in str(caught.value) and "one" not in str(caught.value)


def test_the_same_option_in_two_sections_is_fine() -> None:
    assert parse("[a]\nx = 1\n[b]\nx = 2\n") == {"a": {"x": "1"}, "b": {"x": "2"}}


def test_read_ini_reads_utf8_with_universal_newlines(tmp_path: Path) -> None:
    path = tmp_path / "w.conf"
    path.write_bytes("[s]\r\na = é\r\n  b\rc = 3\n".encode())
    assert read_ini(str(path)) == {"s": {"a": "é\nb", "c": "3"}}


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
        "in section [pg]"
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
