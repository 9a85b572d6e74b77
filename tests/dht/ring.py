"""A scripted ring: a test double of the overlay's ``Router`` seam for running many ``DhtNode``s.

It is the "perfect ring" of the brief, with knobs for the imperfections that matter to the DHT:

* routing with global knowledge: a message to a position goes to the closest *routable* node, one to
  an address to that node only; every message takes a seeded random latency;
* loss: a global loss rate and a scripted ``drop`` predicate;
* abrupt deaths: a killed node receives nothing and runs no timers from that instant, but stays
  routable (messages to it vanish) until ``detect_s`` later, when the ring forgets it and its
  neighbours get ``NeighboursChanged`` — as the real overlay notices a dead link only after probes;
* joins: a joiner is routable at once and every node whose neighbourhood changed is told at once.

Time is virtual: a heap of ``(time, seq, action)``; nothing sleeps. The same seed gives the same run.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from dht import DhtConfig, DhtEvent, DhtNode, OpCompleted, OpId, OpResult
from overlay import Address, Delivered, Identity, NeighboursChanged, distance_key


class RingRouter:
    """One node's ``Router``: hands every send to the ring."""

    def __init__(self, ring: Ring, address: Address) -> None:
        self._ring = ring
        self._address = address

    @property
    def address(self) -> Address:
        return self._address

    def send(
        self,
        dest: Address,
        service: int,
        payload: bytes,
        now: float,
        *,
        exact: bool = True,
        detour: bool = False,
    ) -> None:
        self._ring.route(self._address, dest, service, payload, exact)

    def ring_neighbours(self) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
        return self._ring.view_of(self._address)


@dataclass
class Member:
    identity: Identity
    node: DhtNode
    results: dict[OpId, OpResult] = field(default_factory=dict)
    events: list[DhtEvent] = field(default_factory=list)
    view: tuple[tuple[Address, ...], tuple[Address, ...]] = ((), ())
    timer_at: float | None = None
    timer_gen: int = 0

    @property
    def address(self) -> Address:
        return self.identity.address


Drop = Callable[[Address, Address, bytes], bool]
"""(src, dest, payload) -> True to lose this message."""


