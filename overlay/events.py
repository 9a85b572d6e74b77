"""Pure. What the overlay core tells the layers above it, and the seam they use to send.

The overlay core (``OverlayNode``) is a sans-IO object: datagrams in, datagrams and events out. Events
are frozen, slotted dataclasses drained with ``next_event()``. Layers above the overlay (the DHT, the
ipop node) see the overlay only through :class:`Router` and these events, which is what lets the DHT be
tested against a scripted router and run unchanged on the simulator and on real UDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from .address import Address

Endpoint = tuple[str, int]
"""An underlay UDP endpoint: (IPv4 or IPv6 address text, port)."""

Transmit = tuple[bytes, Endpoint, int]
"""A datagram to send: (payload, destination, IP TTL or 0 for the system default). A small TTL is used
to open one's own NAT mapping without the packet reaching the peer's NAT (see ``nat``)."""


class MayFragment(bytes):
    """A datagram the driver sends with fragmentation allowed (DF off), as a ``Transmit``'s payload.

    A real node sets DF on every datagram for the path MTU search, but only the data plane sizes its
    datagrams to the path. An overlay control message or a DHT message (up to 4 kB: a sync answer, a
    push, a get reply with several values) larger than the link's confirmed size would be dropped by a
    hop with a smaller MTU (or refused by the interface), and so would each resend. The core marks such
    a datagram; everywhere else it is plain bytes (the simulator has no MTU)."""

    __slots__ = ()


class Service(IntEnum):
    """Which layer a routed message belongs to. 0-15 are the overlay's own."""

    OVERLAY = 0
    TUNNEL = 1
    ECHO = 2
    """Measurement traffic (the simulator's routing samples): delivered like any message, but it never
    counts towards traffic-driven shortcuts, so measuring routes does not change them."""
    DHT = 16
    IPOP = 17
    IPOP_CONTROL = 18


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message for this node. ``exact`` is False when it was routed to the node closest to
    ``dest`` (a DHT key position) rather than to this node's own address."""

    src: Address
    dest: Address
    service: int
    payload: bytes
    hops: int
    exact: bool


@dataclass(frozen=True, slots=True)
class Undeliverable:
    """A message this node sent could not reach ``dest``: no node has that address (``no_route``), the
    hop limit ran out (``hop_limit``), or this node has no links yet (``not_joined``)."""

    dest: Address
    service: int
    reason: str


@dataclass(frozen=True, slots=True)
class LinkUp:
    peer: Address
    kinds: frozenset[str]
    path: str


@dataclass(frozen=True, slots=True)
class LinkDown:
    peer: Address
    reason: str


@dataclass(frozen=True, slots=True)
class NeighboursChanged:
    """This node's view of its ring neighbourhood changed; nearest first on each side."""

    left: tuple[Address, ...]
    right: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class JoinStateChanged:
    """``state`` is one of ``bootstrapping``, ``joining``, ``joined``, ``isolated``; ``detail`` says
    why, for the log and ``ipop status`` (e.g. every bootstrap peer unreachable, retry in 8 s)."""

    state: str
    detail: str


OverlayEvent = Delivered | Undeliverable | LinkUp | LinkDown | NeighboursChanged | JoinStateChanged


class Router(Protocol):
    """What a layer above needs from the overlay to send messages and to know its ring position."""

    @property
    def address(self) -> Address: ...

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
        """Route ``payload`` to the node whose address is ``dest`` (``exact``) or to the node closest
        to ``dest`` (``exact=False``; may be this node itself, which then gets a ``Delivered``).
        ``detour``: the resend of a message that went unanswered; its first hop is another linked
        peer closer to ``dest`` than this node, when there is one, instead of the closest one, which
        may have died unnoticed (see ``Routing.detour_link``)."""
        ...

    def ring_neighbours(self) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
        """The linked ring neighbours (left, right), nearest first."""
        ...
