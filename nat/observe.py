"""Pure. Reflexive-endpoint discovery without a STUN server: what our peers tell us about our own socket.

Theory of operation. Every overlay link handshake (and every STUN answer, if servers are configured)
yields one :class:`Observation`: "the peer that we reach at underlay endpoint E_P sees our socket at
endpoint R". Brunet built its NAT handling on exactly this (``NatHandler``: the peer's view of our
transport address). From a set of fresh observations:

* our **public endpoints** are the distinct R, ordered by how many distinct E_P report them;
* the **mapping** follows from comparing R across destinations (RFC 4787 section 4.1 / RFC 5780 4.3):
  R equal to our own socket address everywhere -> no NAT; one R for destinations on different IP
  addresses -> endpoint-independent; different R for two ports of one IP -> address-and-port-dependent;
  different R across IPs but one R across the ports of one IP -> address-dependent. Different R across
  IPs with no same-IP pair to tell the two dependent kinds apart is reported as address-and-port
  dependent, the conservative reading (ADM NATs are rare, and both need the same treatment). A Linux
  masquerade keeps the source port unless a translated tuple clashes, so one odd R among many does not
  make a NAT symmetric: the dominant R must cover at least :data:`EIM_AGREEMENT` of the destinations;
* a **port delta** (the usual step between ports of successive new mappings) lets a node behind a
  sequential symmetric NAT predict the ports of its next mappings;
* **roaming**: when a peer at an unchanged E_P reports a different R than before, or our own socket
  address changes, the NAT (or network) has re-mapped us: older observations describe a mapping that is
  gone, so they are dropped and :class:`PublicEndpointChanged` is emitted.

Filtering cannot be seen from observations (they all come from peers we talk to); it comes from probes
(:mod:`nat.filterprobe`) and is recorded here with :meth:`NatObserver.record_filtering`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from .behaviour import FilteringBehaviour, MappingBehaviour, NatProfile
from .common import Endpoint, canonical

log = logging.getLogger(__name__)

EIM_AGREEMENT = 0.75
"""Share of distinct destinations that must see the dominant reflexive endpoint for the mapping to count
as endpoint-independent: tolerates one port clash in four (Linux remaps a flow whose translated tuple is
taken, see the lab's conntrack finding) without calling a port-preserving NAT symmetric."""

DEFAULT_MAX_AGE_S = 300.0
"""Observations older than this are forgotten: RFC 4787 REQ-5 lets an idle UDP mapping expire after
2 min (5 min recommended), so what a peer saw longer ago may describe a mapping that no longer exists.
Live links refresh their observation with every keepalive, far more often."""

MAX_OBSERVATIONS = 128
"""Distinct destinations remembered. A node has about log2(N) + 4 links; 128 covers a million-node
overlay with room for STUN servers and shortcuts, and bounds the memory a flood of handshakes can take."""


@dataclass(frozen=True, slots=True)
class Observation:
    """Peer (``peer``, reached at ``peer_endpoint``) saw our socket at ``reflexive`` at time ``at``."""

    peer_endpoint: Endpoint
    reflexive: Endpoint
    at: float
    peer: str = ""


@dataclass(frozen=True, slots=True)
class PublicEndpointChanged:
    """Our best public endpoint changed (``old`` None: the first one learned). ``reason`` is "learned",
    "remapped" (a peer saw a new endpoint) or "local-changed" (our socket moved)."""

    old: Endpoint | None
    new: Endpoint | None
    reason: str
    at: float


def classify_mapping(observations: Iterable[Observation], local: Iterable[Endpoint]) -> MappingBehaviour:
    """The NAT mapping behaviour that a set of current observations (one per destination) shows."""
    latest: dict[Endpoint, Endpoint] = {}
    for obs in sorted(observations, key=lambda o: o.at):
        latest[obs.peer_endpoint] = obs.reflexive
    if not latest:
        return MappingBehaviour.UNKNOWN
    local_set = set(local)
    if all(r in local_set for r in latest.values()):
        return MappingBehaviour.NONE
    counts = Counter(latest.values())
    dominant, support = counts.most_common(1)[0]
    agreeing_ips = {dest[0] for dest, r in latest.items() if r == dominant}
    if len(agreeing_ips) >= 2 and support >= EIM_AGREEMENT * len(latest):
        return MappingBehaviour.ENDPOINT_INDEPENDENT
    by_ip: dict[str, set[Endpoint]] = {}
    for dest, r in latest.items():
        by_ip.setdefault(dest[0], set()).add(r)
    same_ip_pairs = [rs for ip, rs in by_ip.items() if sum(1 for d in latest if d[0] == ip) >= 2]
    if any(len(rs) > 1 for rs in same_ip_pairs):
        return MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT
    if len(counts) == 1:
        return MappingBehaviour.UNKNOWN  # one destination IP only: nothing to compare yet
    if same_ip_pairs:
        return MappingBehaviour.ADDRESS_DEPENDENT
    return MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT


def port_delta(observations: Iterable[Observation]) -> int | None:
    """The usual port step between successive new mappings, from observations in time order: the most
    common delta between consecutive distinct reflexive ports if it accounts for at least 60 % of the
    steps (at least two), else None (random allocation, nothing to predict)."""
    ports: list[int] = []
    for obs in sorted(observations, key=lambda o: o.at):
        if not ports or obs.reflexive[1] != ports[-1]:
            ports.append(obs.reflexive[1])
    deltas = [b - a for a, b in pairwise(ports)]
    if len(deltas) < 2:
        return None
    delta, count = Counter(deltas).most_common(1)[0]
    return delta if delta != 0 and count >= 2 and count >= 0.6 * len(deltas) else None


class NatObserver:
    """Collects observations of one socket and keeps the node's view of its NAT current.

    ``local`` are the socket's host endpoints (each interface address with the bound port). The methods
    that take an observation or a new local address return the events they caused; the caller logs them
    and re-advertises its candidates when the public endpoint changed.
    """

    __slots__ = (
        "_best",
        "_filtering",
        "_local",
        "_mapping",
        "_max",
        "_max_age",
        "_mixed",
        "_obs",
        "changed_at",
        "rejected",
        "revision",
    )

    def __init__(
        self,
        local: Sequence[Endpoint],
        *,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        max_observations: int = MAX_OBSERVATIONS,
    ) -> None:
        self._local = tuple(canonical(e) for e in local)
        self._max_age = max_age_s
        self._max = max_observations
        self._obs: dict[Endpoint, Observation] = {}
        self._filtering = FilteringBehaviour.UNKNOWN
        self._best: Endpoint | None = None
        self._mapping: MappingBehaviour | None = None
        """``classify_mapping`` of the current observations, until they change (None: not known).
        It depends only on which destination saw which endpoint, not on when: a keepalive that
        refreshes an observation with the same endpoint leaves it as it is."""
        self._mixed: bool | None = None
        """Whether the observations name more than one reflexive endpoint (None: not known). Like
        ``_mapping`` it changes only when an observation is added, replaced by another endpoint or
        dropped; a keepalive used to scan every observation for it (the top item of a profile of a
        2,000-node steady state)."""
        self.revision = 0
        """Bumped whenever what :meth:`profile` says may have changed; a caller that derives something
        from the profile (the overlay's candidate list) keeps it while the revision stays."""
        self.changed_at: float | None = None
        self.rejected = 0

    @property
    def local(self) -> tuple[Endpoint, ...]:
        return self._local

    def observe(
        self, peer_endpoint: Endpoint, reflexive: Endpoint, now: float, peer: str = ""
    ) -> list[PublicEndpointChanged]:
        """Record that the peer at ``peer_endpoint`` sees us at ``reflexive``. What a peer reports is
        untrusted: an endpoint that is not an IP address and port is counted in ``rejected`` and ignored."""
        try:
            peer_endpoint, reflexive = canonical(peer_endpoint), canonical(reflexive)
        except (ValueError, TypeError):
            self.rejected += 1
            log.debug("ignoring malformed observation %r by %r", reflexive, peer_endpoint)
            return []
        expired = self._expire(now)
        events: list[PublicEndpointChanged] = []
        previous = self._obs.get(peer_endpoint)
        if previous is not None and previous.reflexive == reflexive and not expired:
            # The common case, a live link's keepalive: only the time changes, so the mapping is the
            # same, and the best endpoint can change only if another one was best (a tie in support
            # that the fresher time now breaks).
            del self._obs[peer_endpoint]
            self._obs[peer_endpoint] = Observation(peer_endpoint, reflexive, now, peer)
            dependent = self._dependent(now)
            if self._mixed is None:
                self._mixed = any(o.reflexive != reflexive for o in self._obs.values())
            if dependent or self._mixed:
                # With more than one public endpoint, a fresher time may reorder them.
                self.revision += 1
            if reflexive != self._best and (self._best is None or not dependent):
                events.extend(self._update_best(now, "learned"))
            return events
        self._mapping = None
        self._mixed = None
        self.revision += 1
        if previous is not None and previous.reflexive != reflexive:
            log.info(
                "peer %s now sees us at %s (was %s): mapping changed",
                peer_endpoint,
                reflexive,
                previous.reflexive,
            )
            self._obs.clear()
            self.changed_at = now
            self._filtering = FilteringBehaviour.UNKNOWN  # a new mapping may sit behind another NAT
            self._obs[peer_endpoint] = Observation(peer_endpoint, reflexive, now, peer)
            events.extend(self._update_best(now, "remapped"))
            return events
        self._obs.pop(peer_endpoint, None)
        self._obs[peer_endpoint] = Observation(peer_endpoint, reflexive, now, peer)
        while len(self._obs) > self._max:
            del self._obs[next(iter(self._obs))]  # oldest first: dicts keep insertion order
        if self._best is None or not self._dependent(now):
            # Under APDM every new destination has its own endpoint.
            events.extend(self._update_best(now, "learned"))
        return events

    def _dependent(self, now: float) -> bool:
        return self.mapping(now) in (
            MappingBehaviour.ADDRESS_DEPENDENT,
            MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT,
        )

    def set_local(self, local: Sequence[Endpoint], now: float) -> list[PublicEndpointChanged]:
        """Our socket's host endpoints changed (new interface address, rebound socket): everything
        learned about the old mapping is void."""
        new_local = tuple(canonical(e) for e in local)
        if new_local == self._local:
            return []
        log.info("local endpoints changed %s -> %s", self._local, new_local)
        self._local = new_local
        self._obs.clear()
        self._mapping = None
        self._mixed = None
        self.revision += 1
        self._filtering = FilteringBehaviour.UNKNOWN
        self.changed_at = now
        return self._update_best(now, "local-changed", force=True)

    def record_filtering(self, behaviour: FilteringBehaviour) -> None:
        """The outcome of filtering probes (see :func:`nat.classify_filtering`)."""
        if behaviour is not self._filtering:
            log.info("NAT filtering: %s", behaviour.value)
            self.revision += 1
        self._filtering = behaviour

    def observations(self, now: float) -> list[Observation]:
        self._expire(now)
        return list(self._obs.values())

    def public_endpoints(self, now: float) -> tuple[Endpoint, ...]:
        """Distinct reflexive endpoints, the most widely reported first, then the most recent."""
        self._expire(now)
        support: Counter[Endpoint] = Counter(o.reflexive for o in self._obs.values())
        last_seen: dict[Endpoint, float] = {}
        for o in self._obs.values():
            last_seen[o.reflexive] = max(o.at, last_seen.get(o.reflexive, o.at))
        return tuple(sorted(support, key=lambda r: (-support[r], -last_seen[r])))

    def mapping(self, now: float) -> MappingBehaviour:
        self._expire(now)
        if self._mapping is None:
            self._mapping = classify_mapping(self._obs.values(), self._local)
        return self._mapping

    def profile(self, now: float) -> NatProfile:
        obs = self.observations(now)
        mapping = classify_mapping(obs, self._local)
        public = self.public_endpoints(now)
        local_ports = {port for _, port in self._local}
        preserved = None if mapping is MappingBehaviour.NONE or not public else public[0][1] in local_ports
        dependent = mapping in (
            MappingBehaviour.ADDRESS_DEPENDENT,
            MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT,
        )
        return NatProfile(
            mapping=mapping,
            filtering=self._filtering,
            public=public,
            local=self._local,
            port_preserved=preserved,
            port_delta=port_delta(obs) if dependent else None,
            observers=len(obs),
            changed_at=self.changed_at,
        )

    def _expire(self, now: float) -> bool:
        """Forget observations older than the maximum age; whether any went."""
        # Every observation is (re-)inserted at the end with the then current time, so the dict is in
        # time order and the stale ones are at its front: the walk stops at the first fresh one
        # (it ran over every observation on every keepalive, a tenth of a simulated node's time).
        horizon = now - self._max_age
        obs = self._obs
        stale = False
        while obs:
            key = next(iter(obs))
            if obs[key].at >= horizon:
                break
            del obs[key]
            stale = True
        if stale:
            self._mapping = None
            self._mixed = None
            self.revision += 1
        return stale

    def _update_best(self, now: float, reason: str, force: bool = False) -> list[PublicEndpointChanged]:
        public = self.public_endpoints(now)
        best = public[0] if public else None
        if best == self._best and not force:
            return []
        old, self._best = self._best, best
        if old is not None and reason == "learned":
            reason = "remapped"
        if old is not None and best is not None and reason != "local-changed":
            self.changed_at = now
        log.info("public endpoint %s -> %s (%s)", old, best, reason)
        return [PublicEndpointChanged(old, best, reason, now)]
