"""Pure. The discrete-event scheduler: a virtual clock and a calendar of ``(time, seq, action, args)``.

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

The queue is a calendar (Brown's calendar queue, in its simplest form): entries go into buckets of
``1 / SLOTS_PER_S`` simulated seconds, kept in a dict by bucket number, and a small heap holds the bucket
numbers. Only the bucket being drained is a heap of entries; the buckets further ahead are plain lists
until their turn. One heap of every pending entry did the same job, but at 10,000 simulated nodes it held
tens of thousands of entries, and each pop walked ~15 levels of tuples scattered over the process's
memory: the largest single cost of ``ipop simulate --nodes 10000`` (docs/simscale.md, phase 8). Now an
event costs an append when scheduled and a pop from a heap of one bucket (tens of entries at that size,
recently made, so in cache) when it runs; the heap of bucket numbers sees one push and one pop per
bucket, not per event. The order is exactly the old one, ``(time, seq)``: every entry in the bucket
being drained (or scheduled into it, or before it, while it drains) comes before every entry of a later
bucket, and within the drained bucket the heap orders as before. A run is therefore the same, event for
event, as with the single heap.

States: the scheduler is *idle* between calls and *running* inside :meth:`run_until` or :meth:`step`.
Actions may schedule and cancel while it runs; calling ``run_until`` or ``step`` from inside an action
is misuse and raises, because it would let time run ahead under the caller's feet.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

logger = logging.getLogger(__name__)

Action = Callable[..., None]
"""Something to run at a given time, with the positional arguments it was scheduled with."""

Entry = tuple[float, int, Action, tuple[Any, ...]]

SLOTS_PER_S = 1024
"""Buckets per simulated second (about a millisecond each): at 10,000 nodes about fifty events fall in
one, at a handful of nodes mostly one, and a network delay spans tens of them."""


class Scheduler:
    """A virtual clock and an event calendar. ``now`` starts at ``start`` (seconds)."""

    __slots__ = (
        "_buckets",
        "_cancelled",
        "_count",
        "_counter",
        "_current",
        "_key",
        "_keys",
        "_running",
        "events",
        "now",
    )

    def __init__(self, start: float = 0.0) -> None:
        self.now: float = start
        """The current simulated time in seconds; only the scheduler moves it."""
        self.events: int = 0
        """How many actions have run (cancelled entries do not count)."""
        self._current: list[Entry] = []
        """A heap of the entries of bucket ``_key`` and any earlier one: the bucket being drained."""
        self._key = int(start * SLOTS_PER_S)
        self._buckets: dict[int, list[Entry]] = {}
        """The entries of each later bucket (every one's number above ``_key``), in no order."""
        self._keys: list[int] = []
        """A heap of the numbers in ``_buckets``."""
        self._count = 0
        self._counter = itertools.count()
        self._cancelled: set[int] = set()
        self._running = False

    def call_at(self, when: float, action: Action, *args: Any) -> int:
        """Run ``action(*args)`` at simulated time ``when``; returns a handle for :meth:`cancel`.
        Scheduling in the past is a bug in the caller and raises."""
        if when < self.now:
            raise ValueError(f"cannot schedule at {when!r}, before now ({self.now!r})")
        seq = next(self._counter)
        self._put((when, seq, action, args))
        return seq

    def call_later(self, delay: float, action: Action, *args: Any) -> int:
        """Run ``action(*args)`` ``delay`` seconds from now (``delay`` >= 0)."""
        if delay < 0:
            raise ValueError(f"negative delay {delay!r}")
        seq = next(self._counter)
        self._put((self.now + delay, seq, action, args))
        return seq

    def _put(self, entry: Entry) -> None:
        self._count += 1
        key = int(entry[0] * SLOTS_PER_S)
        if key <= self._key:
            heappush(self._current, entry)
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [entry]
            heappush(self._keys, key)
        else:
            bucket.append(entry)

    def _next_bucket(self) -> bool:
        """Make the next bucket the one being drained (the current one is empty); False: none left."""
        if not self._keys:
            return False
        self._key = key = heappop(self._keys)
        self._current = current = self._buckets.pop(key)
        heapify(current)
        return True

    def cancel(self, handle: int) -> None:
        """Forget a scheduled action; its entry is dropped lazily when it surfaces. Handles are never
        reused, so cancelling an action that already ran is harmless (but keeps its handle in memory:
        cancel only what is still pending)."""
        self._cancelled.add(handle)

    @property
    def pending(self) -> int:
        """Entries in the calendar, cancelled ones included until they surface."""
        return self._count

    def next_time(self) -> float | None:
        """The time of the next live event, or None if there is none."""
        cancelled = self._cancelled
        while True:
            current = self._current
            while current and current[0][1] in cancelled:
                cancelled.discard(heappop(current)[1])
                self._count -= 1
            if current:
                return current[0][0]
            if not self._next_bucket():
                return None

    def step(self) -> bool:
        """Run the next live event. Returns False (and leaves ``now`` alone) when there is none."""
        self._enter()
        try:
            if self.next_time() is None:
                return False
            when, _, action, args = heappop(self._current)
            self._count -= 1
            self.now = when
            self.events += 1
            action(*args)
            return True
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
        cancelled = self._cancelled
        try:
            if stop is not None and stop():
                return True
            while True:
                current = self._current
                if not current:
                    if not self._keys or self._keys[0] > until * SLOTS_PER_S or not self._next_bucket():
                        break
                    continue
                if current[0][0] > until:
                    break
                when, seq, action, args = heappop(current)
                self._count -= 1
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
