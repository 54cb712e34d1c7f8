"""walvault.records.NamedTuple behaves as typing.NamedTuple for the class bodies walvault writes."""

from __future__ import annotations

import pickle
import typing

import pytest

from fakewal import python_stdout
from walvault import records

# the run-time class (mypy sees typing.NamedTuple under this name)
RecordBase: typing.Any = records.NamedTuple


def _pair(base: typing.Any) -> tuple[typing.Any, typing.Any]:
    class Point(base):
        """A point."""

        x: int
        y: int = 2
        tags: tuple[str, ...] = ()

        @property
        def total(self) -> int:
            return int(self.x + self.y)

        def moved(self, dx: int) -> typing.Any:
            return self._replace(x=self.x + dx)

        @classmethod
        def origin(cls) -> typing.Any:
            return cls(0, 0)

    class Point3(Point):
        __slots__ = ()

        def __new__(cls, x: int, y: int = 2) -> typing.Any:
            if x < 0:
                raise ValueError("negative")
            return super().__new__(cls, x, y)

    return Point, Point3


def test_runtime_class_is_not_typing() -> None:
    assert RecordBase is not typing.NamedTuple


@pytest.mark.parametrize("base", [typing.NamedTuple, RecordBase], ids=["typing", "records"])
def test_behaviour(base: typing.Any) -> None:
    point, point3 = _pair(base)
    p = point(1)
    assert p == (1, 2, ())
    assert p.total == 3
    assert p.moved(2) == point(3, 2)
    assert point.origin() == (0, 0, ())
    assert point._fields == ("x", "y", "tags")
    assert point._field_defaults == {"y": 2, "tags": ()}
    assert p._asdict() == {"x": 1, "y": 2, "tags": ()}
    assert repr(p) == "Point(x=1, y=2, tags=())"
    assert point.__doc__ == "A point."
    assert list(point.__annotations__) == ["x", "y", "tags"]
    assert hash(p) == hash((1, 2, ()))
    assert sorted([point(2), point(1, 5)]) == [point(1, 5), point(2)]
    with pytest.raises(AttributeError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        point()
    q = point3(4)
    assert isinstance(q, point) and isinstance(q, tuple)
    assert q.total == 6 and q.moved(1).x == 5
    with pytest.raises(ValueError):
        point3(-1)


@pytest.mark.parametrize("base", [typing.NamedTuple, RecordBase], ids=["typing", "records"])
def test_rejections(base: typing.Any) -> None:
    with pytest.raises(TypeError):

        class Bad(base):
            a: int = 1
            b: int

    with pytest.raises(AttributeError):

        class Bad2(base):
            a: int

            def _replace(self) -> None:  # type: ignore[override]
                pass


def test_records_pickle() -> None:
    from walvault.wal.names import Segment

    seg = Segment(1, 2, 3)
    assert pickle.loads(pickle.dumps(seg)) == seg


def test_importing_records_loads_no_typing() -> None:
    code = "import sys, walvault.records; print('typing' in sys.modules, 're' in sys.modules)"
    assert python_stdout(code).split() == ["False", "False"]
