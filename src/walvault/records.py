"""``NamedTuple`` for modules on the restore path, without importing :mod:`typing` at run time.

PostgreSQL runs the restore client once per WAL segment, and ``import typing`` costs that
client about 6 ms (typing imports ``re``, which imports ``enum``, ``functools`` ...): a
sixth of a whole call.  The configuration, the WAL names and the archive layout describe
their records as ``class X(NamedTuple)``; they import that name from here.

For mypy this *is* :class:`typing.NamedTuple` (the ``TYPE_CHECKING`` branch).  At run time
it is a small metaclass that turns the same class body into a :func:`collections.namedtuple`
with the annotated fields, their defaults, and the class's methods, properties and
docstring: what ``typing.NamedTuple`` builds, for the subset walvault uses (no generics).
tests/unit/test_records.py holds the two to the same behaviour.
"""

from __future__ import annotations

# mypy reads this name as typing.TYPE_CHECKING (importing typing is what this module avoids).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    from collections import namedtuple

    # what typing.NamedTuple refuses in a class body, and what it takes from it itself
    _PROHIBITED = frozenset(
        {
            "__new__",
            "__init__",
            "__slots__",
            "__getnewargs__",
            "_fields",
            "_field_defaults",
            "_make",
            "_replace",
            "_asdict",
            "_source",
        }
    )
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__", "__qualname__"})

    class _RecordMeta(type):
        def __new__(
            mcls, typename: str, bases: tuple[type, ...], namespace: dict[str, object]
        ) -> type:
            if namespace.get("_root", False):  # NamedTuple itself
                return super().__new__(mcls, typename, bases, namespace)
            if bases != (NamedTuple,):
                raise TypeError(f"{typename}: a NamedTuple can inherit from NamedTuple only")
            annotations = namespace.get("__annotations__", {})
            fields = list(annotations)
            defaults: list[object] = []
            for field in fields:
                if field in namespace:
                    defaults.append(namespace[field])
                elif defaults:
                    raise TypeError(
                        f"{typename}: field {field} without a default follows fields with one"
                    )
            record = namedtuple(
                typename, fields, defaults=defaults, module=namespace.get("__module__")
            )
            record.__annotations__ = dict(annotations)
            record.__qualname__ = namespace.get("__qualname__", typename)
            for key, value in namespace.items():
                if key in _PROHIBITED:
                    raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
                if key in _SPECIAL or key in annotations:
                    continue
                setattr(record, key, value)
                set_name = getattr(type(value), "__set_name__", None)
                if set_name is not None:
                    set_name(value, record, key)
            return record

    class NamedTuple(metaclass=_RecordMeta):
        """Base of walvault's records at run time (see the module's docstring)."""

        _root = True
