"""Pure. Resync by digest: at a periodic resync, tell a neighbour which versions of which positions we
hold, and push only those it does not hold in the same version.

Why. A resync (every ``resync_interval_s``) forgets which versions the neighbours hold and pushes every
position again, to repair copies lost without a trace. In a quiet ring nearly all of it is wasted: at
N = 300 with churn (S = 84 s), 57 % of all record pushes were resyncs of records the neighbour already
held. A digest entry is a 20-byte position and a 64-bit :func:`~dht.store.digest_of` its statements,
about 32 bytes against ~200 for a pushed record.

How. The replicator hands :meth:`DigestExchange.ask` the positions a resync would push to one
neighbour, with our digests; they leave as :class:`~dht.codec.Digest` messages within the size limit.
The neighbour answers with the positions it holds in the same version (:func:`same_versions`); we
count those as held and push the rest in full. A digest that gets no answer within
``push_timeout_s`` (lost, or the neighbour died) falls back to pushing its positions in full, as
before. While a position's digest is in flight to a neighbour, the replicator pushes it no other way
to that neighbour (:meth:`DigestExchange.in_flight`), so no position is pushed twice. A write that
changes such a position meanwhile reaches that neighbour when the answer comes (it no longer matches
our digest, so it is pushed): one round trip later, or ``push_timeout_s`` if the answer was lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from overlay import Address

from .codec import DIGEST_ENTRY_BYTES, POSITION_BYTES, Digest, DigestReply
from .config import DhtConfig
from .store import Store

DIGEST_HEADROOM = 32
"""Bytes of a digest message besides its entries: version, type, request id and array headers."""


@dataclass(slots=True)
class _Wait:
    target: Address
    positions: list[tuple[Address, int]]
    deadline: float


class DigestExchange:
    """Digests in flight, per neighbour; see the module docstring."""

    def __init__(self, config: DhtConfig, new_id: Callable[[], int]) -> None:
        self.config = config
        self._new_id = new_id
        self._waits: dict[int, _Wait] = {}
        self._flying: dict[Address, dict[Address, int]] = {}
        """Per neighbour, the positions whose digest awaits its answer (with the number of waits)."""
        self.per_message = max(1, (config.max_message_bytes - DIGEST_HEADROOM) // DIGEST_ENTRY_BYTES)

    def ask(self, target: Address, positions: Sequence[tuple[Address, int]], now: float) -> list[Digest]:
        """The digest messages to send ``target`` for ``positions`` (position, our digest)."""
        messages = []
        flying = self._flying.setdefault(target, {})
        for start in range(0, len(positions), self.per_message):
            chunk = list(positions[start : start + self.per_message])
            req_id = self._new_id()
            self._waits[req_id] = _Wait(target, chunk, now + self.config.push_timeout_s)
            for pos, _digest in chunk:
                flying[pos] = flying.get(pos, 0) + 1
            messages.append(Digest(req_id, tuple((p.to_bytes(POSITION_BYTES, "big"), d) for p, d in chunk)))
        return messages

    def in_flight(self, target: Address, pos: Address) -> bool:
        return pos in self._flying.get(target, {})

    def answered(
        self, src: Address, reply: DigestReply
    ) -> tuple[list[tuple[Address, int]], list[Address]] | None:
        """The positions ``src`` holds in our version (with it) and those it does not; None for an
        answer we did not ask for."""
        wait = self._waits.get(reply.req_id)
        if wait is None or wait.target != src:
            return None
        del self._waits[reply.req_id]
        self._land(wait)
        same = set(reply.same)
        held = [pd for n, pd in enumerate(wait.positions) if n in same]
        lacking = [pos for n, (pos, _d) in enumerate(wait.positions) if n not in same]
        return held, lacking

    def expired(self, now: float) -> list[tuple[Address, list[Address]]]:
        """Waits that ended unanswered: (neighbour, positions to push it in full)."""
        late = []
        for req_id in [i for i, w in self._waits.items() if w.deadline <= now]:
            wait = self._waits.pop(req_id)
            self._land(wait)
            late.append((wait.target, [pos for pos, _d in wait.positions]))
        return late

    def forget(self, peer: Address) -> None:
        """``peer`` left our neighbourhood: nothing more to push it."""
        for req_id in [i for i, w in self._waits.items() if w.target == peer]:
            del self._waits[req_id]
        self._flying.pop(peer, None)

    def clear(self) -> None:
        self._waits.clear()
        self._flying.clear()

    def next_deadline(self) -> float | None:
        return min((w.deadline for w in self._waits.values()), default=None)

    def _land(self, wait: _Wait) -> None:
        flying = self._flying.get(wait.target, {})
        for pos, _digest in wait.positions:
            left = flying.get(pos, 0) - 1
            if left > 0:
                flying[pos] = left
            else:
                flying.pop(pos, None)
        if not flying:
            self._flying.pop(wait.target, None)


def same_versions(store: Store, digest: Digest, now: float) -> list[tuple[int, Address, int]]:
    """The positions of ``digest`` that ``store`` holds in the same version, each as (its number in
    ``digest``, the position, the version). A position we do not hold is never "the same", even if its
    digest is that of nothing."""
    same = []
    for n, (raw, theirs) in enumerate(digest.positions):
        pos = Address(int.from_bytes(raw, "big"))
        if pos in store and store.digest(pos, now) == theirs:
            same.append((n, pos, theirs))
    return same
