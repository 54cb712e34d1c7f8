"""A command line parsed without argparse, for the per-segment clients' common calls.

Building argparse's parser costs a client ~7 ms (argparse imports re and gettext) on every
call PostgreSQL makes.  :func:`fast_parse` handles the plain command lines from a table of
options and returns None for anything unusual (help, version, an unknown, repeated or
malformed option, a wrong number of arguments): the caller then lets argparse parse the
line and report its errors, so both paths accept exactly the same command lines.
"""

from __future__ import annotations

# ``typing`` costs ~5 ms (it imports re): mypy reads this name as typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence

#: option -> (destination, value type or None for a flag, constant for a flag)
OptionTable = dict[str, tuple[str, "type | None", object]]


class Arguments:
    """The parsed command line, with the attributes argparse would give."""

    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)


def fast_parse(
    argv: Sequence[str],
    options: OptionTable,
    defaults: Mapping[str, object],
    positionals: Sequence[str],
    *,
    once: frozenset[str] = frozenset(),
) -> argparse.Namespace | None:
    """``argv`` parsed with ``options``, or None when argparse should parse it instead.

    All of ``positionals`` must be given.  A destination in ``once`` may be set by one
    option only (argparse's mutually exclusive groups: a second one is left to argparse).
    """
    values = dict(defaults)
    given: set[str] = set()
    found: list[str] = []
    items = iter(argv)
    for arg in items:
        if not arg.startswith("-") or arg == "-":
            found.append(arg)
            continue
        option, eq, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if not eq and len(arg) > 2 and arg[1] != "-":
            option, attached, eq = arg[:2], arg[2:], "="
        spec = options.get(option)
        if spec is None:
            return None
        dest, kind, const = spec
        if dest in once and dest in given:
            return None
        given.add(dest)
        if kind is None:
            if eq:
                return None
            values[dest] = const
            continue
        raw = attached if eq else next(items, None)
        if raw is None or (not eq and raw.startswith("-")):
            return None
        try:
            values[dest] = kind(raw)
        except ValueError:
            return None
    if len(found) != len(positionals):
        return None
    values.update(zip(positionals, found, strict=True))
    parsed: argparse.Namespace = Arguments(values)  # type: ignore[assignment]
    return parsed
