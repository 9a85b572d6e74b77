"""Pure. The connect-to-me exchange (Brunet's CTM): how link attempts find their peer through the overlay.

Theory of operation. A requester routes ``Connect`` (a random token, its role, its candidate endpoints)
to the peer's address, or to a ring position when it wants whichever node is closest there (joining,
far links, repair). The node that receives it answers with ``ConnectReply`` (the same token, its own
candidates, and the nodes it reaches directly: its ring neighbours first) and starts punching back at
once (``punching``). The answer moves the requester's attempt from CONNECT to PUNCH (``connector``).

Greedy routing may not yet reach a node that the ring has not taken in, so a ``Connect`` to a node
learned from a neighbour list goes through the peer that named it (its *informant*, linked to both),
and the answer comes back the same way. ``MAX_INFORMANTS`` bounds what is remembered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .address import Address, closer
from .attempt import CONNECT, PUNCH, RETRANSMIT_S, Attempt
from .wire import Connect, ConnectReply, Neighbour

if TYPE_CHECKING:
    from .connector import Connector
    from .node import OverlayNode

MAX_INFORMANTS = 40
"""Nodes whose informant is remembered, the most recently named: more than the nodes a node keeps as
hearsay to link to (``maintenance.KNOWN_MAX``), and a bound whatever neighbour lists say. (A dict of up
to 42 entries takes 2.3 KB, one of 43 to 85 twice that.)
It was 256, which made this dict and its keys the biggest single item of a simulated node (16 KB of
~80 KB at N = 300, docs/simscale.md); a target whose informant was forgotten is still reached by
greedy routing, as before informants existed."""


MAX_READVERTISE = 3
"""A connect-to-me is sent again with fresh candidates only while it has been sent at most this often:
candidates that keep changing (a flapping NAT) must not hold the punch back for ever."""


class Signalling:
    """Connect-to-me messages of one node, sent and received (see the module docstring)."""

    __slots__ = ("connector", "informants", "node")

    def __init__(self, node: OverlayNode, connector: Connector) -> None:
        self.node = node
        self.connector = connector
        self.informants: dict[int, Address] = {}
        """For nodes heard of in neighbour lists: the link peer that named them (see ``heard_of``)."""

    def heard_of(self, informant: Address, entries: tuple[Neighbour, ...]) -> None:
        """``informant`` (a link peer) named ``entries`` among its neighbours: it is linked to them."""
        self.connector.relays.heard_neighbours(informant, entries)
        informants = self.informants
        for entry in entries:
            informants.pop(entry.address, None)
            informants[entry.address] = informant
        while len(informants) > MAX_INFORMANTS:
            del informants[next(iter(informants))]  # the oldest first: dicts keep insertion order

    def send_connect(self, attempt: Attempt, now: float) -> None:
        assert attempt.target is not None
        if attempt.exact and attempt.via is None:
            # Through the peer that told us of the target: greedy routing may not reach a node that
            # the ring has not taken in yet, but its informant is linked to it (and to us).
            informant = self.informants.get(attempt.target)
            link = self.node.table.get(informant) if informant is not None else None
            start = informant if link is not None and link.sessions else self._start_beside(attempt.target)
            if start is not None:
                attempt.via = start
                if attempt.reply_via is None:
                    attempt.reply_via = start
        candidates = self.connector.candidates()
        attempt.advertised = frozenset(candidates)
        msg = Connect(attempt.token, attempt.role, candidates, attempt.reply_via)
        self.node.send_overlay(
            attempt.target, msg, now, exact=attempt.exact, exclude_src=not attempt.exact, via=attempt.via
        )
        attempt.next_send = now + RETRANSMIT_S * (2**attempt.retries)
        attempt.retries += 1

    def _start_beside(self, target: Address) -> Address | None:
        """A linked peer to start a connect-to-me at when greedy routing from this node cannot make
        progress towards ``target`` (None when it can, or when nothing is linked): the peer closest
        to the target, from which greedy routing goes on. The answer goes back through it as well.

        Why. A node with few links, all farther from the target than itself, is where greedy routing
        ends: a connect-to-me to a node near its own ring position failed at its source, resent in
        vain until the attempt timed out. Seen in the simulator (a node behind a NAT with 20 % loss
        whose first neighbour list was lost kept only its bootstrap link for a minute, declared
        itself joined with that one link as both ring neighbours, and could not reach the peers its
        connect-to-me had just named); the likely cause of the NAT lab grid's lossy member that had
        no link at all to its traffic's destination after 100 s. By symmetry the target's answer
        could not reach this node either: its ring neighbours do not know it yet."""
        node = self.node
        me = node.address
        table = node.table
        nxt = table.closest(target, None)
        if nxt is None or nxt == target or closer(target, nxt, me):
            return None  # nothing linked, the target itself, or ordinary routing makes progress
        link = table.get(nxt)
        return nxt if link is not None and link.sessions and link.direct else None

    def on_overlay_message(self, src: Address, msg: Any, now: float, hops: int = 0) -> None:
        if isinstance(msg, Connect):
            self._on_connect(src, msg, now, hops)
        elif isinstance(msg, ConnectReply):
            self._on_connect_reply(src, msg, now)

    def _on_connect(self, src: Address, msg: Connect, now: float, hops: int) -> None:
        node, c = self.node, self.connector
        if src == node.address:
            return
        node.maintenance.learn((Neighbour(src, msg.candidates),), now)
        if msg.candidates:
            # Before the reply (causal order): our pre-punch leaves before the requester can learn
            # where to probe, so its probes never reach our router ahead of our own mapping.
            # Also when we hold a direct link to the requester: a node that holds a link does not
            # connect to its peer again, so most often its end is gone (its Close lost) and ours is
            # half open. A probe is answered only under a token we punch for: without this session
            # the requester's probes went unanswered, and a pair the lab can punch ended relayed
            # (the simulated lossy site). A connect-to-me for a ring position (a far link, a join)
            # may land on a node still linked to the requester: there too the requester may have
            # just closed its end (seen in the same scenario). In a plain overlay of 1,000 nodes
            # 28 % of connect-to-me messages come from a linked peer; their sessions cost ~2 KB per
            # node of resident memory after the mass join, and nothing in steady state.
            c.punch.respond(msg.token, src, msg.candidates, now, hops)
        reply = ConnectReply(msg.token, c.candidates(), c.relays.reply_neighbours())
        via = msg.reply_via
        link = node.table.get(src)
        if hops == 1 and link is not None and link.direct and link.sessions:
            # The requester sent this over its own link to us: the answer goes back over it, not
            # through the peer it joined through. A joiner's probe for its own position was so
            # answered through its bootstrap peer while that peer's ring neighbourhood was still
            # settling in a flash crowd; the answers were lost and it joined 15 s late (1 seed in 8).
            via = None
        node.send_overlay(src, reply, now, via=via)
        c.punch.answered(msg.token, reply.candidates, msg.reply_via)

    def _advertise_again(self, attempt: Attempt, now: float) -> bool:
        """Our candidates changed since the connect-to-me left (typically: we learned our public
        endpoint meanwhile, as nodes do while they join). The peer pre-punched only towards what we
        advertised, so our probes from the new endpoint would reach its router before any mapping of
        its own: on a router whose stack accepts unsolicited input that leaves a conntrack entry that
        takes the peer's port (the NAT lab's clash, seen in the NAT grid: both ends remapped, relayed).
        So the connect-to-me goes again under the same token with the current candidates; the peer
        pre-punches the new ones and answers again, and only that answer starts our probes."""
        if attempt.retries > MAX_READVERTISE or frozenset(self.connector.candidates()) <= attempt.advertised:
            return False
        self.node.counters["connect_readvertised"] += 1
        self.send_connect(attempt, now)
        attempt.next_send = now + RETRANSMIT_S
        self.node.set_timer(attempt.next_send, "attempt", attempt.id)
        return True

    def candidates_changed(self, now: float) -> None:
        """Our candidates changed (a peer showed us our public endpoint, typically just after joining)
        while punches are under way that advertised the old ones. A port-restricted NAT on the other
        side admits only endpoints its own side sent to, and the peer sends only to what we advertised:
        without the new candidates both sides' probes die at the other's router (the NAT grid's
        port x port pairs relayed after a join). So each such punch hears of them: a requester's
        connect-to-me goes again under its token (the peer pre-punches the new endpoints and answers),
        and a responder's answer goes again (the requester adds them to its session)."""
        node, c = self.node, self.connector
        candidates = c.candidates()
        current = frozenset(candidates)
        for attempt in list(c.attempts.values()):
            stale = attempt.state == PUNCH and bool(attempt.token) and not current <= attempt.advertised
            if stale and attempt.target is not None and attempt.retries <= MAX_READVERTISE:
                node.counters["connect_readvertised"] += 1
                self.send_connect(attempt, now)
                attempt.next_send = attempt.deadline
        for token, peer, reply_via in c.punch.responding(candidates):
            node.counters["connect_reply_readvertised"] += 1
            reply = ConnectReply(token, candidates, c.relays.reply_neighbours())
            node.send_overlay(peer, reply, now, via=reply_via)

    def _on_connect_reply(self, src: Address, msg: ConnectReply, now: float) -> None:
        node, c = self.node, self.connector
        attempt = c.by_token.get(msg.token)
        self.heard_of(src, msg.neighbours)
        node.maintenance.learn((*msg.neighbours, Neighbour(src, msg.candidates)), now)
        if attempt is not None and attempt.state == PUNCH and attempt.peer == src:
            c.punch.trickle(msg.token, msg.candidates, now)  # the peer's NAT became known meanwhile
            return
        if attempt is None or attempt.state != CONNECT:
            return
        node.maintenance.connect_answered(attempt.id, now)
        if attempt.peer is None:
            attempt.peer = src
            link = node.table.get(src)
            if link is not None or src in c.by_peer:
                if link is not None:
                    node.maintenance.add_role(link, attempt.role, now)
                c.finish(attempt, now)
                return
            c.by_peer[src] = attempt
        elif attempt.peer != src:
            return
        attempt.neighbours = msg.neighbours
        if self._advertise_again(attempt, now):
            return
        attempt.punch_started = now
        # The time the connect-to-me took to find the peer is not the link set-up's to lose.
        attempt.deadline = max(attempt.deadline, now + node.config.handshake_timeout_s)
        if not msg.candidates or not c.punch.start(msg.token, src, msg.candidates, now, attempt=attempt.id):
            attempt.state = PUNCH
            c.punch_failed(attempt, "nothing to punch", now)
            return
        attempt.state = PUNCH
        attempt.next_send = attempt.deadline
        node.set_timer(attempt.next_send, "attempt", attempt.id)
