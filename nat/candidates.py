"""Pure. ICE-like candidates (RFC 8445 section 5.1): the endpoints at which a peer may reach us, ranked.

A node advertises, best first: its host endpoints (a peer on the same LAN reaches them directly), its
server-reflexive endpoints (what overlay peers or STUN servers see), and, behind a symmetric NAT with a
sequential allocator, *predicted* endpoints: the ports its NAT will probably hand out next (Brunet's
port prediction; RFC 8445 leaves this out, Tailscale's "hard NAT" probing does a brute-force version).
Peer-reflexive candidates are learned during punching from where a peer's probe really came from.

Priorities follow RFC 8445 section 5.1.2.1: ``2**24 * type preference + 2**8 * local preference + (256 -
component)`` with the recommended type preferences; the overlay carries the ranked endpoint list in its
handshake, so the peer's punch session probes in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .behaviour import MappingBehaviour, NatProfile
from .common import Endpoint, canonical

MAX_CANDIDATES = 8
"""Endpoints advertised (the overlay's wire limit): two host addresses, a reflexive one and a few
predictions cover every case the lab shows; more only lengthens every punch."""

DEFAULT_PREDICTIONS = 4
"""Predicted ports advertised behind a sequential symmetric NAT: the next few allocations, since other
flows may take one or two ports between our observation and the punch."""


class CandidateKind(StrEnum):
    HOST = "host"
    SERVER_REFLEXIVE = "srflx"
    PEER_REFLEXIVE = "prflx"
    PREDICTED = "predicted"
    RELAYED = "relay"


TYPE_PREFERENCE: dict[CandidateKind, int] = {
    CandidateKind.HOST: 126,
    CandidateKind.PEER_REFLEXIVE: 110,
    CandidateKind.SERVER_REFLEXIVE: 100,
    CandidateKind.PREDICTED: 50,
    CandidateKind.RELAYED: 0,
}
"""RFC 8445 section 5.1.2.2 recommended values; a prediction is a guess, so it ranks below every
observed endpoint and above a relay."""


def priority(kind: CandidateKind, local_preference: int = 65535, component: int = 1) -> int:
    """RFC 8445 section 5.1.2.1 candidate priority."""
    if not 0 <= local_preference <= 65535 or not 1 <= component <= 256:
        raise ValueError("local preference is 0-65535, component 1-256")
    return (TYPE_PREFERENCE[kind] << 24) + (local_preference << 8) + (256 - component)


def pair_priority(controlling: int, controlled: int) -> int:
    """RFC 8445 section 6.1.2.3: the priority of a candidate pair, the same number on both sides."""
    g, d = controlling, controlled
    return (min(g, d) << 32) + 2 * max(g, d) + (1 if g > d else 0)


@dataclass(frozen=True, slots=True)
class Candidate:
    endpoint: Endpoint
    kind: CandidateKind
    priority: int


def predict_ports(base: Endpoint, delta: int, count: int = DEFAULT_PREDICTIONS) -> list[Endpoint]:
    """The next ``count`` endpoints a sequential allocator would hand out after ``base`` (ports wrap
    within 1024-65535, the range NATs allocate from)."""
    host, port = base
    out: list[Endpoint] = []
    for k in range(1, count + 1):
        p = port + k * delta
        p = 1024 + (p - 1024) % (65536 - 1024)
        out.append((host, p))
    return out


def gather(
    host: Iterable[Endpoint],
    reflexive: Iterable[Endpoint] = (),
    *,
    profile: NatProfile | None = None,
    predictions: int = DEFAULT_PREDICTIONS,
    limit: int = MAX_CANDIDATES,
) -> list[Candidate]:
    """Our candidates, best first, duplicates removed (a public node's reflexive endpoint is its host
    endpoint). Reflexive endpoints come from ``reflexive`` and, if given, ``profile.public``; predicted
    ones are added when the profile shows a dependent mapping with a regular port step."""
    out: list[Candidate] = []
    seen: set[Endpoint] = set()

    def add(endpoint: Endpoint, kind: CandidateKind, local_pref: int) -> None:
        ep = canonical(endpoint)
        if ep not in seen:
            seen.add(ep)
            out.append(Candidate(ep, kind, priority(kind, max(0, local_pref))))

    for i, ep in enumerate(host):
        add(ep, CandidateKind.HOST, 65535 - i)
    refl = list(reflexive) + (list(profile.public) if profile else [])
    for i, ep in enumerate(refl):
        add(ep, CandidateKind.SERVER_REFLEXIVE, 65535 - i)
    if (
        profile is not None
        and profile.port_delta
        and profile.public
        and profile.mapping
        in (MappingBehaviour.ADDRESS_DEPENDENT, MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT)
    ):
        # Under a dependent mapping every reflexive endpoint has the support of one peer, so the profile
        # lists the most recent first: the allocation to predict from.
        for i, ep in enumerate(predict_ports(profile.public[0], profile.port_delta, predictions)):
            add(ep, CandidateKind.PREDICTED, 65535 - i)
    out.sort(key=lambda c: -c.priority)
    return out[:limit]


def endpoints(candidates: Sequence[Candidate]) -> tuple[Endpoint, ...]:
    """The ranked endpoint list to advertise (what the overlay's handshake carries)."""
    return tuple(c.endpoint for c in sorted(candidates, key=lambda c: -c.priority))