class Ring:
    def __init__(
        self,
        config: DhtConfig,
        seed: int,
        *,
        latency: tuple[float, float] = (0.01, 0.05),
        loss: float = 0.0,
        near: int = 2,
        detect_s: float = 3.0,
    ) -> None:
        self.config = config
        self.rng = Random(seed)
        self.latency = latency
        self.loss = loss
        self.near = near
        self.detect_s = detect_s
        self.drop: Drop | None = None
        self.on_event: Callable[[Member, DhtEvent], object] | None = None
        """Called with every event a node emits, after the ring recorded it (a runtime's drain)."""
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.members: dict[Address, Member] = {}
        """Live nodes."""
        self.routable: list[Address] = []
        """Sorted addresses the ring routes to: live nodes and dead ones not yet detected."""
        self.sent = 0
        self.lost = 0

    # -- membership -----------------------------------------------------------------------------

    def new_member(self) -> Member:
        identity = Identity.generate(self.rng)
        router = RingRouter(self, identity.address)
        node = DhtNode(router, identity, self.config, Random(self.rng.getrandbits(64)))
        return Member(identity, node)

    def add(self, count: int = 1) -> list[Member]:
        """Start ``count`` nodes and tell everyone whose neighbourhood changed."""
        added = [self.new_member() for _ in range(count)]
        for m in added:
            self.members[m.address] = m
            self.routable.append(m.address)
        self.routable.sort()
        self._update_views()
        return added

    def kill(self, address: Address) -> None:
        """An abrupt death: no goodbye. The ring notices ``detect_s`` later."""
        del self.members[address]

        def forget() -> None:
            self.routable.remove(address)
            self._update_views()

        self.at(self.now + self.detect_s, forget)

    def view_of(self, address: Address) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
        ring = self.routable
        others = len(ring) - (address in ring)
        if not others:
            return (), ()
        n = min(self.near, others)
        i = bisect.bisect_right(ring, address)
        right = [a for a in (ring[(i + k) % len(ring)] for k in range(n + 1)) if a != address][:n]
        j = bisect.bisect_left(ring, address)
        left = [a for a in (ring[(j - 1 - k) % len(ring)] for k in range(n + 1)) if a != address][:n]
        return tuple(left), tuple(right)

    def _update_views(self) -> None:
        for m in list(self.members.values()):
            view = self.view_of(m.address)
            if view != m.view:
                m.view = view
                m.node.handle_neighbours(NeighboursChanged(*view), self.now)
                self._after(m)

    def closest(self, position: int, among: list[Address] | None = None) -> Address:
        if among is not None:
            return min(among, key=lambda a: distance_key(position, a))
        ring = self.routable  # sorted: the closest is one of the two around the position
        i = bisect.bisect_left(ring, position)
        return min((ring[i % len(ring)], ring[i - 1]), key=lambda a: distance_key(position, a))

    # -- messages -------------------------------------------------------------------------------

    def route(self, src: Address, dest: Address, service: int, payload: bytes, exact: bool) -> None:
        self.sent += 1
        target = dest if exact else self.closest(dest)
        if (exact and dest not in self.routable) or self.rng.random() < self.loss:
            self.lost += 1
            return
        if self.drop is not None and self.drop(src, target, payload):
            self.lost += 1
            return
        delay = self.rng.uniform(*self.latency)

        def deliver() -> None:
            member = self.members.get(target)
            if member is None:
                self.lost += 1
                return
            event = Delivered(src, dest, service, payload, hops=1, exact=exact)
            member.node.handle_delivered(event, self.now)
            self._after(member)

        self.at(self.now + delay, deliver)

    # -- time -----------------------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), action))

    def _after(self, m: Member) -> None:
        """Drain the node's events and re-arm its timer, as a runtime does after every call."""
        while (event := m.node.next_event()) is not None:
            m.events.append(event)
            if isinstance(event, OpCompleted):
                m.results[event.op_id] = event.result
            if self.on_event is not None:
                self.on_event(m, event)
        when = m.node.get_timer()
        if when is None or when == m.timer_at:
            return
        m.timer_at = when
        m.timer_gen += 1
        gen = m.timer_gen

        def fire() -> None:
            if self.members.get(m.address) is not m or m.timer_gen != gen:
                return
            m.timer_at = None
            m.node.handle_timer(self.now)
            self._after(m)

        self.at(when, fire)

    def poke(self, m: Member) -> None:
        """After calling into a node directly (starting an operation)."""
        self._after(m)

    def run_until(self, t: float, stop: Callable[[], bool] | None = None) -> None:
        while self._heap and self._heap[0][0] <= t:
            when, _, action = heapq.heappop(self._heap)
            self.now = when
            action()
            if stop is not None and stop():
                return
        self.now = max(self.now, t)

    def run(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # -- operations -----------------------------------------------------------------------------

    def start(self, m: Member, call: Callable[[DhtNode, float], OpId]) -> OpId:
        op_id = call(m.node, self.now)
        self.poke(m)
        return op_id

    def wait(self, m: Member, op_id: OpId, timeout: float = 30.0) -> OpResult:
        self.run_until(self.now + timeout, stop=lambda: op_id in m.results)
        assert op_id in m.results, f"operation {op_id} of {m.address:x} undecided after {timeout} s"
        return m.results[op_id]

    def do(self, m: Member, call: Callable[[DhtNode, float], OpId], timeout: float = 30.0) -> OpResult:
        return self.wait(m, self.start(m, call), timeout)

    def settled_with_records(self, nodes: int, keys: list[bytes]) -> None:
        """Start ``nodes`` nodes, let them settle, store each key (value ``key + b"!"``, an hour, no
        refresh) from the members in turn, and let the copies settle too."""
        self.add(nodes)
        self.run(3)
        for i, key in enumerate(keys):
            m = self.members[sorted(self.members)[i % nodes]]
            self.do(m, lambda n, t, k=key: n.put(k, k + b"!", 3600, t, refresh=False))
        self.run(3)

    def random_member(self) -> Member:
        return self.members[self.rng.choice(sorted(self.members))]

    def add_near(self, position: int) -> Member:
        """Start a node that becomes the closest to ``position`` (a joiner that takes over a key's
        position): identities are drawn until one lands closer than every routable node."""
        best = self.closest(position)
        while True:
            m = self.new_member()
            if distance_key(position, m.address) < distance_key(position, best):
                break
        self.members[m.address] = m
        self.routable.append(m.address)
        self.routable.sort()
        self._update_views()
        return m
