"""Pure. Tunnelled links: which neighbour relays them, and when a direct path is tried again.

Theory of operation. When punching cannot work (a symmetric NAT against a symmetric or port-restricted
one) two nodes still get a link: a *tunnel* through the overlay (Brunet's tunnel edge). Its sealed link
packets travel as routed messages to a relay, a node both ends are directly linked to, which forwards
them over its own direct link; the relay cannot read them. :meth:`Relays.choose` takes the relay from
the peer's neighbour list (in its connect-reply): a node that the peer reaches directly (its entry names
an endpoint) and that we reach directly, the one with the lowest RTT from here, loss on its link
counting as a multiple of the RTT (:func:`relay_cost`). With no common neighbour
the tunnel is routed greedily instead, which always works while the ring does.

A tunnel is a fallback, not a verdict. Every tunnelled link is retried for a direct path (an upgrade
attempt: connect-to-me and punch on the existing link) ``DIRECT_RETRY_S`` after it formed, then at
doubling intervals up to ``DIRECT_RETRY_MAX_S``; new candidates from the peer (it roamed, or learned its
NAT) reset the interval. Only the end with the higher address starts the retries, so the two ends do
not punch twice. Each failed retry also brings the peer's current neighbour list, and the tunnel moves
to a better relay when there is one. When the relay's link goes away, the tunnel falls back to greedy
routing at the next ``TEND_S`` pass (the peer follows the path our packets arrive on).

States of a tunnelled link, in one place::

    TUNNELLED --retry due (higher address)--> RETRYING --punch + handshake--> DIRECT (link.endpoint set)
                                              RETRYING --punch failed--> TUNNELLED (interval doubles)
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nat import is_private

from .address import Address, short
from .events import Endpoint
from .table import RELAY, Link
from .wire import MAX_NEIGHBOURS, Neighbour

if TYPE_CHECKING:
    from .node import OverlayNode

log = logging.getLogger(__name__)

DIRECT_RETRY_S = 40.0
"""First retry of a direct path after a tunnel formed: NAT mappings and candidates settle within a few
keepalives, and a peer that roamed onto a better network is found within a minute. Longer than Linux
conntrack's 30 s timeout for unreplied UDP (with the +-10 % jitter and a punch's few seconds to spare):
a punch that failed on the conntrack clash (see ``punching``) leaves stale entries in the routers, which
only silence clears; a retry within 30 s of the last probe would refresh them and fail again."""

DIRECT_RETRY_MAX_S = 480.0
"""Retries of a pair that cannot punch (symmetric x symmetric) settle at one every 8 minutes: a few
dozen probes each time, against a path that may appear when either side's network changes."""

TEND_S = 5.0
"""How often tunnelled links are looked after (dead relays, due retries): the maintenance tick's pace."""

LOSS_FLOOR = 0.001
"""Loss below which a relay's link counts as clean (:func:`relay_cost`)."""

LOSS_PRIOR = 20
"""Counters added to what a link has seen before its loss is estimated: 1 hole in 5 is not 20 %."""

RELAY_GRACE_S = 30.0
"""A link recruited to relay keeps its role this long even before a tunnel uses it (the tunnel's
handshake through it takes a moment, and may need a retry)."""

RECRUIT_HOLD_S = 15.0
"""A relay recruited for a tunnel is given this long (a link attempt, punch included) before another of
the same peer's neighbours is tried."""

UNKNOWN_RTT_S = 1.0
"""RTT assumed for a link not yet measured, so that a measured relay is preferred."""


@dataclass(frozen=True, slots=True)
class TunnelPath:
    """A link path through the overlay: routed to ``peer`` via ``relay`` (or greedily when ``None``)."""

    peer: Address
    relay: Address | None


class _Retry:
    __slots__ = ("due", "interval", "tried")

    def __init__(self, due: float, interval: float) -> None:
        self.due = due
        self.interval = interval
        self.tried: tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]] | None = None
        """Both ends' candidates when a punch last failed: the same again will fail the same way."""


def relay_cost(link: Link) -> float:
    """What relaying through the peer of ``link`` costs: its RTT, times the factor by which the loss
    seen on its link would cut a TCP stream's rate (Mathis et al.: rate ~ 1 / (RTT * sqrt(loss))).

    Why loss counts. A relay carries every packet of the tunnel twice, and the cheapest RTT is worth
    nothing behind a lossy access link: the NAT grid's site with 20 % loss each way, taken as a relay
    for two clean sites because its RTT was the lowest, let 3 and 7 of 10 pings through. The loss is
    the peer's DATA counters that never arrived here (``Session.receive_loss``, a free by-product of
    the replay window), over the counters seen plus ``LOSS_PRIOR`` (a young link's one lost keepalive
    is not yet a lossy path). Below ``LOSS_FLOOR`` loss does not count: among clean links the RTT
    decides, as before; 1 % loss weighs as three times the RTT, 20 % as fourteen."""
    rtt = link.srtt if link.srtt is not None else UNKNOWN_RTT_S
    missing = span = 0
    for session in link.sessions:
        m, n = session.receive_loss()
        missing += m
        span += n
    loss = missing / (span + LOSS_PRIOR)
    return rtt * math.sqrt(max(loss, LOSS_FLOOR) / LOSS_FLOOR)


