"""Pure. The discrete-event scheduler: a virtual clock and a heap of ``(time, seq, action, args)``.

Theory of operation
-------------------
Simulated time only moves when the scheduler pops an event: ``now`` jumps to the event's time, the
action runs, and whatever it schedules goes back on the heap. Nothing waits in real time, so a
simulation runs as fast as the actions themselves allow, and a run is a pure function of what was
scheduled (and of the seeded randomness the actions use).

Every entry carries a sequence number drawn from one counter. Two events at the same time therefore
run in the order they were scheduled, and the heap never compares two actions (callables have no
order, and comparing them would make the order depend on memory addresses).

Cancellation is lazy: :meth:`Scheduler.cancel` records the entry's sequence number, and the entry is
discarded when it reaches the top of the heap. Components that re-arm one timer over and over (a
simulated host re-arms its core's timer after almost every datagram) do better still: they keep a
generation number, pass it as the action's argument, and ignore a firing whose generation is stale, so
the scheduler never has to remember anything (see ``host.py``).

States: the scheduler is *idle* between calls and *running* inside :meth:`run_until` or :meth:`step`.
Actions may schedule and cancel while it runs; calling ``run_until`` or ``step`` from inside an action
is misuse and raises, because it would let time run ahead under the caller's feet.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

logger = logging.getLogger(__name__)

Action = Callable[..., None]
"""Something to run at a given time, with the positional arguments it was scheduled with."""


class Scheduler:
    """A virtual clock and an event heap. ``now`` starts at ``start`` (seconds)."""

    __slots__ = ("_cancelled", "_counter", "_heap", "_running", "events", "now")

    def __init__(self, start: float = 0.0) -> None:
        self.now: float = start
        """The current simulated time in seconds; only the scheduler moves it."""
        self.events: int = 0
        """How many actions have run (cancelled entries do not count)."""
        self._heap: list[tuple[float, int, Action, tuple[Any, ...]]] = []
        self._counter = itertools.count()
        self._cancelled: set[int] = set()
        self._running = False

    def call_at(self, when: float, action: Action, *args: Any) -> int:
        """Run ``action(*args)`` at simulated time ``when``; returns a handle for :meth:`cancel`.
        Scheduling in the past is a bug in the caller and raises."""
        if when < self.now:
            raise ValueError(f"cannot schedule at {when!r}, before now ({self.now!r})")
        seq = next(self._counter)
        heappush(self._heap, (when, seq, action, args))
        return seq

    def call_later(self, delay: float, action: Action, *args: Any) -> int:
        """Run ``action(*args)`` ``delay`` seconds from now (``delay`` >= 0)."""
        if delay < 0:
            raise ValueError(f"negative delay {delay!r}")
        seq = next(self._counter)
        heappush(self._heap, (self.now + delay, seq, action, args))
        return seq

    def cancel(self, handle: int) -> None:
        """Forget a scheduled action; its entry is dropped lazily when it surfaces. Handles are never
        reused, so cancelling an action that already ran is harmless (but keeps its handle in memory:
        cancel only what is still pending)."""
        self._cancelled.add(handle)

    @property
    def pending(self) -> int:
        """Entries on the heap, cancelled ones included until they surface."""
        return len(self._heap)

    def next_time(self) -> float | None:
        """The time of the next live event, or None if there is none."""
        heap, cancelled = self._heap, self._cancelled
        while heap and heap[0][1] in cancelled:
            cancelled.discard(heappop(heap)[1])
        return heap[0][0] if heap else None

    def step(self) -> bool:
        """Run the next live event. Returns False (and leaves ``now`` alone) when there is none."""
        self._enter()
        try:
            heap, cancelled = self._heap, self._cancelled
            while heap:
                when, seq, action, args = heappop(heap)
                if cancelled and seq in cancelled:
                    cancelled.discard(seq)
                    continue
                self.now = when
                self.events += 1
                action(*args)
                return True
            return False
        finally:
            self._running = False

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> bool:
        """Run every event due at or before ``until``, then set ``now`` to ``until``.

        With ``stop``, the predicate is checked before the first event and after each one; when it
        holds the run ends at once, ``now`` stays at the last event's time, and True is returned.
        Returns False when ``until`` was reached."""
        if until < self.now:
            raise ValueError(f"cannot run until {until!r}, before now ({self.now!r})")
        self._enter()
        heap, cancelled = self._heap, self._cancelled
        try:
            if stop is not None and stop():
                return True
            while heap and heap[0][0] <= until:
                when, seq, action, args = heappop(heap)
                if cancelled and seq in cancelled:
                    cancelled.discard(seq)
                    continue
                self.now = when
                self.events += 1
                action(*args)
                if stop is not None and stop():
                    return True
            self.now = until
            return False
        finally:
            self._running = False

    def run_for(self, duration: float, stop: Callable[[], bool] | None = None) -> bool:
        """:meth:`run_until` ``now + duration``."""
        return self.run_until(self.now + duration, stop)

    def _enter(self) -> None:
        if self._running:
            raise RuntimeError("the scheduler is already running; an action may not run it again")
        self._running = True
