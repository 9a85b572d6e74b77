"""Pure. The connection table: one :class:`Link` per peer, kept in ring order for routing.

Theory of operation. Every link has *roles* on each side: ``NEAR`` (one of the ``near_per_side``
closest nodes on either side of the ring), ``FAR`` (drawn from Symphony's harmonic distribution),
``SHORTCUT`` (opened because the two ends exchange traffic) and ``LEAF`` (a temporary link to a bootstrap
peer while joining). The two ends tell each other their roles; a link lives while either end has a role
for it, and is closed when both have none (a far link that one node drew towards another is kept by the
drawer alone).

Routing is greedy on ring distance. Among a set of points on a ring, the point closest to a target is
the first one clockwise or the first one counter-clockwise from it, so keeping peer addresses in a sorted
list makes every routing decision a binary search, whatever the number of links.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .address import RING, Address, clockwise, distance_key
from .events import Endpoint

if TYPE_CHECKING:
    from .linksession import Session

NEAR = 0x01
FAR = 0x02
SHORTCUT = 0x04
LEAF = 0x08
RELAY = 0x10
"""The link carries tunnels of others: a relay both ends of a tunnelled link reach directly."""

ROLE_NAMES = {NEAR: "near", FAR: "far", SHORTCUT: "shortcut", LEAF: "leaf", RELAY: "relay"}


def role_names(roles: int) -> frozenset[str]:
    return frozenset(name for bit, name in ROLE_NAMES.items() if roles & bit)


class Link:
    """An authenticated link to one peer. ``sessions`` holds the live key exchanges, newest last (a
    rekey or a simultaneous open briefly gives two); sending uses the newest confirmed one.

    The path is either a direct underlay ``endpoint`` or, when no direct path could be punched, a tunnel
    through the overlay: via the common neighbour ``relay`` (Brunet's tunnel edge), or greedy-routed when
    ``relay`` is ``None`` and ``endpoint`` is ``None`` too."""

    __slots__ = (
        "candidates",
        "created",
        "endpoint",
        "last_app",
        "last_rx",
        "last_tx",
        "my_roles",
        "next_check",
        "next_wake",
        "peer",
        "peer_roles",
        "probe_nonce",
        "probe_sent",
        "probe_tries",
        "relay",
        "sessions",
        "srtt",
        "told_endpoints",
        "unused_since",
    )

    def __init__(self, peer: Address, now: float) -> None:
        self.peer = peer
        self.sessions: list[Session] = []
        self.endpoint: Endpoint | None = None
        self.relay: Address | None = None
        self.my_roles = 0
        self.peer_roles = 0
        self.created = now
        self.last_rx = now
        self.last_tx = now
        self.last_app = now
        self.srtt: float | None = None
        self.probe_nonce = 0
        self.probe_sent = 0.0
        self.probe_tries = 0
        self.candidates: tuple[Endpoint, ...] = ()
        self.told_endpoints = False
        """The peer's ``Hello`` gave its candidates (see ``listed_endpoints``)."""
        self.next_check = 0.0
        self.next_wake: float | None = None
        """When the node's timer heap holds an entry for this link that will wake ``Liveness.check``
        (the earliest, if several), or None (see ``Liveness._arm``)."""
        self.unused_since: float | None = None

    @property
    def direct(self) -> bool:
        return self.endpoint is not None

    @property
    def roleless(self) -> bool:
        """Neither end has a role for this link: it is closed after a grace, or evicted first when the
        table is full (``linkcare``)."""
        return self.my_roles == 0 and self.peer_roles == 0

    def listed_endpoints(self) -> tuple[Endpoint, ...]:
        """The peer's endpoints as neighbour lists name them: the path we use first, then its own
        candidates; none until its ``Hello`` has given those. Before that we know only where its
        packets come from, which for a node behind a NAT is its router's public port alone; a node
        that heard of it would take it for a public node and handshake straight there, and on a
        router whose own stack accepts unsolicited input that packet takes the host's port, which
        Linux then gives none of the host's later flows (the NAT grid's clash pair, docs/nat.md).
        A node named without endpoints is reached by connect-to-me and punching."""
        if not self.told_endpoints:
            return ()
        first = (self.endpoint,) if self.endpoint is not None else ()
        return first + tuple(c for c in self.candidates if c != self.endpoint)

    def path_text(self) -> str:
        if self.endpoint is not None:
            return f"udp://{self.endpoint[0]}:{self.endpoint[1]}"
        if self.relay is not None:
            return f"relay:{self.relay:040x}"[:14]
        return "routed"

    def observe_rtt(self, sample: float) -> None:
        """Smoothed RTT as TCP does it (RFC 6298, alpha 1/8)."""
        self.srtt = sample if self.srtt is None else self.srtt + (sample - self.srtt) / 8


class ConnectionTable:
    """Links by peer address, plus the sorted ring of linked addresses."""

    __slots__ = ("_ring", "links", "me")

    def __init__(self, me: Address) -> None:
        self.me = me
        self.links: dict[Address, Link] = {}
        self._ring: list[int] = []

    def __len__(self) -> int:
        return len(self.links)

    def __iter__(self) -> Iterator[Link]:
        return iter(self.links.values())

    def get(self, peer: int) -> Link | None:
        return self.links.get(peer)  # type: ignore[call-overload, no-any-return]

    def add(self, link: Link) -> None:
        if link.peer in self.links:
            raise ValueError("peer already linked")
        if link.peer == self.me:
            raise ValueError("a node does not link to itself")
        self.links[link.peer] = link
        insort(self._ring, link.peer)

    def remove(self, peer: Address) -> Link | None:
        link = self.links.pop(peer, None)
        if link is not None:
            i = bisect_left(self._ring, peer)
            del self._ring[i]
        return link

    # -- ring views --------------------------------------------------------------------------------

    def right(self, count: int) -> list[Address]:
        """Up to ``count`` linked peers clockwise from this node, nearest first."""
        ring = self._ring
        n = len(ring)
        start = bisect_left(ring, self.me)
        return [Address(ring[(start + i) % n]) for i in range(min(count, n))]

    def left(self, count: int) -> list[Address]:
        """Up to ``count`` linked peers counter-clockwise from this node, nearest first."""
        ring = self._ring
        n = len(ring)
        start = bisect_left(ring, self.me)
        return [Address(ring[(start - 1 - i) % n]) for i in range(min(count, n))]

    def closest(
        self, target: int, exclude: int | None = None, avoid: set[int] | frozenset[int] = frozenset()
    ) -> Address | None:
        """The linked peer closest to ``target`` (ring distance, ties clockwise), skipping ``exclude``
        and, while any other candidate is left, the peers in ``avoid`` (suspected dead); ``None``
        without links. Only the few peers around the target on each side can be closest."""
        ring = self._ring
        n = len(ring)
        if n == 0:
            return None
        i = bisect_left(ring, target)
        if avoid:
            best = self._closest(target, exclude, avoid, (i, i + 1, i + 2, i - 1, i - 2, i - 3))
            if best is not None:
                return best
        return self._closest(target, exclude, frozenset(), (i, i + 1, i - 1, i - 2))

    def _closest(
        self, target: int, exclude: int | None, avoid: set[int] | frozenset[int], around: tuple[int, ...]
    ) -> Address | None:
        ring = self._ring
        n = len(ring)
        best: int | None = None
        best_key: tuple[int, int] | None = None
        for j in around:
            peer = ring[j % n]
            if peer == exclude or peer in avoid:
                continue
            key = distance_key(target, peer)
            if best_key is None or key < best_key:
                best, best_key = peer, key
        return None if best is None else Address(best)

    def span(self, count: int) -> int:
        """Clockwise span from the ``count``-th left peer to the ``count``-th right peer; the basis of
        the estimate of N (``count`` peers each side in that stretch of the ring)."""
        lefts, rights = self.left(count), self.right(count)
        if not lefts or not rights:
            return RING
        return clockwise(lefts[-1], rights[-1]) or RING

    def addresses(self) -> list[Address]:
        return [Address(a) for a in self._ring]
