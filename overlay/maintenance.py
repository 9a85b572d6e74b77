"""Pure. Ring upkeep: joining, near links, neighbour lists, repair (far links: ``farlinks``; care of
existing links and lost peers: ``linkcare``).

Theory of operation. A node's join state moves through

    BOOTSTRAPPING --a link--> JOINING --a near link on each side--> JOINED
    JOINED --lost every link--> ISOLATED --a link--> JOINING

A node with no links handshakes with every bootstrap endpoint, retrying with exponential backoff (1 s to
60 s) and saying so in its state detail. Once linked, it routes a connect-to-me to its own address
(excluding itself) through that peer: the closest existing node answers, with its neighbour list.

Near links: the ``near_per_side`` closest linked peers on each side carry the NEAR role. Nodes tell their
near peers their neighbour list whenever it changes and every ``ANNOUNCE_S``; a node that learns of a node
closer than one of its near peers links to it. That is the ring's stabilisation; it also zips two rings
together after a partition heals, because nodes keep probing the peers they lost.

Far links: ``round(log2 N)`` links (N estimated from the span of the near peers), each towards a ring
position drawn from Symphony's harmonic distribution, so that greedy routing takes O(log N) hops.

Keepalives (``overlay.liveness``): an idle link is pinged after ``keepalive_s`` (``keepalive_near_s`` for
ring neighbours); unanswered pings are repeated within a window of a few round trips, and after
``probe_retries`` the peer is declared dead. Any authenticated packet counts as life.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from .address import RING, Address, clockwise, short
from .events import Endpoint, JoinStateChanged, NeighboursChanged
from .farlinks import manage_far
from .linkcare import LOST_PROBE_S, lost_link, manage_links, probe_lost
from .table import LEAF, NEAR, SHORTCUT, Link
from .wire import MAX_NEIGHBOURS, Close, Neighbour, Neighbours, Roles

if TYPE_CHECKING:
    from .node import OverlayNode

log = logging.getLogger(__name__)

BOOTSTRAPPING, JOINING, JOINED, ISOLATED = "bootstrapping", "joining", "joined", "isolated"

TICK_S = 5.0
"""Period of the housekeeping pass. Link liveness has its own precise timers; the tick only handles
things measured in tens of seconds (far links, idle shortcuts, lost-peer probes)."""

ANNOUNCE_S = 60.0
"""Unchanged neighbour lists are re-sent this often; a changed one at once."""

KNOWN_MAX = 24
"""Nodes remembered from neighbour lists but not linked; the closest are kept. Only those that belong
among the near peers are ever used, so a few times ``near_per_side`` on each side is plenty."""

KNOWN_TTL_S = 120.0
"""Known nodes not heard of for this long are forgotten."""

FAILED_HOLD_S = 60.0
"""A node we failed to link to is not tried again from hearsay for this long (stale neighbour lists
keep advertising dead nodes for a while)."""

SHORTCUT_RETRY_S = 5.0
"""A traffic-driven shortcut that failed is tried again, on continuing traffic, after this long, doubling
with each failure up to ``FAILED_HOLD_S``. Not the hearsay hold itself: the traffic shows the peer is
wanted now, and a lost handshake or punch under loss is no sign that it will fail again (the NAT grid's
lossy member went without a shortcut for 60 s after one failed attempt)."""

LOST_TTL_S = 600.0
"""Lost peers are forgotten after this."""

REPAIR_PROBE_S = (1.0, 5.0, 20.0)
"""After a near link dies, probe for the node that should replace it at these delays."""

STABILISE_S = 300.0
"""Even with nothing lost, probe both sides of the ring this often: a safety net for any inconsistency
that neighbour lists did not reveal (it costs two routed messages per node per five minutes)."""

SELF_PROBE_S = 5.0
"""At most one probe for our own place per this many seconds when hearsay says our view is off."""


class Maintenance:
    __slots__ = (
        "announced",
        "bootstrap_attempts",
        "bootstrap_backoff",
        "bootstrap_queue",
        "bootstrap_rounds",
        "failed",
        "far_in_flight",
        "join_answered",
        "join_attempts",
        "known",
        "last_announce",
        "lost",
        "neighbours",
        "next_bootstrap",
        "next_lost_probe",
        "next_self_probe",
        "next_stabilise",
        "node",
        "shortcut_retry",
        "state",
        "state_detail",
        "traffic",
    )

    def __init__(self, node: OverlayNode, now: float) -> None:
        self.node = node
        self.state = JOINED if not node.config.bootstrap else BOOTSTRAPPING
        self.state_detail = "first node of a new overlay" if self.state == JOINED else "starting"
        self.known: dict[int, tuple[tuple[Endpoint, ...], float]] = {}
        self.failed: dict[int, float] = {}
        self.lost: dict[int, tuple[Endpoint, float]] = {}
        self.traffic: dict[int, tuple[float, int]] = {}
        self.shortcut_retry: dict[int, tuple[float, float]] = {}
        """Peers whose traffic-driven shortcut failed: (no new attempt before, the wait that was set)."""
        self.bootstrap_backoff = node.config.bootstrap_retry_s
        self.next_bootstrap = now
        self.bootstrap_attempts: set[int] = set()
        self.bootstrap_queue: list[Endpoint] = []
        self.bootstrap_rounds = 0
        self.last_announce = -math.inf
        self.announced: tuple[Address, ...] = ()
        self.neighbours: tuple[tuple[Address, ...], tuple[Address, ...]] = ((), ())
        self.far_in_flight: dict[int, float] = {}
        self.next_lost_probe = now + LOST_PROBE_S
        self.join_answered = self.state == JOINED
        self.join_attempts: set[int] = set()
        self.next_stabilise = now + STABILISE_S
        self.next_self_probe = now
        node.set_timer(now, "tick", None)

    # -- state ---------------------------------------------------------------------------------------

    def _set_state(self, state: str, detail: str) -> None:
        if state != self.state or detail != self.state_detail:
            if state != self.state:
                log.info("%s %s: %s", self.node.log_prefix, state, detail)
            self.state, self.state_detail = state, detail
            self.node.emit(JoinStateChanged(state, detail))

    @property
    def joined(self) -> bool:
        return self.state == JOINED

    def reply_via(self) -> Address | None:
        """While joining, replies reach this node only through the peer it joined through."""
        if self.state == JOINED:
            return None
        for link in self.node.table:
            if link.my_roles & LEAF and link.direct:
                return link.peer
        return None

    def n_estimate(self) -> int:
        table = self.node.table
        k = self.node.config.near_per_side
        if len(table) < 2 * k:
            return len(table) + 1
        span = table.span(k)
        return max(len(table) + 1 if span == RING else 0, round(2 * k * RING / span))

    # -- the tick --------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        node = self.node
        node.set_timer(now + TICK_S * (0.9 + 0.2 * node.rng.random()), "tick", None)
        node.security.expire(now)
        node.expire_lingering(now)
        if len(node.table) == 0 and node.config.bootstrap:
            self._bootstrap(now)
        self._expire_hearsay(now)
        self.recompute(now)
        if self.state == JOINING and not self.join_attempts:
            self._join_probe(now)
        if now >= self.next_stabilise:
            self.next_stabilise = now + STABILISE_S * (0.8 + 0.4 * node.rng.random())
            self.repair(now)
        manage_far(self, now)
        manage_links(self, now)
        probe_lost(self, now)

    def _bootstrap(self, now: float) -> None:
        """Contact the bootstrap peers one at a time, in random order (so that a thousand nodes
        starting together spread over them), each until its handshake times out; when every one has
        failed, wait with exponential backoff and start over."""
        node = self.node
        if self.state == JOINED:
            self._set_state(ISOLATED, "lost every link; contacting bootstrap peers")
        elif self.state == JOINING:  # the peer we joined through closed the link: start again
            self._set_state(BOOTSTRAPPING, "the bootstrap peer closed the link; trying the next")
        self.bootstrap_attempts &= set(node.connector.attempts)
        if self.bootstrap_attempts or now < self.next_bootstrap:
            return
        if not self.bootstrap_queue:
            if self.bootstrap_rounds:
                self._set_state(
                    self.state,
                    f"no bootstrap peer answered; retrying in {self.bootstrap_backoff:.0f} s",
                )
                self.next_bootstrap = now + self.bootstrap_backoff
                self.bootstrap_backoff = min(self.bootstrap_backoff * 2, node.config.bootstrap_retry_max_s)
                self.bootstrap_rounds = 0
                return
            self.bootstrap_queue = list(node.config.bootstrap)
            node.rng.shuffle(self.bootstrap_queue)
        self.bootstrap_rounds += 1
        endpoint = self.bootstrap_queue.pop()
        self.bootstrap_attempts.add(node.connector.connect_endpoint(endpoint, LEAF, now))

    def _expire_hearsay(self, now: float) -> None:
        self.known = {a: v for a, v in self.known.items() if now - v[1] < KNOWN_TTL_S}
        self.failed = {a: t for a, t in self.failed.items() if now - t < FAILED_HOLD_S}
        self.lost = {a: v for a, v in self.lost.items() if now - v[1] < LOST_TTL_S}
        attempts = self.node.connector.attempts
        self.far_in_flight = {a: t for a, t in self.far_in_flight.items() if a in attempts}
        self.join_attempts &= set(attempts)
        window = self.node.config.shortcut_window_s
        self.traffic = {a: v for a, v in self.traffic.items() if now - v[0] < window}
        if self.shortcut_retry:  # forgotten a hold after the wait: the next failure starts over
            self.shortcut_retry = {a: v for a, v in self.shortcut_retry.items() if now < v[0] + FAILED_HOLD_S}

    # -- near links and stabilisation ----------------------------------------------------------------

    def ring_changed(self, now: float) -> None:
        if len(self.node.table) == 0 and self.node.config.bootstrap:
            # The last link went (refused by a full bootstrap peer, closed, or dead): the next
            # bootstrap peer at once, not at the next tick.
            self._bootstrap(now)
        self.recompute(now)

    def recompute(self, now: float) -> None:
        node = self.node
        table = node.table
        k = node.config.near_per_side
        left, right = table.left(k), table.right(k)
        near = set(left) | set(right)
        for link in table:
            if (link.peer in near) != bool(link.my_roles & NEAR):
                link.my_roles ^= NEAR
                if link.sessions:
                    node.send_control(link, Roles(link.my_roles), now)
        view = (tuple(left), tuple(right))
        if view != self.neighbours:
            old_left, old_right = self.neighbours
            self.neighbours = view
            node.emit(NeighboursChanged(*view))
            lost = any(a not in near for a in old_left[:1] + old_right[:1] if node.table.get(a) is None)
            if lost and self.state == JOINED:
                for delay in REPAIR_PROBE_S:
                    node.set_timer(now + delay, "repair", None)
        self._join_progress(left, right, now)
        self._seek_closer(left, right, now)
        self._announce(now)

    def _join_progress(self, left: list[Address], right: list[Address], now: float) -> None:
        if len(self.node.table) == 0:
            return
        if self.state in (BOOTSTRAPPING, ISOLATED):
            # The queue of bootstrap peers is kept until joined: should this one close the link (its
            # table is full), the next is tried, and a whole round of refusals waits out a backoff.
            self.bootstrap_backoff = self.node.config.bootstrap_retry_s
            self._set_state(JOINING, "linked; looking for ring neighbours")
            self.join_answered = False
            self._join_probe(now)
        if self.state == JOINING and self.join_answered and left and right:
            self.bootstrap_queue, self.bootstrap_rounds = [], 0
            node = self.node
            for link in list(node.table):
                if link.my_roles & LEAF:
                    self.drop_role(link, LEAF, now)
                    if link.roleless:
                        # The link to the bootstrap peer has done its work: free its place in the
                        # bootstrap peer's table now (in a flash crowd it is full of joiners) rather
                        # than after the grace for unused links. No NEAR role: not in our view.
                        node.send_control(link, Close("joined"), now)
                        node.drop_link(link, "joined through it", now, notify=False, linger=True)
            self._set_state(JOINED, f"linked to ring neighbours {short(left[0])} and {short(right[0])}")

    def _join_probe(self, now: float, via: Address | None = None) -> None:
        """Find this node's place: a connect-to-me routed to our own address, excluding ourselves,
        answered by the closest existing node. ``via`` starts the search at a given peer (a lost peer
        that answered again after a partition: its ring may be another one)."""
        node = self.node
        reply_via = via if via is not None else self.reply_via()
        attempt = node.connector.connect_address(
            node.address, NEAR, now, exact=False, via=via, reply_via=reply_via
        )
        if attempt is not None:
            self.join_attempts.add(attempt)

    def connect_answered(self, attempt_id: int, now: float) -> None:
        self.bootstrap_attempts.discard(attempt_id)  # linked: a close of that link may move on at once
        if attempt_id in self.join_attempts:
            self.join_attempts.discard(attempt_id)
            self.join_answered = True

    def repair(self, now: float) -> None:
        """A near peer vanished: look for the node that now belongs in its place, on each side, with a
        connect-to-me routed to the midpoint between us and our nearest peer there. Any node between us
        and that peer is closer to the midpoint than the peer is, so greedy routing finds it if it
        exists."""
        node = self.node
        if self.state != JOINED:
            return
        me = node.address
        for side, nearest in ((1, node.table.right(1)), (-1, node.table.left(1))):
            gap = (clockwise(me, nearest[0]) if side == 1 else clockwise(nearest[0], me)) if nearest else RING
            if gap < 4:
                continue
            position = (me + side * (gap // 2)) % RING
            node.connector.connect_address(Address(position), NEAR, now, exact=False)

    def link_established(self, link: Link, role: int, now: float) -> None:
        self.node.liveness.watch(link, now)
        if role & LEAF and self.state == JOINED:
            self._join_probe(now, via=link.peer)

    def _seek_closer(self, left: list[Address], right: list[Address], now: float) -> None:
        """Link to known nodes that belong among our near peers."""
        node = self.node
        k = node.config.near_per_side
        me = node.address
        if not self.known:
            return
        connector = node.connector
        for side, linked in ((1, right), (-1, left)):
            limit = (
                clockwise(me, linked[-1])
                if side == 1 and len(linked) >= k
                else (clockwise(linked[-1], me) if side == -1 and len(linked) >= k else RING)
            )
            # Only known nodes nearer than our k-th linked peer on this side matter, and usually there
            # are none: filter before sorting (this runs on every change of the ring view).
            failed = self.failed
            if side == 1:
                closer = [(d, a) for a in self.known if (d := clockwise(me, a)) < limit and a not in failed]
            else:
                closer = [(d, a) for a in self.known if (d := clockwise(a, me)) < limit and a not in failed]
            if not closer:
                continue
            closer.sort()
            for _, addr in closer[:k]:
                if node.table.get(addr) is None and not connector.busy(addr):
                    connector.connect_address(Address(addr), NEAR, now, hints=self.known[addr][0])

    def neighbour_list(self) -> tuple[Neighbour, ...]:
        node = self.node
        k = node.config.near_per_side
        entries = []
        for addr in node.table.left(k) + node.table.right(k):
            link = node.table.get(addr)
            assert link is not None
            entries.append(Neighbour(addr, link.listed_endpoints()[:4]))
        return tuple(entries[:MAX_NEIGHBOURS])

    def _announce(self, now: float) -> None:
        node = self.node
        entries = self.neighbour_list()
        current = tuple(e.address for e in entries)
        if current == self.announced and now - self.last_announce < ANNOUNCE_S:
            return
        self.announced, self.last_announce = current, now
        message = Neighbours(entries)
        for link in node.table:
            # Our near peers, and every peer that counts us among its near peers: a node whose view
            # of the ring is stale (it still thinks we are its neighbour) learns from us who is
            # closer to it - Chord's stabilisation, by push.
            if (link.my_roles | link.peer_roles) & NEAR and link.sessions:
                node.send_control(link, message, now)

    def learn(self, entries: tuple[Neighbour, ...], now: float) -> None:
        node = self.node
        me = node.address
        k = node.config.near_per_side
        left, right = node.table.left(k), node.table.right(k)
        misplaced = False
        for entry in entries:
            if entry.address == me or node.table.get(entry.address) is not None:
                continue
            self.known[entry.address] = (entry.candidates, now)
            misplaced = misplaced or _belongs_among(me, entry.address, left, right, k)
        if misplaced and self.state == JOINED and now >= self.next_self_probe:
            # Hearsay names a node that belongs among our near peers: our view of the ring is off,
            # perhaps by far (concurrent joins leave nodes in a sparse ring of their own). Linking to
            # the nodes we heard of moves us a few places at a time; a probe routed to our own
            # address lands next to our true place in O(log N) hops. It starts at a peer that is not
            # one of our near peers: from inside a stray ring greedy routing would stay in it.
            self.next_self_probe = now + SELF_PROBE_S
            near = set(left) | set(right)
            others = sorted(link.peer for link in node.table if link.peer not in near and link.direct)
            self._join_probe(now, via=node.rng.choice(others) if others else None)
        if len(self.known) > KNOWN_MAX:
            ranked = sorted(self.known, key=lambda a: min(clockwise(me, a), clockwise(a, me)))
            for addr in ranked[KNOWN_MAX:]:
                del self.known[addr]
        self.recompute(now)

    # -- roles ---------------------------------------------------------------------------------------

    def add_role(self, link: Link, role: int, now: float, announce: bool = True) -> None:
        if link.my_roles & role != role:
            link.my_roles |= role
            if announce and link.sessions:
                self.node.send_control(link, Roles(link.my_roles), now)

    def drop_role(self, link: Link, role: int, now: float) -> None:
        if link.my_roles & role:
            link.my_roles &= ~role
            if link.sessions:
                self.node.send_control(link, Roles(link.my_roles), now)

    def roles_changed(self, link: Link, old_peer_roles: int, now: float) -> None:
        if link.peer_roles or link.my_roles:
            link.unused_since = None
        if link.peer_roles & NEAR and not old_peer_roles & NEAR and not link.my_roles & NEAR:
            # The peer thinks we are its ring neighbour but we know closer nodes: tell it about them.
            self.node.send_control(link, Neighbours(self.neighbour_list()), now)

    # -- liveness (``liveness`` decides; ``linkcare`` keeps what a lost peer leaves behind) ------------

    def lost_link(self, link: Link, now: float) -> None:
        lost_link(self, link, now)

    # -- hooks from routing and the connector --------------------------------------------------------

    def route_error(self, dest: Address, now: float) -> None:
        self.known.pop(dest, None)

    def attempt_failed(self, peer: Address | None, role: int, targets: list[Endpoint], now: float) -> None:
        if peer is not None:
            self.failed[peer] = now
            self.known.pop(peer, None)
            if role & SHORTCUT:
                previous = self.shortcut_retry.get(peer)
                wait = SHORTCUT_RETRY_S if previous is None else min(2 * previous[1], FAILED_HOLD_S)
                self.shortcut_retry[peer] = (now + wait, wait)
        if len(self.node.table) == 0 and self.node.config.bootstrap:
            self._bootstrap(now)  # the next bootstrap peer at once, not at the next tick

    def count_traffic(self, dest: Address, now: float) -> None:
        """Traffic-driven shortcuts: enough messages to one destination open a direct link to it."""
        start, count = self.traffic.get(dest, (now, 0))
        count += 1
        self.traffic[dest] = (start, count)
        if count == self.node.config.shortcut_after_messages:
            retry = self.shortcut_retry.get(dest)
            if retry is None or now >= retry[0]:
                self.node.connector.connect_address(dest, SHORTCUT, now)


def _belongs_among(me: int, addr: int, left: list[Address], right: list[Address], k: int) -> bool:
    """Would ``addr`` be one of our ``k`` nearest on its side of the ring?"""
    right_limit = clockwise(me, right[-1]) if len(right) >= k else RING
    left_limit = clockwise(left[-1], me) if len(left) >= k else RING
    return clockwise(me, addr) < right_limit or clockwise(addr, me) < left_limit
