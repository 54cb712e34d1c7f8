"""Reading walvault's (and Barman's) INI files: :mod:`configparser`, strict, errors without text.

``ConfigParser(interpolation=None, strict=True, default_section="\\0")``: walvault does its
own ``%(key)s`` interpolation (the loader), a section or an option seen twice in one file is
an error (so a forgotten second ``conninfo`` cannot silently win), and no section is a
default section.  Option names are lower-cased, values kept raw.

A parse error is reported by line number and reason only, never with the line's text: the
line may hold a password (``conninfo = ... password=...``), and configuration errors reach
logs, PostgreSQL's among them.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterable

#: The name of configparser's default section as walvault configures it (none in practice).
DEFAULT_SECTION = "\0"


class IniError(ValueError):
    """The text is not an INI file: ``str()`` names the line (1-based) and the reason."""

    def __init__(self, lineno: int, reason: str) -> None:
        self.lineno = lineno
        self.reason = reason
        super().__init__(f"line {lineno}: {reason}")


def _parser() -> configparser.ConfigParser:
    return configparser.ConfigParser(
        interpolation=None, strict=True, default_section=DEFAULT_SECTION
    )


def parse_ini(lines: Iterable[str]) -> dict[str, dict[str, str]]:
    """Parse ``lines`` into ``{section: {option: value}}`` (order of first appearance);
    :class:`IniError` for what configparser refuses, named by line only."""
    parser = _parser()
    try:
        parser.read_file(lines)
    except configparser.DuplicateSectionError as exc:
        raise IniError(exc.lineno or 0, f"section [{exc.section}] appears twice") from None
    except configparser.DuplicateOptionError as exc:
        raise IniError(
            exc.lineno or 0, f"option '{exc.option}' appears twice in section [{exc.section}]"
        ) from None
    except configparser.MissingSectionHeaderError as exc:
        raise IniError(exc.lineno, "text before the first [section] header") from None
    except configparser.ParsingError as exc:
        lineno = exc.errors[0][0] if exc.errors else 0
        raise IniError(lineno, "neither a [section] header nor 'option = value'") from None
    return {name: dict(parser.items(name, raw=True)) for name in parser.sections()}


def read_ini(path: str) -> dict[str, dict[str, str]]:
    """Parse the UTF-8 file ``path`` (universal newlines, as ``open`` reads text)."""
    with open(path, encoding="utf-8") as handle:
        return parse_ini(handle)
