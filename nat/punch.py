"""Pure. One hole-punching attempt towards one peer: which probe to send to which endpoint, when, and with
which IP TTL; when the attempt has found a direct path, or has failed and the overlay must relay.

Theory of operation. Both peers learn of the attempt through the overlay (connect-to-me), exchange their
ranked candidate endpoints, and each starts a :class:`PunchSession` at about the same moment.

1. **Open our own mapping first.** The session starts with one low-TTL packet (TTL 2 by default) to every
   remote candidate. It passes our own NAT, creating the outbound mapping, and dies in the core before it
   reaches the peer's NAT. Without it, a peer whose probe arrives before our first outbound packet can,
   on a Linux NAT box whose own stack accepts unsolicited input, leave a *confirmed* conntrack entry for
   our public port; our own flow is then re-mapped to a new port and the punch deadlocks (the NAT lab's
   finding: port x port failed 4 times in 5). The side that learns of the attempt first may also hold
   its full probes for ``hold_s`` (about the signalling path's one-way delay, DCUtR's RTT/2) so that the
   other side's pre-punch leaves before our first full probe arrives there.
2. **Probe, paced like ICE.** ``prepunch_lead_s`` after the pre-punch, full probes go out one every
   ``pacing_s`` (Ta, 50 ms), candidates in ranked order, each candidate again at most every
   ``interval_s`` (150 ms) until the deadline: enough retransmissions to get through 20 % loss.
3. **Learn peer-reflexive endpoints.** A probe that arrives (``probe_received``) from an endpoint the peer
   did not advertise shows where the peer's NAT really maps it (a symmetric NAT picks a new port per
   destination): it becomes a candidate, probed at once (a "triggered check") and first from then on. The
   caller answers every valid probe with a reply to its source; that is not the session's business.
4. **Succeed on a symmetric round trip.** A reply from an endpoint we probed (``reply_received``) proves
   the path both ways: SUCCEEDED(endpoint). A reply from an endpoint we never probed is treated like a
   probe from it (learned, probed, its own reply then counts), as ICE requires symmetric pairs.
5. **Fail at the deadline** (``timeout_s`` after the start): FAILED; the overlay relays through a
   common neighbour and may try again later.

States and transitions, in one place::

    PUNCHING --reply from a probed endpoint--> SUCCEEDED
    PUNCHING --deadline----------------------> FAILED
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from .common import Endpoint, canonical

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PunchConfig:
    """Timing of a punch attempt."""

    prepunch_ttl: int = 2
    """IP TTL of the packet that opens our own mapping: 2 passes a home router (one hop) and dies in the
    next router. 0 disables the pre-punch (a public node has no mapping to open, and its low-TTL packet
    could reach the peer's NAT box itself); behind a carrier-grade NAT use 3."""

    prepunch_lead_s: float = 0.02
    """Delay between the pre-punch and the first full probe, so that the pre-punch is on the wire first
    even if the caller sends the batch in any order; short against any internet path."""

    pacing_s: float = 0.05
    """Ta: one probe per this interval across all candidates (RFC 8445 section 14.2 default 50 ms)."""

    interval_s: float = 0.15
    """Least time between two probes to one candidate: with Ta = 50 ms and up to three candidates this
    keeps every candidate probed about 6 times a second, enough to get through 20 % loss quickly."""

    timeout_s: float = 3.0
    """Total time of the attempt, from its start. Direct paths in the NAT lab formed within 0.2-54 ms;
    3 s is about 20 rounds, which 20 % loss each way does not defeat (0.36**20 ~ 1e-9)."""

    max_targets: int = 16
    """Remote and learned endpoints kept; a hostile peer cannot make the session probe more."""

    def __post_init__(self) -> None:
        if self.prepunch_ttl < 0 or self.prepunch_ttl > 255:
            raise ValueError("prepunch_ttl is 0 (off) or an IP TTL")
        if min(self.pacing_s, self.interval_s, self.timeout_s) <= 0 or self.prepunch_lead_s < 0:
            raise ValueError("punch timings must be positive")


class PunchState(Enum):
    PUNCHING = "punching"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PunchSucceeded:
    endpoint: Endpoint
    elapsed: float
    peer_reflexive: bool
    """The working endpoint was learned from what arrived, not advertised by the peer."""


@dataclass(frozen=True, slots=True)
class PunchFailed:
    elapsed: float
    probes_sent: int
    received_any: bool
    """Some probe of the peer arrived (the path works inbound only): useful in ``ipop status``."""


PunchEvent = PunchSucceeded | PunchFailed


@dataclass(slots=True)
class _Target:
    endpoint: Endpoint
    rank: int
    learned: bool
    prepunched: bool = False
    ready_at: float = float("inf")
    """No full probe before this: ``prepunch_lead_s`` after the target's pre-punch left."""
    last_probe: float | None = None
    inbound: bool = False

    def eligible_at(self, interval: float) -> float:
        return self.ready_at if self.last_probe is None else max(self.ready_at, self.last_probe + interval)


class PunchSession:
    """See the module docstring. ``remote`` is the peer's ranked endpoint list (best first)."""

    def __init__(
        self,
        remote: Sequence[Endpoint],
        now: float,
        *,
        config: PunchConfig | None = None,
        hold_s: float = 0.0,
    ) -> None:
        if hold_s < 0:
            raise ValueError("hold_s must not be negative")
        self.config = config or PunchConfig()
        self.state = PunchState.PUNCHING
        self.endpoint: Endpoint | None = None
        self.probes_sent = 0
        self.started_at = now
        self._deadline = now + self.config.timeout_s
        lead = self.config.prepunch_lead_s if self.config.prepunch_ttl else 0.0
        self._first_full_at = now + hold_s + lead
        self._next_paced_at = self._first_full_at
        self._targets: dict[Endpoint, _Target] = {}
        # Lists, not deques: they hold a few items at most, and an empty deque costs ~760 bytes against
        # 56 for a list; a simulated node carries tens of punch sessions while it joins.
        self._triggered: list[Endpoint] = []
        self._events: list[PunchEvent] = []
        self._asap_at: float | None = None
        self.rejected = 0
        self.add_remote(remote, now)

    # -- inputs ---------------------------------------------------------------------------------------

    def add_remote(self, remote: Iterable[Endpoint], now: float) -> None:
        """More candidates of the peer (trickled); each gets its own pre-punch before its first probe.
        The peer advertised them: one that is not an IP endpoint is counted in ``rejected`` and skipped."""
        for ep in remote:
            try:
                checked = canonical(ep)
            except (ValueError, TypeError):
                self.rejected += 1
                log.debug("punch: ignoring malformed candidate %r", ep)
                continue
            self._add(checked, learned=False, now=now)

    def probe_received(self, src: Endpoint, now: float) -> None:
        """An authenticated probe of the peer arrived from ``src``."""
        if self.state is not PunchState.PUNCHING:
            return
        src = canonical(src)
        target = self._targets.get(src) or self._add(src, learned=True, now=now)
        if target is None:
            return
        target.inbound = True
        target.ready_at = min(target.ready_at, now)  # it reaches us: no pre-punch needed any more
        if target.last_probe is None or now - target.last_probe >= self.config.pacing_s:
            if src not in self._triggered:
                self._triggered.append(src)
            self._asap(now)

    def release_hold(self, at: float) -> None:
        """Full probes may start at ``at`` after all (earlier than the ``hold_s`` given at the start,
        which the caller chose before it knew enough: see the overlay's ``punching.hold_for``)."""
        if self.state is PunchState.PUNCHING and at < self._first_full_at:
            self._first_full_at = at
            self._next_paced_at = min(self._next_paced_at, at)

    def reply_received(self, src: Endpoint, now: float) -> None:
        """The peer answered one of our probes; the reply came from ``src``."""
        if self.state is not PunchState.PUNCHING:
            return
        src = canonical(src)
        target = self._targets.get(src)
        if target is None or target.last_probe is None:
            self.probe_received(src, now)  # not a symmetric pair yet: probe it, its reply will count
            return
        target.inbound = True
        self.state = PunchState.SUCCEEDED
        self.endpoint = src
        self._events.append(PunchSucceeded(src, now - self.started_at, target.learned))
        log.info(
            "punch succeeded via %s after %.3f s (%d probes)", src, now - self.started_at, self.probes_sent
        )

    # -- outputs --------------------------------------------------------------------------------------

    def probes_due(self, now: float) -> list[tuple[Endpoint, int]]:
        """Probes to send now: (destination, IP TTL; 0 = the system default)."""
        if self.state is not PunchState.PUNCHING:
            return []
        out: list[tuple[Endpoint, int]] = []
        ttl = self.config.prepunch_ttl
        for t in self._targets.values():
            if not t.prepunched and not t.inbound and ttl:
                t.prepunched = True
                t.ready_at = now + self.config.prepunch_lead_s
                out.append((t.endpoint, ttl))
        while self._triggered:
            t = self._targets[self._triggered.pop(0)]
            out.append(self._probe(t, now))
        self._asap_at = None
        if now >= self._next_paced_at and now >= self._first_full_at:
            target = self._next_target(now)
            if target is not None:
                out.append(self._probe(target, now))
                self._next_paced_at = now + self.config.pacing_s
        if out:
            log.debug("punch probes %s", out)
        return out

    def get_timer(self) -> float | None:
        if self.state is not PunchState.PUNCHING:
            return None
        if self._asap_at is not None:  # a pre-punch or a triggered probe is waiting
            return self._asap_at
        wake = max(self._first_full_at, self._next_paced_at, self._earliest_eligible())
        return min(wake, self._deadline)

    def handle_timer(self, now: float) -> None:
        if self.state is PunchState.PUNCHING and now >= self._deadline:
            self.state = PunchState.FAILED
            received = any(t.inbound for t in self._targets.values())
            self._events.append(PunchFailed(now - self.started_at, self.probes_sent, received))
            log.info(
                "punch failed after %.3f s (%d probes, inbound seen: %s)",
                now - self.started_at,
                self.probes_sent,
                received,
            )

    def next_event(self) -> PunchEvent | None:
        return self._events.pop(0) if self._events else None

    @property
    def learned(self) -> tuple[Endpoint, ...]:
        """Peer-reflexive endpoints learned so far."""
        return tuple(t.endpoint for t in self._targets.values() if t.learned)

    @property
    def targets(self) -> tuple[Endpoint, ...]:
        return tuple(t.endpoint for t in self._ordered())

    # -- internals ------------------------------------------------------------------------------------

    def _add(self, ep: Endpoint, *, learned: bool, now: float) -> _Target | None:
        if ep in self._targets:
            return self._targets[ep]
        if len(self._targets) >= self.config.max_targets:
            log.debug("punch: ignoring candidate %s, %d already", ep, len(self._targets))
            return None
        target = _Target(ep, len(self._targets), learned)
        self._targets[ep] = target
        if learned:
            target.ready_at = now
            log.info("punch: learned peer-reflexive endpoint %s", ep)
        elif self.config.prepunch_ttl:
            self._asap(now)
        else:
            target.ready_at = now
        return target

    def _asap(self, now: float) -> None:
        if self._asap_at is None:
            self._asap_at = now

    def _ordered(self) -> list[_Target]:
        """Endpoints that have shown inbound traffic first, then the peer's ranking, then learned ones."""
        return sorted(self._targets.values(), key=lambda t: (not t.inbound, t.rank))

    def _next_target(self, now: float) -> _Target | None:
        """Round robin: never-probed candidates first (in rank order), then the one probed longest ago;
        among equals, endpoints that showed inbound traffic and better ranks first."""
        interval = self.config.interval_s
        eligible = [t for t in self._targets.values() if t.eligible_at(interval) <= now]
        if not eligible:
            return None
        return min(
            eligible,
            key=lambda t: (t.last_probe is not None, t.last_probe or 0.0, not t.inbound, t.rank),
        )

    def _earliest_eligible(self) -> float:
        times = [t.eligible_at(self.config.interval_s) for t in self._targets.values()]
        return min(times) if times else self._deadline

    def _probe(self, target: _Target, now: float) -> tuple[Endpoint, int]:
        target.last_probe = now
        self.probes_sent += 1
        return (target.endpoint, 0)
