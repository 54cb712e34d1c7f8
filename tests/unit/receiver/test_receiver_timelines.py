"""Timeline paths and fork points: where walvault's streamed history and the server's part."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from walvault.receiver.timelines import (
    Span,
    fork_point,
    history_path,
    path_through,
    segment_timeline,
    timeline_at,
)
from walvault.wal.history import parse_history

MB = 1 << 20


def test_path_of_a_history_file() -> None:
    entries = parse_history("1\t0/5010E40\tno recovery target specified\n2\t0/7000000\tx\n")
    path = history_path(3, entries)
    assert path == [Span(1, 0, 0x5010E40), Span(2, 0x5010E40, 0x7000000), Span(3, 0x7000000, None)]
    assert timeline_at(path, 0) == 1
    assert timeline_at(path, 0x5010E3F) == 1
    assert timeline_at(path, 0x5010E40) == 2  # a switch point belongs to the child
    assert timeline_at(path, 0x7000000) == 3
    assert timeline_at(history_path(1, []), 1 << 40) == 1


def test_the_segment_holding_a_switch_is_read_from_the_new_timeline() -> None:
    path = history_path(2, parse_history("1\t0/5010E40\tx\n"))
    assert segment_timeline(path, 4, 16 * MB) == 1
    assert segment_timeline(path, 5, 16 * MB) == 2  # 0/5000000..0/5FFFFFF holds the switch
    on_boundary = history_path(2, parse_history("1\t0/A00000\tx\n"))
    assert segment_timeline(on_boundary, 9, MB) == 1
    assert segment_timeline(on_boundary, 10, MB) == 2


def test_fork_point_of_an_ancestor_and_of_a_sibling() -> None:
    theirs = history_path(2, parse_history("1\t0/A00000\tx\n"))
    ours = path_through(theirs, 1)
    assert ours == [Span(1, 0, None)]
    assert fork_point(ours, theirs) == 0xA00000
    assert fork_point(theirs, theirs) is None
    # walvault on timeline 2 (forked at 0/9000000), the server on 3 (forked from 1 earlier)
    ours2 = history_path(2, parse_history("1\t0/9000000\tx\n"))
    theirs3 = history_path(3, parse_history("1\t0/8000000\tx\n"))
    assert path_through(theirs3, 2) is None
    assert fork_point(ours2, theirs3) == 0x8000000
    # a descendant of ours: it parts where our timeline ends in their history
    theirs4 = history_path(4, parse_history("1\t0/9000000\tx\n2\t0/C000000\tx\n"))
    assert fork_point(ours2, theirs4) == 0xC000000
    assert path_through(theirs4, 2) == [Span(1, 0, 0x9000000), Span(2, 0x9000000, None)]


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[Span]]:
    switches = sorted(draw(st.sets(st.integers(1, 1 << 40), max_size=5)))
    tlis = sorted(draw(st.sets(st.integers(1, 50), min_size=len(switches) + 1, max_size=6)))
    tlis = tlis[: len(switches) + 1]
    text = "".join(
        f"{t}\t{s >> 32:X}/{s & 0xFFFFFFFF:X}\tr\n" for t, s in zip(tlis, switches, strict=False)
    )
    return tlis[-1], history_path(tlis[-1], parse_history(text, timeline=tlis[-1]))


@given(histories(), histories(), st.integers(0, 1 << 41))
def test_fork_point_is_where_the_paths_first_disagree(
    a: tuple[int, list[Span]], b: tuple[int, list[Span]], lsn: int
) -> None:
    ours, theirs = a[1], b[1]
    fork = fork_point(ours, theirs)
    if fork is None or lsn < fork:
        assert timeline_at(ours, lsn) == timeline_at(theirs, lsn)
    else:
        assert timeline_at(ours, fork) != timeline_at(theirs, fork)
    assert fork_point(ours, ours) is None
