"""Pure. Is the peer at the other end of each link still there? Keepalives, probes, and death.

Theory of operation. Any authenticated packet from a peer counts as life (``Link.last_rx``). A link that
has been quiet for its keepalive interval gets a ``Ping``; an unanswered ping is repeated, and after
``probe_retries`` unanswered pings the peer is declared dead and the link dropped. The pings share a
window of ``DEAD_WINDOW`` probe timeouts, a probe timeout following the link's round-trip time
(``PROBE_RTT_FACTOR`` x srtt, at least ``PROBE_MIN_S``): how soon a dead peer is noticed depends on the
window only, and how often a live peer behind a lossy path is taken for dead on the number of pings
(with a share p of pings or pongs lost, p**probe_retries).

Near links (ring neighbours) are kept on a shorter interval, ``keepalive_near_s``: they decide which node
holds a DHT position, and under churn a dead neighbour that goes unnoticed for half a minute makes a
tenth of all routes fail. Far and shortcut links stay on ``keepalive_s``, just short enough to keep NAT
mappings open.

Traffic is a trigger too: when a message is sent on a link whose peer has been silent for longer than a
few round trips, a probe goes out at once (``on_send``). A crashed peer on a busy route is thus found
within a few round trips, whatever the keepalive interval. Only one end of an idle link pings: the ping's
arrival refreshes the other end's ``last_rx``.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from .table import NEAR, Link
from .wire import Ping

if TYPE_CHECKING:
    from .node import OverlayNode

PROBE_RTT_FACTOR = 3.0
"""A probe is repeated when no answer came within this many smoothed round trips (TCP's RTO is about
srtt + 4 rttvar; a factor of three suits the steadier RTTs of a UDP path)."""

PROBE_MIN_S = 0.5
"""The shortest probe timeout: scheduling jitter on a loaded host is a good part of this."""

PROBE_DEFAULT_S = 1.0
"""The probe timeout of a link without an RTT sample yet."""

DEAD_WINDOW = 7.0
"""A peer is declared dead after this many probe timeouts without an answer, whatever the number of
pings in between: the window of the three doubling probes (1 + 2 + 4) this replaced, which took
a dead neighbour out of the ring in seconds. With 20 % loss each way those three all went
unanswered 4.7 % of the time (the NAT grid's lossy site lost links so); ten pings in the same window
(``OverlayConfig.probe_retries``) do 3.7e-5 of the time."""

SILENT_RTTS = 4.0
"""``on_send`` probes a link whose peer has been silent for this many round trips while we send."""

SILENT_MIN_S = 1.0
"""... and for at least this long: a peer answers a request after its own processing, not instantly."""


class Liveness:
    __slots__ = ("node",)

    def __init__(self, node: OverlayNode) -> None:
        self.node = node

    def interval(self, link: Link) -> float:
        config = self.node.config
        if (link.my_roles | link.peer_roles) & NEAR:
            return min(config.keepalive_near_s, config.keepalive_s)
        return config.keepalive_s

    def probe_timeout(self, link: Link) -> float:
        """The wait for an answer to one ping: the window (``DEAD_WINDOW`` round-trip-based timeouts)
        shared among ``probe_retries`` pings."""
        base = PROBE_DEFAULT_S if link.srtt is None else max(PROBE_MIN_S, PROBE_RTT_FACTOR * float(link.srtt))
        return base * DEAD_WINDOW / self.node.config.probe_retries

    def watch(self, link: Link, now: float) -> None:
        """Start watching a new link."""
        self._arm(link, now + self.interval(link))

    def check(self, peer: int, now: float) -> None:
        """The link's timer: ping it if it has been quiet, or declare the peer dead."""
        node = self.node
        link = node.table.get(peer)
        if link is None:
            return
        if link.next_wake is not None and now >= link.next_wake:
            link.next_wake = None  # this is that wake-up (or a later one)
        if now < link.next_check:
            if link.next_wake is None or link.next_wake > link.next_check:
                link.next_wake = link.next_check
                node.set_timer(link.next_check, "link", peer)
            return
        idle = now - link.last_rx
        interval = self.interval(link)
        if link.probe_sent == 0.0 and idle < interval:
            link.probe_tries = 0
            self._arm_quiet(link, interval)
            return
        if link.probe_sent and link.last_rx >= link.probe_sent:
            link.probe_sent, link.probe_tries = 0.0, 0  # answered (by the pong or anything else)
            node.suspects.discard(link.peer)
            self._arm(link, link.last_rx + interval)
            return
        if link.probe_sent:
            node.suspects.add(link.peer)  # a probe went unanswered: route around it meanwhile
            node.counters["probes_unanswered"] += 1  # under data load this must stay 0 (issue 7)
        if link.probe_tries >= node.config.probe_retries:
            node.counters["links_lost_silent"] += 1
            node.maintenance.lost_link(link, now)
            node.drop_link(link, f"no answer for {idle:.1f} s", now)
            return
        self._probe(link, now)

    def heard(self, link: Link) -> None:
        """The peer answered our ping, or pinged us: the link is alive, and needs no look until it has
        been quiet for its interval again. Moving the check now, rather than when the timer entry
        armed for the old silence comes due, lets :meth:`drop_early` drop that entry unfired:
        a keepalive round then wakes the two nodes once (the ping) instead of three times (the ping,
        the other end's check, the pinger's probe timeout; docs/simscale.md, phase 7)."""
        if link.probe_sent == 0.0:
            link.probe_tries = 0
            self._arm_quiet(link, self.interval(link))

    def _arm_quiet(self, link: Link, interval: float) -> None:
        """Due when the link has been quiet for its interval (later than now, as the caller saw
        traffic within it); a little jitter keeps the two ends from pinging each other in the same
        instant."""
        self._arm(link, link.last_rx + interval * (1.0 + 0.05 * self.node.rng.random()))

    def on_send(self, link: Link, now: float) -> None:
        """A message is going out on ``link``: if its peer has been silent too long, probe now."""
        if link.probe_sent:
            return
        silent = SILENT_MIN_S if link.srtt is None else max(SILENT_MIN_S, SILENT_RTTS * link.srtt)
        if now - link.last_rx > silent:
            self.node.counters["probes_on_send"] += 1
            self._probe(link, now)

    def _probe(self, link: Link, now: float) -> None:
        node = self.node
        link.probe_tries += 1
        link.probe_nonce = node.rng.getrandbits(32)
        link.probe_sent = now
        node.send_control(link, Ping(link.probe_nonce), now)
        self._arm(link, now + self.probe_timeout(link))

    def _arm(self, link: Link, when: float) -> None:
        """Check ``link`` at ``when``. A timer entry already due no later wakes ``check``, which then
        re-arms for ``next_check``: a link re-armed after every packet (keepalives) adds no heap
        entry per re-arm, and the node's heap holds about one entry per link instead of a pile of
        stale ones (53 entries per node right after a 300-node mass join, docs/simscale.md)."""
        link.next_check = when
        if link.next_wake is not None and link.next_wake <= when:
            return
        link.next_wake = when
        self.node.set_timer(when, "link", link.peer)

    def drop_early(self, timers: list[tuple[float, int, str, Any]]) -> None:
        """Drop the link entries at the front of the node's timer heap that would wake it for nothing:
        their link is gone, or its check moved later since they were pushed (a keepalive answered, a
        ping heard). Firing one would only re-arm (the first branch of :meth:`check`); that re-arm
        happens here, so ``OverlayNode.get_timer`` names the next real deadline."""
        links = self.node.table.links
        while timers:
            when, _, kind, ref = timers[0]
            if kind != "link":
                return
            link = links.get(ref)
            if link is not None and when >= link.next_check:
                return
            heapq.heappop(timers)
            if link is None:
                continue
            if link.next_wake is not None and when >= link.next_wake:
                link.next_wake = None
            if link.next_wake is None or link.next_wake > link.next_check:
                link.next_wake = link.next_check
                self.node.set_timer(link.next_check, "link", link.peer)