class Relays:
    """Relay choice and direct-path retries for one node's tunnelled links."""

    __slots__ = ("_armed", "_neighbours", "_recruits", "_retries", "counts", "node")

    def __init__(self, node: OverlayNode) -> None:
        self.node = node
        self._retries: dict[int, _Retry] = {}
        self._neighbours: dict[int, tuple[Neighbour, ...]] = {}
        self._recruits: dict[int, float] = {}
        self._armed = False
        self.counts: Counter[str] = Counter()

    def choose(self, neighbours: tuple[Neighbour, ...]) -> Address | None:
        """The common neighbour of least :func:`relay_cost` from here among those the peer links
        directly (the peer's neighbour lists name an endpoint exactly for those, see
        ``reply_neighbours``)."""
        node = self.node
        best: Address | None = None
        best_cost = 0.0
        for neighbour in neighbours:
            if not neighbour.candidates:
                continue  # the peer reaches it only through a tunnel itself
            link = node.table.get(neighbour.address)
            if link is None or not link.direct or not link.sessions:
                continue
            cost = relay_cost(link)
            if best is None or cost < best_cost:
                best, best_cost = neighbour.address, cost
        return best

    def heard_neighbours(self, peer: Address, entries: tuple[Neighbour, ...]) -> None:
        """``peer`` told us its neighbour list: more relay options for a tunnelled link to it."""
        if peer in self._retries:
            self.remember(peer, entries)

    def remember(self, peer: Address, entries: tuple[Neighbour, ...]) -> None:
        """Relay options for a tunnel to ``peer``: nodes it named, the ones it reaches directly first."""
        known = {n.address: n for n in self._neighbours.get(peer, ())}
        for entry in entries:
            if entry.candidates or entry.address not in known:
                known[entry.address] = entry
        self._neighbours[peer] = tuple(sorted(known.values(), key=lambda n: not n.candidates))[
            :MAX_NEIGHBOURS
        ]

    def reply_neighbours(self) -> tuple[Neighbour, ...]:
        """What a connect-reply lists: our ring neighbours, then other peers we reach directly (they can
        relay for a requester that cannot punch through to us; the ring neighbours of a node behind a
        symmetric NAT are often no better off than it is). Only peers we reach directly come with
        endpoints: the requester takes an entry with endpoints as one that can relay to us."""
        node = self.node
        entries: list[Neighbour] = []
        for entry in node.maintenance.neighbour_list():
            link = node.table.get(entry.address)
            direct = link is not None and link.endpoint is not None
            entries.append(entry if direct else Neighbour(entry.address, ()))
        listed = {n.address for n in entries}
        for link in node.table:
            if len(entries) >= MAX_NEIGHBOURS:
                break
            named = link.listed_endpoints()[:4]  # never its public endpoint alone (see there)
            if link.endpoint is not None and named and link.peer not in listed and link.sessions:
                entries.append(Neighbour(link.peer, named))
        return tuple(entries)

    def recruit(self, entries: tuple[Neighbour, ...], now: float) -> None:
        """No common neighbour can relay: link directly to one that the peer reaches directly, to relay
        through it. Public-looking ones first (no private endpoint: no NAT that could refuse us)."""
        node = self.node
        options = [n for n in entries if n.candidates and n.address != node.address]
        if not options or any(
            now - self._recruits.get(n.address, -RECRUIT_HOLD_S) < RECRUIT_HOLD_S for n in options
        ):
            return
        public = [n for n in options if not any(is_private(host) for host, _ in n.candidates)]
        pool = public or options
        pick = pool[node.rng.randrange(len(pool))]
        self._recruits[pick.address] = now
        if len(self._recruits) > MAX_NEIGHBOURS * 4:
            self._recruits = {a: t for a, t in self._recruits.items() if now - t < RECRUIT_HOLD_S}
        if node.connector.connect_address(pick.address, RELAY, now, hints=pick.candidates) is not None:
            self.counts["relay_recruited"] += 1

    def set_relay(self, link: Link, relay: Address | None, now: float) -> None:
        """Tunnel ``link`` through ``relay``; the link to the relay carries the RELAY role meanwhile."""
        link.relay = relay
        relay_link = self.node.table.get(relay) if relay is not None else None
        if relay_link is not None:
            self.node.maintenance.add_role(relay_link, RELAY, now)

    # -- tunnelled links --------------------------------------------------------------------------------

    def tunnelled(self, link: Link, now: float) -> None:
        """``link`` now runs through a tunnel: schedule its direct-path retries."""
        if link.peer not in self._retries:
            self._retries[link.peer] = _Retry(now + self._jitter(DIRECT_RETRY_S), DIRECT_RETRY_S)
        self._arm(now)

    def candidates_heard(self, link: Link, now: float) -> None:
        """The peer of a tunnelled link told us its candidates (Hello): if they are new, retry soon."""
        retry = self._retries.get(link.peer)
        if (
            retry is not None
            and retry.interval > DIRECT_RETRY_S
            and retry.tried is not None
            and link.candidates != retry.tried[1]
        ):
            retry.interval = DIRECT_RETRY_S
            retry.due = min(retry.due, now + self._jitter(DIRECT_RETRY_S))

    def upgrade_failed(self, peer: Address, neighbours: tuple[Neighbour, ...], now: float) -> None:
        """A retry found no direct path: back off, and move the tunnel to a better relay if any."""
        retry = self._retries.get(peer)
        link = self.node.table.get(peer)
        if retry is not None:
            tried = (self.node.connector.candidates(), link.candidates if link is not None else ())
            # Nothing changed since the last failure: only the slow safety-net retries remain.
            same = tried == retry.tried
            retry.interval = DIRECT_RETRY_MAX_S if same else min(retry.interval * 2, DIRECT_RETRY_MAX_S)
            retry.due = now + self._jitter(retry.interval)
            retry.tried = tried
        if link is None or link.direct:
            return
        better = self.choose(neighbours)
        if better is not None and better != link.relay and self._cost(better) < self._cost(link.relay):
            log.info(
                "%s tunnel to %s moves to relay %s",
                self.node.log_prefix,
                short(peer),
                short(better),
            )
            self.counts["relay_changed"] += 1
            link.relay = better

    def relay_gone(self, gone: int, now: float) -> None:
        """The link to ``gone`` went down: tunnels through it take another relay at once, before their
        own liveness checks give up on them."""
        node = self.node
        for peer in list(self._retries):
            link = node.table.get(peer)
            if link is None or link.direct or link.relay != gone:
                continue
            log.info("%s relay %s of %s is gone", node.log_prefix, short(gone), short(peer))
            self.counts["relay_lost"] += 1
            link.relay = None
            relay = self.choose(self._neighbours.get(peer, ()))
            if relay is not None:
                self.counts["relay_found"] += 1
                self.set_relay(link, relay, now)
            else:
                self.recruit(self._neighbours.get(peer, ()), now)

    def tend(self, now: float) -> None:
        """The periodic pass (``TEND_S``): forget links that are gone or direct, route around relays
        that went away, and start the retries that are due."""
        self._armed = False
        node = self.node
        for peer, retry in list(self._retries.items()):
            link = node.table.get(peer)
            if link is None or link.direct:
                del self._retries[peer]
                self._neighbours.pop(peer, None)
                continue
            if link.relay is not None:
                relay_link = node.table.get(link.relay)
                if relay_link is None or not relay_link.direct:
                    log.info("%s relay %s of %s is gone", node.log_prefix, short(link.relay), short(peer))
                    self.counts["relay_lost"] += 1
                    link.relay = None
            if link.relay is None:
                relay = self.choose(self._neighbours.get(peer, ()))
                if relay is not None:
                    self.counts["relay_found"] += 1
                    self.set_relay(link, relay, now)
                else:
                    self.recruit(self._neighbours.get(peer, ()), now)
            if now >= retry.due and node.address > peer:
                retry.due = now + retry.interval  # until the attempt reports (failure doubles it)
                if node.connector.try_direct(link, now) is not None:
                    self.counts["direct_retries"] += 1
        self._release_relays(now)
        self._arm(now)

    def _release_relays(self, now: float) -> None:
        """Links we keep only to relay through, which no tunnel of ours uses any longer, lose the role
        (maintenance then closes them unless they have another purpose)."""
        node = self.node
        used = {link.relay for link in node.table if link.endpoint is None and link.relay is not None}
        for link in node.table:
            if link.my_roles & RELAY and link.peer not in used and now - link.created > RELAY_GRACE_S:
                node.maintenance.drop_role(link, RELAY, now)

    def _arm(self, now: float) -> None:
        if (self._retries or any(link.my_roles & RELAY for link in self.node.table)) and not self._armed:
            self._armed = True
            self.node.set_timer(now + TEND_S, "nat", None)

    def _cost(self, relay: Address | None) -> float:
        link = self.node.table.get(relay) if relay is not None else None
        return UNKNOWN_RTT_S * 2 if link is None else relay_cost(link)

    def _jitter(self, delay: float) -> float:
        return delay * (0.9 + 0.2 * self.node.rng.random())

    # -- status -------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        links = list(self.node.table)
        direct = sum(1 for link in links if link.direct)
        via = Counter(short(link.relay) for link in links if not link.direct and link.relay is not None)
        return {
            "links_direct": direct,
            "links_relayed": sum(via.values()),
            "links_routed": sum(1 for link in links if not link.direct and link.relay is None),
            "relays": dict(sorted(via.items())),
            "tunnels": dict(sorted(self.counts.items())),
        }
