"""The scheduler: time order, ties in insertion order, lazy cancellation, stopping, and misuse."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay import Scheduler


def test_events_run_in_time_order_and_move_the_clock() -> None:
    s = Scheduler()
    seen: list[tuple[str, float]] = []
    s.call_at(3.0, lambda: seen.append(("c", s.now)))
    s.call_at(1.0, lambda: seen.append(("a", s.now)))
    s.call_later(2.0, lambda: seen.append(("b", s.now)))
    assert s.run_until(10.0) is False
    assert seen == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert s.now == 10.0
    assert s.events == 3


def test_ties_run_in_insertion_order_without_comparing_actions() -> None:
    class Uncomparable:
        """An action that fails loudly if the heap ever compares it."""

        def __init__(self, tag: int, log: list[int]) -> None:
            self.tag, self.log = tag, log

        def __call__(self) -> None:
            self.log.append(self.tag)

        def __lt__(self, other: object) -> bool:
            raise AssertionError("the heap compared two actions")

    s = Scheduler()
    log: list[int] = []
    for tag in range(50):
        s.call_at(5.0, Uncomparable(tag, log))
    s.run_until(5.0)
    assert log == list(range(50))


def test_actions_get_their_arguments_and_may_schedule_more() -> None:
    s = Scheduler()
    log: list[tuple[str, int, float]] = []

    def tick(name: str, n: int) -> None:
        log.append((name, n, s.now))
        if n < 3:
            s.call_later(0.5, tick, name, n + 1)

    s.call_at(1.0, tick, "t", 0)
    s.run_until(100.0)
    assert log == [("t", 0, 1.0), ("t", 1, 1.5), ("t", 2, 2.0), ("t", 3, 2.5)]


def test_events_due_exactly_at_the_horizon_run_and_later_ones_wait() -> None:
    s = Scheduler()
    log: list[float] = []
    s.call_at(2.0, lambda: log.append(2.0))
    s.call_at(2.000001, lambda: log.append(2.000001))
    s.run_until(2.0)
    assert log == [2.0]
    assert s.pending == 1
    s.run_until(3.0)
    assert log == [2.0, 2.000001]


def test_cancel_is_lazy_and_cancelled_events_do_not_count() -> None:
    s = Scheduler()
    log: list[str] = []
    keep = s.call_at(1.0, lambda: log.append("keep"))
    drop = s.call_at(1.0, lambda: log.append("drop"))
    s.cancel(drop)
    assert s.pending == 2  # still on the heap until it surfaces
    assert s.next_time() == 1.0
    s.run_until(2.0)
    assert log == ["keep"]
    assert s.events == 1
    assert s.pending == 0
    assert keep != drop


def test_next_time_skips_cancelled_entries() -> None:
    s = Scheduler()
    s.cancel(s.call_at(1.0, lambda: None))
    s.call_at(4.0, lambda: None)
    assert s.next_time() == 4.0
    s.run_until(4.0)
    assert s.next_time() is None


def test_an_action_may_cancel_a_later_one() -> None:
    s = Scheduler()
    log: list[str] = []
    later = s.call_at(2.0, lambda: log.append("later"))
    s.call_at(1.0, lambda: s.cancel(later))
    s.run_until(3.0)
    assert log == []


def test_stop_predicate_is_checked_before_and_between_events() -> None:
    s = Scheduler()
    count = [0]

    def bump() -> None:
        count[0] += 1

    for t in range(1, 11):
        s.call_at(float(t), bump)
    assert s.run_until(100.0, stop=lambda: count[0] >= 4) is True
    assert count[0] == 4
    assert s.now == 4.0  # the clock stays at the event that satisfied the predicate
    assert s.run_until(100.0, stop=lambda: True) is True  # already true: nothing runs
    assert count[0] == 4
    assert s.run_for(96.0) is False
    assert count[0] == 10
    assert s.now == 100.0


def test_step_runs_one_event_at_a_time() -> None:
    s = Scheduler()
    log: list[int] = []
    s.call_at(1.0, log.append, 1)
    s.call_at(0.5, log.append, 0)
    assert s.step() is True
    assert (log, s.now) == ([0], 0.5)
    assert s.step() is True
    assert (log, s.now) == ([0, 1], 1.0)
    assert s.step() is False
    assert s.now == 1.0
    assert s.events == 2


def test_misuse_raises() -> None:
    s = Scheduler(start=10.0)
    with pytest.raises(ValueError):
        s.call_at(9.0, lambda: None)
    with pytest.raises(ValueError):
        s.call_later(-1.0, lambda: None)
    with pytest.raises(ValueError):
        s.run_until(5.0)

    def reenter() -> None:
        s.run_until(20.0)

    s.call_at(11.0, reenter)
    with pytest.raises(RuntimeError):
        s.run_until(12.0)
    # A failed action leaves the scheduler usable.
    s.call_at(12.0, lambda: None)
    assert s.run_until(13.0) is False


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=20), st.booleans()),
        max_size=60,
    )
)
def test_property_order_is_time_then_insertion_and_cancelled_never_run(
    plan: list[tuple[int, bool]],
) -> None:
    s = Scheduler()
    ran: list[int] = []
    handles = [s.call_at(t / 4, ran.append, i) for i, (t, _cancel) in enumerate(plan)]
    for handle, (_t, cancel) in zip(handles, plan, strict=True):
        if cancel:
            s.cancel(handle)
    s.run_until(10.0)
    expected = sorted((t, i) for i, (t, cancel) in enumerate(plan) if not cancel)
    assert ran == [i for _t, i in expected]
    assert s.events == len(expected)


class _OneHeap:
    """The reference: every pending entry in one heap of ``(time, seq)``, as the scheduler was before
    it became a calendar."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0

    def call_at(self, when: float, action: Callable[..., None], *args: Any) -> int:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, action, args))
        return self._seq

    def call_later(self, delay: float, action: Callable[..., None], *args: Any) -> int:
        return self.call_at(self.now + delay, action, *args)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, until: float) -> bool:
        while self._heap and self._heap[0][0] <= until:
            when, _, action, args = heapq.heappop(self._heap)
            self.now = when
            action(*args)
        self.now = until
        return False


