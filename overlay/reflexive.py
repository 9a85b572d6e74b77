"""Pure. Where this node can be reached: its own socket's addresses, what its peers see, and its NAT.

Every directly linked peer tells us the endpoint it sees our packets come from (in ``Hello`` and
``Pong``); STUN servers, when configured, say the same. These observations feed a ``nat.NatObserver``,
which finds our public (server-reflexive) endpoints without any STUN server, classifies the NAT's
mapping (none, endpoint-independent, dependent) and the usual port step of a sequential symmetric NAT.
From that ``nat.gather`` ranks the candidates a connect-to-me advertises: host endpoints first (a peer
on the same LAN reaches them), then reflexive ones, then predicted ports where prediction can help.

Filtering cannot be seen from peers we talk to; it stays ``unknown`` unless a STUN server that supports
RFC 5780 answered a CHANGE-REQUEST (then the NAT type reads full, addr or port, as in the NAT lab).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from nat import (
    FilteringBehaviour,
    MappingBehaviour,
    NatObserver,
    NatProfile,
    endpoints,
    format_endpoint,
    gather,
)

from .events import Endpoint

log = logging.getLogger(__name__)

MAX_CANDIDATES = 8
"""Candidates offered to a peer (the wire's limit): every one costs probes in every punch."""

DEPENDENT_REFLEXIVE = 2
"""Behind a dependent (symmetric) mapping every peer sees another port and none of them will be used
for a new peer; the two newest are still advertised, as the lab's ``symr`` NAT sometimes reuses one."""

_WILDCARDS = ("0.0.0.0", "::")


class Reflexive:
    __slots__ = ("_cached", "_cached_revision", "_now", "local", "log_prefix", "observer", "stun_filtering")

    def __init__(self, local_endpoints: tuple[Endpoint, ...], log_prefix: str = "") -> None:
        self.local = tuple(ep for ep in local_endpoints if ep[0] not in _WILDCARDS)
        self.observer = NatObserver(self.local)
        self.log_prefix = log_prefix
        self._now = 0.0
        self._cached: tuple[Endpoint, ...] | None = None
        self._cached_revision = -1
        """The observer's revision that ``_cached`` was ranked from: a keepalive that changes nothing
        the ranking reads keeps it (re-ranking on every Pong was 7 % of a mass join's time)."""
        self.stun_filtering: str | None = None

    def observed(
        self, peer: int, peer_endpoint: Endpoint | None, endpoint: Endpoint | None, now: float
    ) -> None:
        """``peer``, whom we reach directly at ``peer_endpoint``, sees this node at ``endpoint``."""
        if endpoint is None or peer_endpoint is None:
            return
        self._now = now
        # No per-observation label (``peer=``): nothing reads it, and a string for each of a node's
        # tens of observers is memory the simulator multiplies by N; the peer's endpoint names it.
        for change in self.observer.observe(peer_endpoint, endpoint, now):
            log.info(
                "%s public endpoint %s -> %s (%s)", self.log_prefix, change.old, change.new, change.reason
            )

    def stun_observed(self, server: Endpoint, mapped: Endpoint, now: float) -> None:
        """A STUN server at ``server`` sees us at ``mapped``: an observation like a peer's."""
        self._now = now
        for change in self.observer.observe(server, mapped, now, peer=f"stun {format_endpoint(server)}"):
            log.info(
                "%s public endpoint %s -> %s (%s)", self.log_prefix, change.old, change.new, change.reason
            )
        self._cached = None

    def stun_filtering_result(self, behaviour: FilteringBehaviour) -> None:
        """What the RFC 5780 checks against a STUN server show of our NAT's filtering so far."""
        if behaviour is not FilteringBehaviour.UNKNOWN:
            self.observer.record_filtering(behaviour)
            self.stun_filtering = behaviour.value
            self._cached = None

    def profile(self, now: float | None = None) -> NatProfile:
        return self.observer.profile(self._now if now is None else now)

    def behind_nat(self) -> bool:
        """Unless peers see our socket at its own address: a pre-punch is worth sending."""
        return self.observer.mapping(self._now) is not MappingBehaviour.NONE

    def mapping(self) -> MappingBehaviour:
        """Our NAT's mapping behaviour as far as peers' observations show it so far."""
        return self.observer.mapping(self._now)

    def likely_independent(self) -> bool:
        """Our mapping is endpoint-independent or none, as far as we know or can guess: known so, or
        still unknown (one peer has seen us) while every public endpoint seen keeps our own port.
        Linux's masquerade keeps the port whenever it can; a fully random symmetric NAT practically
        never does (1 in 64,000), so a port that moved says little and counts as not independent."""
        mapping = self.mapping()
        if mapping in (MappingBehaviour.NONE, MappingBehaviour.ENDPOINT_INDEPENDENT):
            return True
        if mapping is not MappingBehaviour.UNKNOWN:
            return False
        public = self.observer.public_endpoints(self._now)
        ports = {port for _, port in self.local}
        return bool(public) and all(port in ports for _, port in public)

    def mapping_dependent(self) -> bool:
        """Peers see us at a different public port per destination (a symmetric NAT), as far as we
        know: then our advertised endpoint is not where the peer's probes must go (see ``punching``)."""
        return self.observer.mapping(self._now) in (
            MappingBehaviour.ADDRESS_DEPENDENT,
            MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT,
        )

    def candidates(self) -> tuple[Endpoint, ...]:
        """Host endpoints, then reflexive ones (a few only behind a dependent mapping), then predicted."""
        self.observer.mapping(self._now)  # expires what is too old first, which bumps the revision
        if self._cached is None or self._cached_revision != self.observer.revision:
            self._cached_revision = self.observer.revision
            profile = self.profile()
            public = profile.public
            if profile.mapping in (
                MappingBehaviour.ADDRESS_DEPENDENT,
                MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT,
            ):
                public = public[:DEPENDENT_REFLEXIVE]
                profile = replace(profile, public=public)
            ranked = gather(self.local, (), profile=profile)
            self._cached = endpoints(ranked)[:MAX_CANDIDATES]
        return self._cached

    def status(self) -> dict[str, Any]:
        profile = self.profile()
        out: dict[str, Any] = profile.as_dict()
        out["reflexive"] = [format_endpoint(e) for e in profile.public]
        out["candidates"] = [format_endpoint(e) for e in self.candidates()]
        return out
