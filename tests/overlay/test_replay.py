"""The anti-replay window: exact acceptance rules against a reference model that remembers every
counter, and the memory property that in-order traffic keeps the bitmap empty."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import REPLAY_WINDOW, ReplayWindow


class ReferenceWindow:
    """Obviously correct and unbounded: a set of every counter accepted."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.top = 0

    def fresh(self, counter: int) -> bool:
        return counter >= 1 and counter not in self.seen and counter > self.top - REPLAY_WINDOW

    def mark(self, counter: int) -> None:
        self.seen.add(counter)
        self.top = max(self.top, counter)


def test_in_order_counters_are_accepted_once_and_keep_the_bitmap_empty() -> None:
    window = ReplayWindow()
    for counter in range(1, 5000):
        assert window.could_be_fresh(counter)
        assert window.mark(counter)
        assert not window.could_be_fresh(counter)
        assert not window.mark(counter)
    assert window.holes == 0
    assert window.top == 4999


def test_counter_zero_is_never_fresh() -> None:
    window = ReplayWindow()
    assert not window.could_be_fresh(0)
    assert window.why_stale(0) == "replay"
    window.mark(10)
    assert not window.could_be_fresh(0)


def test_reordering_within_the_window_is_accepted_and_older_is_refused() -> None:
    window = ReplayWindow()
    window.mark(5000)
    oldest_allowed = 5000 - REPLAY_WINDOW + 1
    assert window.could_be_fresh(oldest_allowed)
    assert window.mark(oldest_allowed)
    assert not window.could_be_fresh(oldest_allowed)
    assert window.why_stale(oldest_allowed) == "replay"
    assert not window.could_be_fresh(oldest_allowed - 1)
    assert window.why_stale(oldest_allowed - 1) == "too_old"
    assert not window.mark(oldest_allowed - 1)
    assert window.mark(4999)
    assert window.mark(5001)
    assert not window.could_be_fresh(4999)


def test_a_jump_beyond_the_window_leaves_every_counter_inside_it_open() -> None:
    window = ReplayWindow()
    window.mark(1)
    window.mark(10 * REPLAY_WINDOW)
    assert not window.could_be_fresh(1)
    for counter in range(10 * REPLAY_WINDOW - REPLAY_WINDOW + 1, 10 * REPLAY_WINDOW):
        assert window.could_be_fresh(counter)
    assert not window.could_be_fresh(10 * REPLAY_WINDOW)


def test_the_window_handles_the_largest_counters() -> None:
    window = ReplayWindow()
    top = 2**64 - 2
    assert window.mark(top)
    assert not window.could_be_fresh(top)
    assert window.mark(top - 1)
    assert not window.could_be_fresh(top - REPLAY_WINDOW)


def test_checking_does_not_move_the_window() -> None:
    window = ReplayWindow()
    window.mark(100)
    for counter in (1, 99, 100, 101, 10**12):
        window.could_be_fresh(counter)
    assert (window.top, window.holes) == (100, (1 << 100) - 2)


counters = st.one_of(
    st.integers(min_value=0, max_value=3 * REPLAY_WINDOW),
    st.integers(min_value=0, max_value=2**64 - 1),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(counters, st.booleans()), max_size=300))
def test_the_window_agrees_with_the_reference_model(ops: list[tuple[int, bool]]) -> None:
    """``authentic`` False stands for a forgery: the window is consulted but never marked."""
    window, model = ReplayWindow(), ReferenceWindow()
    for counter, authentic in ops:
        expected = model.fresh(counter)
        assert window.could_be_fresh(counter) == expected
        if expected and authentic:
            assert window.mark(counter)
            model.mark(counter)
        assert window.holes >> REPLAY_WINDOW == 0


@given(st.lists(st.integers(min_value=1, max_value=4 * REPLAY_WINDOW), max_size=400))
def test_marking_agrees_with_the_reference_model(sequence: list[int]) -> None:
    window, model = ReplayWindow(), ReferenceWindow()
    for counter in sequence:
        expected = model.fresh(counter)
        assert window.mark(counter) == expected
        if expected:
            model.mark(counter)


def test_the_holes_of_the_window_are_the_paths_recent_loss() -> None:
    window = ReplayWindow()
    assert window.missing() == (0, 0)
    for counter in range(1, 101):
        if counter % 5:  # every fifth datagram lost
            window.mark(counter)
    assert window.missing() == (19, 99)  # 5 ... 95 missing below the top (99); 100 was lost too
    window.mark(95)
    assert window.missing() == (18, 99)  # a late arrival fills its hole
    window.mark(100 + REPLAY_WINDOW + 10)  # a jump past the window: everything in it missing
    assert window.missing() == (REPLAY_WINDOW - 1, REPLAY_WINDOW)