def _replay(s: Any, plan: list[tuple[int, int]], stops: list[int]) -> list[tuple[float, int]]:
    """Run ``plan`` (times in 1/8192 s, up to eight per bucket; each action may schedule one more after
    a delay) on ``s``, stopping at ``stops`` after a look ahead with ``next_time`` and adding an event due
    at once each time; what ran, in order."""
    ran: list[tuple[float, int]] = []
    later = [1000]

    def act(tag: int, delay: int) -> None:
        ran.append((s.now, tag))
        if delay >= 0:
            later[0] += 1
            s.call_later(delay / 8192, act, later[0], -1)

    for i, (t, delay) in enumerate(plan):
        s.call_at(t / 8192, act, i, delay)
    for stop in sorted(stops):
        s.next_time()  # the calendar may move on to a bucket later than the clock's
        s.run_until(max(s.now, stop / 8192))
        s.call_at(s.now, act, 5000 + stop, -1)
    s.run_until(1.0)
    return ran


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=4000), st.integers(min_value=-1, max_value=40)),
        max_size=80,
    ),
    st.lists(st.integers(min_value=0, max_value=4000), max_size=6),
)
def test_property_the_calendar_runs_exactly_as_one_heap_would(
    plan: list[tuple[int, int]], stops: list[int]
) -> None:
    """Entries a fraction of a bucket apart, actions that schedule into the bucket being drained and the
    next ones, runs that end mid-bucket after looking ahead: the same events at the same times in the
    same order as with one heap of every entry."""
    assert _replay(Scheduler(), plan, stops) == _replay(_OneHeap(), plan, stops)
