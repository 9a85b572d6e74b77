"""Pure. A DHT on every node of a simulated overlay: ``DhtSim`` stacks a :class:`~dht.node.DhtNode` on
each member of an :class:`overlay.Cluster` and drives it as the ipop runtime drives the real one.

Theory of operation. The cluster calls ``on_event`` with every overlay event of every member, from
inside that member's host *settle* (``overlay.SimHost``), so whatever the DHT sends while handling
the event leaves with the settle under way. The first event of a member attaches a ``DhtNode`` to it
(lazily: ``Cluster.add_node`` drains a new node's first events before it returns, so there is no
earlier moment to attach). Then

    Delivered(service DHT)  -> DhtNode.handle_delivered      (messages routed to this node, and
                                                              those it sent to a position it is
                                                              closest to itself)
    NeighboursChanged       -> DhtNode.handle_neighbours
    its timer is due        -> DhtNode.handle_timer, then the host is poked so the sends leave

and after every call into the node the sim *settles* it: it drains the node's events (an
``OpCompleted`` goes to the ``done`` callback its operation was started with; ``OwnershipLost`` is
counted) and re-arms its timer on the cluster's scheduler. Timers are cancelled lazily by generation,
as ``SimHost`` does for the overlay core: a re-arm bumps the generation and a stale firing does
nothing. A member killed through :meth:`DhtSim.kill` (or found dead when its timer fires) loses its
DHT with its host: a crash forgets everything, and its operations never complete.

Each member's DHT: *attached* from its first event until its host dies, then *gone*. The sim reads no
clock and takes its randomness from one seed, so a run is a function of the cluster's seed and ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from random import Random

from overlay import Address, Cluster, Delivered, Member, NeighboursChanged, Router, Service, key_address

from .config import DhtConfig
from .events import OpCompleted, OpId, OpResult
from .node import DhtNode
from .record import Kind
from .stats import DhtStats

log = logging.getLogger(__name__)

Done = Callable[[OpResult], None]
"""Called with an operation's result, inside a settle of the node that ran it."""

Call = Callable[[DhtNode, float], OpId]
"""Starts one operation on a node at ``now``: ``lambda node, now: node.get(key, now)``."""


class CountingRouter:
    """The overlay node as the DHT's :class:`~overlay.Router`, counting what the DHT sends (messages
    and payload bytes, before the overlay's headers and per-hop forwarding)."""

    __slots__ = ("_overlay", "bytes", "messages")

    def __init__(self, overlay: Router) -> None:
        self._overlay = overlay
        self.messages = 0
        self.bytes = 0

    @property
    def address(self) -> Address:
        return self._overlay.address

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
        self.messages += 1
        self.bytes += len(payload)
        self._overlay.send(dest, service, payload, now, exact=exact, detour=detour)

    def ring_neighbours(self) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
        return self._overlay.ring_neighbours()


@dataclass(slots=True)
class SimDht:
    """The DHT of one cluster member."""

    member: Member
    node: DhtNode
    router: CountingRouter
    timer_at: float | None = None
    gen: int = 0
    done: dict[OpId, Done] = field(default_factory=dict)

    @property
    def address(self) -> Address:
        return self.node.address


