"""A small INI reader: what the loader used to get from :mod:`configparser`, without its imports.

The restore client loads the configuration once per WAL segment, and ``import configparser``
(with the ``re``, ``enum`` and ``warnings`` it imports) costs it ~6 ms.  :func:`parse_ini`
returns exactly ``{section: dict(parser.items(section, raw=True))}`` for a
``ConfigParser(interpolation=None, strict=True, default_section="\\0")`` that ``read_file``
the same lines, and fails exactly when that parser fails (tests/unit/config/test_ini.py holds
the two to the same results).  The rules, as configparser applies them:

* a line is taken without its surrounding whitespace (:meth:`str.strip`, Unicode whitespace);
* a line starting with ``#`` or ``;`` is a comment; there are no inline comments;
* a line indented deeper than the line that opened the current option continues its value
  (comments and section headers included: an indented ``[x]`` is value text);
* an empty line inside a value is kept as an empty line of the value; a comment line is not;
  the empty lines that end a value are dropped;
* ``[name]``: a stripped line starting with ``[`` and holding a ``]`` after at least one
  character; the name runs to the *last* ``]`` and what follows it is ignored
  (``[a] x`` is section ``a``, ``[a]b]`` is section ``a]b``, ``[]`` is not a header);
* otherwise ``name = value`` or ``name : value``: the first ``=`` or ``:`` separates them; the
  name is right-stripped and lower-cased, the value stripped; an empty name is an error, and
  so is a line with neither delimiter, or any line before the first section header;
* a section seen twice in one file is an error, and so is an option seen twice in one section
  (names compared lower-cased): configparser's ``strict`` mode, so that a forgotten second
  ``conninfo`` cannot silently win.  These are reported at once, at the repeated line; the
  other errors are reported once the file is read, at the first bad line (configparser's
  order, so the line named is the one configparser names);
* options of a section named ``"\\0"`` (configparser's default section here) are defaults:
  every section lists them first, its own values overriding them.
"""

from __future__ import annotations

# mypy reads this name as typing.TYPE_CHECKING (importing typing costs the restore client ~6 ms)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: The name of configparser's default section as the loader configured it.
DEFAULT_SECTION = "\0"


class IniError(ValueError):
    """The text is not an INI file: ``str()`` names the line (1-based) and the reason.

    The line's text is kept in ``line`` but never put in the message: it may hold a password
    (``conninfo = ... password=...`` before any section header), and configuration errors
    reach logs, PostgreSQL's among them.
    """

    def __init__(self, lineno: int, line: str, reason: str) -> None:
        self.lineno = lineno
        self.line = line
        self.reason = reason
        super().__init__(f"line {lineno}: {reason}")


def parse_ini(lines: Iterable[str]) -> dict[str, dict[str, str]]:
    """Parse ``lines`` (as iterating a text file yields them) into ``{section: {option: value}}``.

    Sections and options keep the order of their first appearance.  Raise :class:`IniError`
    for the line that configparser would reject (see the module docstring for which).
    """
    sections: dict[str, dict[str, list[str]]] = {}
    defaults: dict[str, list[str]] = {}
    current: dict[str, list[str]] | None = None
    current_name = ""
    value: list[str] | None = None  # the lines of the option being read, for continuations
    indent = 0  # indentation of the line that opened the current option
    header_lines: dict[str, int] = {}
    option_lines: dict[tuple[str, str], int] = {}
    deferred: IniError | None = None  # the first non-fatal error, raised at the end
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text[0] in "#;":
            if not text and value is not None:
                value.append("")  # an empty line inside a value (a comment line is not)
            continue
        level = len(line) - len(line.lstrip())
        if value is not None and level > indent:
            value.append(text)
            continue
        indent = level
        if text[0] == "[":
            end = text.rfind("]")
            if end >= 2:
                name = text[1:end]
                if name == DEFAULT_SECTION:
                    current = defaults
                else:
                    if name in header_lines:
                        raise IniError(
                            lineno,
                            line,
                            f"section [{name}] appears twice (first on line {header_lines[name]})",
                        )
                    header_lines[name] = lineno
                    current = sections[name] = {}
                current_name = name
                value = None
                continue
        if current is None:
            raise IniError(lineno, line, "text before the first [section] header")
        delimiter = _first_delimiter(text)
        if delimiter < 0:
            deferred = deferred or IniError(
                lineno, line, "neither a [section] header nor 'option = value'"
            )
            continue
        option = text[:delimiter].rstrip().lower()
        first = option_lines.setdefault((current_name, option), lineno)
        if first != lineno:
            raise IniError(
                lineno,
                line,
                f"option '{option}' appears twice in section [{current_name}] (first on "
                f"line {first})",
            )
        if delimiter == 0:
            deferred = deferred or IniError(lineno, line, "an option without a name")
            value = None
            continue
        value = [text[delimiter + 1 :].strip()]
        current[option] = value
    if deferred is not None:
        raise deferred
    joined_defaults = _join(defaults)
    result: dict[str, dict[str, str]] = {}
    for name, options in sections.items():
        own = _join(options)
        result[name] = {**joined_defaults, **own} if joined_defaults else own
    return result


def read_ini(path: str) -> dict[str, dict[str, str]]:
    """Parse the UTF-8 file ``path`` (universal newlines, as ``open`` reads text)."""
    with open(path, encoding="utf-8") as handle:
        return parse_ini(handle)


def _first_delimiter(text: str) -> int:
    """Index of the first ``=`` or ``:`` in ``text``, -1 if neither is there."""
    equal = text.find("=")
    colon = text.find(":")
    if equal < 0:
        return colon
    if colon < 0:
        return equal
    return min(equal, colon)


def _join(options: dict[str, list[str]]) -> dict[str, str]:
    """Value lines joined by newlines, without the trailing empty lines."""
    return {name: "\n".join(lines).rstrip() for name, lines in options.items()}
