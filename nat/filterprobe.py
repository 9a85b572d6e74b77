"""Pure. Learning how our NAT filters inbound packets, with the help of overlay peers instead of an
RFC 5780 STUN server.

Theory of operation. Filtering is about strangers: would a packet from an endpoint our socket never sent
to reach us? Observations cannot tell (every observer is a peer we talk to), so the node asks for a
stranger's packet:

1. Node A starts a :class:`FilterProbe` for one kind of stranger and sends its :class:`FilterProbeRequest`
   to an overlay peer P over their link. The request carries A's reflexive endpoint (as P sees it), a
   random nonce, and the IP addresses A's socket has recently sent to (``avoid``).
2. P picks a helper with :func:`choose_helper`: for OTHER_ADDRESS, one of its own peers Q whose address is
   none of ``avoid``; P sends Q a :class:`FilterProbeOrder`. (OTHER_PORT needs a sender at an address A
   knows but from another port: only a helper with a second socket, such as an RFC 5780 STUN server, can
   serve it; P declines with :class:`FilterProbeDeclined` otherwise.)
3. Q sends one FILTER datagram (``nat.probe``, token = nonce) to A's reflexive endpoint.
4. A's probe ends ARRIVED if that datagram arrives before the deadline, NOT_ARRIVED at the deadline,
   DECLINED if P says no helper exists.

:func:`classify_filtering` turns results into a behaviour: a stranger at another address got through ->
endpoint-independent; it did not, but one at a known address and another port did -> address-dependent;
neither -> address-and-port-dependent; only the first failed -> "endpoint-dependent" (ADF or APDF).
States of a probe, all transitions in one place::

    WAITING --FILTER datagram with our nonce--> ARRIVED
    WAITING --deadline------------------------> NOT_ARRIVED
    WAITING --declined by P-------------------> DECLINED
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from random import Random

from .behaviour import FilteringBehaviour
from .common import Endpoint

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3.0
"""How long A waits for the stranger's packet: two overlay hops of signalling plus one underlay packet,
with room for a slow path; a lost packet reads as "filtered", which is why a result is confirmed by
:data:`CONFIRMATIONS` probes before it counts against EIF."""

CONFIRMATIONS = 2
"""Negative results needed before a filtering verdict stands: one lost packet must not label a full-cone
NAT as restrictive (at 1 % loss two misses in a row happen once in 10,000 tests)."""

MAX_AVOID = 32
"""Addresses carried in a request: a node's links and STUN servers within one NAT timeout; more would
only bloat the message (the helper's choice gets harder, not better)."""


class FilterProbeKind(StrEnum):
    OTHER_ADDRESS = "other-address"
    """A sender at an IP address our socket has not sent to: tests endpoint-independent filtering."""
    OTHER_PORT = "other-port"
    """A sender at an address we have sent to, from another port: tells ADF from APDF."""


class ProbeOutcome(Enum):
    WAITING = "waiting"
    ARRIVED = "arrived"
    NOT_ARRIVED = "not-arrived"
    DECLINED = "declined"


@dataclass(frozen=True, slots=True)
class FilterProbeRequest:
    """A -> P: have a stranger send one FILTER packet with ``nonce`` to ``target``."""

    nonce: int
    target: Endpoint
    kind: FilterProbeKind
    avoid: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FilterProbeOrder:
    """P -> Q: send one FILTER datagram with token ``nonce`` to ``target``."""

    nonce: int
    target: Endpoint


@dataclass(frozen=True, slots=True)
class FilterProbeDeclined:
    """P -> A: no suitable helper for this request."""

    nonce: int


@dataclass(frozen=True, slots=True)
class FilterProbeResult:
    kind: FilterProbeKind
    arrived: bool


class FilterProbe:
    """A's side of one peer-assisted filtering test."""

    def __init__(
        self,
        kind: FilterProbeKind,
        target: Endpoint,
        avoid: Iterable[str],
        rng: Random,
        now: float,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.request = FilterProbeRequest(
            rng.getrandbits(64), target, kind, tuple(sorted(set(avoid)))[:MAX_AVOID]
        )
        self.outcome = ProbeOutcome.WAITING
        self._deadline = now + timeout_s

    @property
    def nonce(self) -> int:
        return self.request.nonce

    @property
    def result(self) -> FilterProbeResult | None:
        """The result once known; a declined probe has none (it says nothing about the NAT)."""
        if self.outcome in (ProbeOutcome.ARRIVED, ProbeOutcome.NOT_ARRIVED):
            return FilterProbeResult(self.request.kind, self.outcome is ProbeOutcome.ARRIVED)
        return None

    def datagram_arrived(self, nonce: int, src: Endpoint, now: float) -> bool:
        """A FILTER datagram arrived; True if it was ours (the probe is then ARRIVED)."""
        if self.outcome is not ProbeOutcome.WAITING or nonce != self.request.nonce:
            return False
        if self.request.kind is FilterProbeKind.OTHER_ADDRESS and src[0] in self.request.avoid:
            log.debug("filter probe packet from %s, an address we sent to: not a stranger, ignored", src)
            return False
        self.outcome = ProbeOutcome.ARRIVED
        return True

    def declined(self, nonce: int) -> bool:
        if self.outcome is not ProbeOutcome.WAITING or nonce != self.request.nonce:
            return False
        self.outcome = ProbeOutcome.DECLINED
        return True

    def get_timer(self) -> float | None:
        return self._deadline if self.outcome is ProbeOutcome.WAITING else None

    def handle_timer(self, now: float) -> None:
        if self.outcome is ProbeOutcome.WAITING and now >= self._deadline:
            self.outcome = ProbeOutcome.NOT_ARRIVED


def choose_helper(
    request: FilterProbeRequest,
    helpers: Sequence[tuple[str, Endpoint]],
    requester: str,
    rng: Random,
) -> str | None:
    """P's decision: which of its peers (id, underlay endpoint) should send the packet. A helper must not
    be the requester and, for OTHER_ADDRESS, must sit at an address the requester has not sent to (nor
    the requester's own public address). OTHER_PORT cannot be served by an ordinary one-socket peer."""
    if request.kind is not FilterProbeKind.OTHER_ADDRESS:
        return None
    avoid = set(request.avoid) | {request.target[0]}
    eligible = sorted(pid for pid, ep in helpers if pid != requester and ep[0] not in avoid)
    return rng.choice(eligible) if eligible else None


def classify_filtering(results: Iterable[FilterProbeResult]) -> FilteringBehaviour:
    """The filtering behaviour shown by probe results. One arrival proves the packet can pass; a
    verdict against passing needs :data:`CONFIRMATIONS` misses (a lost packet also reads as a miss)."""
    arrived: dict[FilterProbeKind, bool] = {}
    misses: dict[FilterProbeKind, int] = dict.fromkeys(FilterProbeKind, 0)
    for r in results:
        if r.arrived:
            arrived[r.kind] = True
        else:
            misses[r.kind] += 1

    def verdict(kind: FilterProbeKind) -> bool | None:
        if arrived.get(kind):
            return True
        return False if misses[kind] >= CONFIRMATIONS else None

    other_address, other_port = verdict(FilterProbeKind.OTHER_ADDRESS), verdict(FilterProbeKind.OTHER_PORT)
    if other_address:
        return FilteringBehaviour.ENDPOINT_INDEPENDENT
    if other_address is None:
        return FilteringBehaviour.UNKNOWN
    if other_port:
        return FilteringBehaviour.ADDRESS_DEPENDENT
    if other_port is False:
        return FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT
    return FilteringBehaviour.ENDPOINT_DEPENDENT