class DhtSim:
    """DHT nodes on every member of ``cluster``; see the module docstring."""

    def __init__(self, cluster: Cluster, config: DhtConfig | None = None, *, seed: int = 0) -> None:
        if cluster.on_event is not None:
            raise ValueError("the cluster already has an event consumer")
        self.cluster = cluster
        self.config = config or DhtConfig()
        self.rng = Random(cluster.seed * 7919 + seed)
        self.nodes: dict[Address, SimDht] = {}
        self.ownership_lost = 0
        """``OwnershipLost`` events seen (a created record that a refresh found held by another)."""
        self.retired = DhtStats()
        """The counters of members that died, so that :meth:`stats` covers the whole run."""
        self._retired_traffic = (0, 0)
        cluster.on_event = self._on_event
        for member in cluster.live():
            self._attach(member)

    # -- members ----------------------------------------------------------------------------------

    def _attach(self, member: Member) -> SimDht:
        overlay = member.node
        router = CountingRouter(overlay)
        node = DhtNode(router, overlay.identity, self.config, Random(self.rng.getrandbits(64)))
        sd = SimDht(member, node, router)
        self.nodes[node.address] = sd
        left, right = overlay.ring_neighbours()
        if left or right:
            node.handle_neighbours(NeighboursChanged(left, right), self.cluster.now)
            self._settle(sd)
        return sd

    def add_node(self) -> SimDht:
        """Start an overlay node (through the cluster's bootstrap peers) with its DHT."""
        member = self.cluster.add_node()
        sd = self.nodes.get(member.node.address)
        return sd if sd is not None else self._attach(member)

    def kill(self, address: Address) -> None:
        """The node crashes: its host vanishes without a word and its DHT state is gone."""
        sd = self.nodes.pop(address, None)
        if sd is None:
            return
        self._retire(sd)
        self.cluster.kill(sd.member)

    def _retire(self, sd: SimDht) -> None:
        sd.gen += 1
        sd.done.clear()
        mine, total = sd.node.stats.as_dict(), self.retired
        for name, value in mine.items():
            setattr(total, name, getattr(total, name) + value)
        msgs, octets = self._retired_traffic
        self._retired_traffic = (msgs + sd.router.messages, octets + sd.router.bytes)

    def __iter__(self) -> Iterator[SimDht]:
        return iter(list(self.nodes.values()))

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, address: Address) -> SimDht | None:
        return self.nodes.get(address)

    # -- operations -------------------------------------------------------------------------------

    def start(self, address: Address, call: Call, done: Done | None = None) -> OpId:
        """Start an operation on a live member's DHT now; ``done`` gets its result (never, if the
        member dies first). May be called from a ``done`` callback."""
        sd = self.nodes[address]
        op_id = call(sd.node, self.cluster.now)
        if done is not None:
            sd.done[op_id] = done
        self._settle(sd)
        sd.member.host.poke()
        return op_id

    # -- driving the nodes ------------------------------------------------------------------------

    def _on_event(self, member: Member, event: object) -> None:
        address = member.node.address
        sd = self.nodes.get(address)
        if sd is None:
            if not member.host.alive:
                return
            sd = self._attach(member)
        if isinstance(event, Delivered):
            if event.service != Service.DHT:
                return
            sd.node.handle_delivered(event, self.cluster.now)
        elif isinstance(event, NeighboursChanged):
            sd.node.handle_neighbours(event, self.cluster.now)
        else:
            return
        self._settle(sd)

    def _settle(self, sd: SimDht) -> None:
        node = sd.node
        while (event := node.next_event()) is not None:
            if isinstance(event, OpCompleted):
                done = sd.done.pop(event.op_id, None)
                if done is not None:
                    done(event.result)
            else:
                self.ownership_lost += 1
                log.info("%x lost %r to another owner", node.address, event.key)
        when = node.get_timer()
        if when != sd.timer_at:
            sd.timer_at = when
            sd.gen += 1
            if when is not None:
                scheduler = self.cluster.scheduler
                scheduler.call_at(max(when, scheduler.now), self._fire, sd, sd.gen)

    def _fire(self, sd: SimDht, gen: int) -> None:
        if gen != sd.gen:
            return
        if not sd.member.host.alive:  # killed through the cluster, not through us
            if self.nodes.get(sd.address) is sd:
                del self.nodes[sd.address]
                self._retire(sd)
            return
        sd.timer_at = None
        sd.node.handle_timer(self.cluster.now)
        self._settle(sd)
        sd.member.host.poke()

    # -- what an observer with global knowledge can see ---------------------------------------------

    def stats(self) -> DhtStats:
        """Counters summed over every DHT node of the run, dead ones included."""
        total = DhtStats(**self.retired.as_dict())
        for sd in self.nodes.values():
            for name, value in sd.node.stats.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def traffic(self) -> tuple[int, int]:
        """DHT messages and payload bytes sent by every DHT node of the run so far, dead ones included
        (each routed message counts once, however many hops it takes)."""
        msgs, octets = self._retired_traffic
        for sd in self.nodes.values():
            msgs += sd.router.messages
            octets += sd.router.bytes
        return msgs, octets

    def holders(self, key: bytes, index: int) -> list[Address]:
        """Live nodes whose store has a live entry at position ``index`` of ``key``."""
        pos = key_address(key, index)
        now = self.cluster.now
        return [a for a, sd in self.nodes.items() if sd.node.store.live_size(pos, now) > 0]

    def positions_holding(self, key: bytes, value: bytes, owner: bytes) -> int:
        """Of the key's R positions, how many have a live copy of ``owner``'s ``value`` on at least
        one live node: a value held at fewer than a majority of positions cannot be read."""
        now = self.cluster.now
        count = 0
        for index in range(self.config.replicas):
            pos = key_address(key, index)
            for sd in self.nodes.values():
                if any(
                    h.record.value == value and h.record.owner == owner and h.record.kind.is_value
                    for h in sd.node.store.read(pos, now, reservations=False)
                ):
                    count += 1
                    break
        return count

    def owners_of(self, key: bytes) -> set[bytes]:
        """Owners of a live created record of ``key`` anywhere in the overlay (two would be a
        double allocation)."""
        now = self.cluster.now
        owners: set[bytes] = set()
        for index in range(self.config.replicas):
            pos = key_address(key, index)
            for sd in self.nodes.values():
                owners.update(
                    h.record.owner
                    for h in sd.node.store.read(pos, now, reservations=False)
                    if h.record.kind is Kind.CREATE
                )
        return owners
