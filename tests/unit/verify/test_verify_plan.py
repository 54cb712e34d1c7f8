"""Which segments a recovery reads across timelines (pure)."""

from __future__ import annotations

from walvault.verify.plan import Leg, Step, chain_of, expected_name, path_steps, reachable_targets
from walvault.wal.history import parse_history

MIB = 1 << 20
# 1 MiB segments: timeline 2 forked from 1 at 0/5000A0 (inside segment 5); 3 from 2 at
# 0/800000 (a segment boundary); 4 from 1 at 0/300100, before anything else
HISTORIES = {
    2: parse_history("1\t0/5000A0\tno recovery target specified\n", timeline=2),
    3: parse_history("1\t0/5000A0\tx\n2\t0/800000\ty\n", timeline=3),
    4: parse_history("1\t0/300100\tpitr\n", timeline=4),
}


def names(steps: list[Step]) -> list[str]:
    return [s.name for s in steps]


def test_chain_of_lists_the_legs_oldest_first() -> None:
    assert chain_of(1, HISTORIES) == [Leg(1, None, None)]
    assert chain_of(3, HISTORIES) == [
        Leg(1, None, 0x5000A0),
        Leg(2, 0x5000A0, 0x800000),
        Leg(3, 0x800000, None),
    ]


def test_reachable_targets_leave_out_forks_before_the_start() -> None:
    timelines = {1, 2, 3, 4}
    assert reachable_targets(1, 0x200028, timelines, HISTORIES) == [1, 2, 3, 4]
    # a backup at 0/400028 on timeline 1 is after timeline 4's fork (0/300100)
    assert reachable_targets(1, 0x400028, timelines, HISTORIES) == [1, 2, 3]
    assert reachable_targets(2, 0x600028, timelines, HISTORIES) == [2, 3]
    assert reachable_targets(3, 0x900028, timelines, HISTORIES) == [3]


def test_the_switch_segment_is_read_from_the_child() -> None:
    legs = chain_of(3, HISTORIES)
    steps = path_steps(legs, 0x300028, MIB, "00000003000000000000000A")
    assert names(steps) == [
        "000000010000000000000003",
        "000000010000000000000004",
        "000000020000000000000005",  # holds timeline 1's WAL up to 0/5000A0, then 2's
        "000000020000000000000006",
        "000000020000000000000007",
        "000000030000000000000008",  # the fork is on the boundary: 8 is already timeline 3's
        "000000030000000000000009",
        "00000003000000000000000A",
    ]
    assert [s.last for s in steps] == [False] * 7 + [True]
    assert expected_name(legs, 4, MIB) == "000000010000000000000004"
    assert expected_name(legs, 5, MIB) == "000000020000000000000005"
    assert expected_name(legs, 8, MIB) == "000000030000000000000008"


def test_a_start_after_a_switch_skips_the_parent() -> None:
    legs = chain_of(2, HISTORIES)
    steps = path_steps(legs, 0x500100, MIB, "000000020000000000000006")
    assert names(steps) == ["000000020000000000000005", "000000020000000000000006"]


def test_nothing_archived_on_the_target_yet_ends_with_the_parent() -> None:
    steps = path_steps(chain_of(2, HISTORIES), 0x300028, MIB, None)
    assert names(steps) == ["000000010000000000000003", "000000010000000000000004"]
    assert steps[-1].last


def test_a_timeline_followed_alone() -> None:
    steps = path_steps(chain_of(1, HISTORIES), 0x300028, MIB, "000000010000000000000006")
    assert names(steps) == [f"00000001000000000000000{i}" for i in range(3, 7)]
