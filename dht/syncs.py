"""Pure. The two waits that follow a change of neighbourhood, kept apart from the rest of replication.

When a node gains a neighbour, it asks it to *sync* ("send me the positions I should hold"): until every
such answer arrived, or ``sync_timeout_s`` passed, the node is not ready for writes (see
:mod:`dht.replication`). That is the first wait, :attr:`SyncWaits.asked`.

The second is the other direction: the new neighbour asks us the same, and our answer carries every
position it should hold by our view. Pushing them on sight as well sent most of them twice, so we push
a new neighbour nothing until its request arrived or ``sync_timeout_s`` passed (it may not count us as
its neighbour, or its request was lost): :meth:`SyncWaits.holding`. A peer whose request came before
our view counted it (views change at slightly different moments) is not waited for.

A request may be lost on the way, and so may an empty answer (an answer carrying records is a push
batch, resent until acknowledged): an unanswered request is sent again every ``resend_s`` until its
wait ends. Without that, a node whose request was lost waited out the timeout and became ready by
giving up, at the moment its neighbour's own pushes (held for the request until then) were only
leaving: gets in between found its positions empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overlay import Address


@dataclass(slots=True)
class _Asked:
    peer: Address
    deadline: float
    resend_at: float
    parts: int = 0
    seen: set[int] = field(default_factory=set)


class SyncWaits:
    def __init__(self, timeout: float, resend_s: float) -> None:
        self.timeout = timeout
        self.resend_s = resend_s
        self.asked: dict[int, _Asked] = {}
        """Our sync requests without a complete answer: sync id -> the neighbour asked."""
        self._holding: dict[Address, float] = {}
        """New neighbours we push nothing to until they ask, with the end of the wait."""
        self._asked_by: dict[Address, float] = {}
        """When each peer last asked us to sync."""

    def joined(self, peer: Address, sync_id: int, now: float) -> None:
        """``peer`` became our neighbour and we ask it to sync with ``sync_id``."""
        self.asked[sync_id] = _Asked(peer, now + self.timeout, now + self.resend_s)
        if self._asked_by.get(peer, -1.0) < now - self.timeout:
            self._holding[peer] = now + self.timeout

    def left(self, peer: Address) -> None:
        for sync_id in [i for i, w in self.asked.items() if w.peer == peer]:
            del self.asked[sync_id]
        self._holding.pop(peer, None)

    def ready(self, now: float) -> bool:
        """False while a new neighbour may still be sending us positions we should hold."""
        return not any(w.deadline > now for w in self.asked.values())

    def holding(self, peer: Address) -> bool:
        """Whether pushes to ``peer`` wait for its sync request."""
        return peer in self._holding

    def request(self, peer: Address, now: float) -> bool:
        """``peer`` asked us to sync; True when pushes to it were held until now."""
        self._asked_by[peer] = now
        return self._holding.pop(peer, None) is not None

    def answer(self, peer: Address, sync_id: int, part: int, parts: int) -> bool:
        """A part of ``peer``'s answer to our request ``sync_id``; True when it completes it."""
        wait = self.asked.get(sync_id) if sync_id else None
        if wait is None or wait.peer != peer:
            return False
        wait.parts = parts
        wait.seen.add(part)
        if len(wait.seen) < wait.parts:
            return False
        del self.asked[sync_id]
        return True

    def expire(self, now: float) -> tuple[list[Address], list[Address]]:
        """End the waits that are due: (neighbours that never answered our request, neighbours that
        never asked: push them now)."""
        silent = [w.peer for w in self.asked.values() if w.deadline <= now]
        self.asked = {i: w for i, w in self.asked.items() if w.deadline > now}
        late = [peer for peer, deadline in self._holding.items() if deadline <= now]
        for peer in late:
            del self._holding[peer]
        return silent, late

    def resends(self, now: float) -> list[tuple[int, Address]]:
        """The requests to send again now, as (sync id, neighbour); each is due again ``resend_s``
        later."""
        due = []
        for sync_id, wait in self.asked.items():
            if wait.resend_at <= now < wait.deadline:
                wait.resend_at = now + self.resend_s
                due.append((sync_id, wait.peer))
        return due

    def next_deadline(self) -> float | None:
        times = [min(w.deadline, w.resend_at) for w in self.asked.values()] + list(self._holding.values())
        return min(times, default=None)

    def sweep(self, now: float) -> None:
        old = now - self.timeout
        self._asked_by = {p: t for p, t in self._asked_by.items() if t >= old}
