"""Ring arithmetic and the connection table's ring views and greedy next hop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from overlay import RING, Address, closer, ring_distance
from overlay.table import ConnectionTable, Link

addrs = st.integers(min_value=0, max_value=RING - 1)


@given(addrs, addrs)
def test_ring_distance_symmetric_and_bounded(a: int, b: int) -> None:
    assert ring_distance(a, b) == ring_distance(b, a) <= RING // 2
    assert (ring_distance(a, b) == 0) == (a == b)


@given(addrs, addrs, addrs)
def test_closer_is_a_strict_total_order(target: int, a: int, b: int) -> None:
    if a != b:
        assert closer(target, a, b) != closer(target, b, a)
    assert not closer(target, a, a)


def _table(me: int, peers: list[int]) -> ConnectionTable:
    table = ConnectionTable(Address(me))
    for p in dict.fromkeys(peers):
        if p != me:
            table.add(Link(Address(p), 0.0))
    return table


@given(addrs, st.lists(addrs, min_size=1, max_size=40), addrs)
def test_closest_matches_brute_force(me: int, peers: list[int], target: int) -> None:
    table = _table(me, peers)
    if not len(table):
        return
    best = min(table.links, key=lambda p: (ring_distance(target, p), (p - target) % RING))
    assert table.closest(target) == best


@given(addrs, st.lists(addrs, min_size=2, max_size=40), addrs)
def test_closest_with_exclusion_matches_brute_force(me: int, peers: list[int], target: int) -> None:
    table = _table(me, peers)
    if len(table) < 2:
        return
    excluded = sorted(table.links)[0]
    rest = [p for p in table.links if p != excluded]
    best = min(rest, key=lambda p: (ring_distance(target, p), (p - target) % RING))
    assert table.closest(target, exclude=excluded) == best


@given(addrs, st.lists(addrs, max_size=40), st.integers(1, 5))
def test_left_and_right_are_nearest_first(me: int, peers: list[int], k: int) -> None:
    table = _table(me, peers)
    others = sorted(table.links, key=lambda p: (p - me) % RING)
    assert table.right(k) == others[:k]
    assert table.left(k) == sorted(table.links, key=lambda p: (me - p) % RING)[:k]


def test_remove_keeps_ring_sorted() -> None:
    table = _table(50, [10, 20, 30, 70, 90])
    table.remove(Address(30))
    assert table.addresses() == [10, 20, 70, 90]
    assert table.right(2) == [70, 90]
    assert table.left(2) == [20, 10]
