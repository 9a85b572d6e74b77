"""Pure. Link set-up: every way two nodes come to share an authenticated link.

Theory of operation. An *attempt* is one effort to link to a peer, with one link handshake (``linksec``)
whose INIT may be sent to several places. Its states and transitions, in one place:

    HANDSHAKE --RESP--> CONFIRM --peer's first packet--> done        (a known endpoint: bootstrap, LAN)
    CONNECT --ConnectReply--> PUNCH --RESP--> CONFIRM --> done        (any member, behind any NAT)
                               PUNCH --punch timeout--> TUNNEL --RESP--> CONFIRM --> done
    any state --handshake timeout--> failed

* CONNECT: the requester routes a connect-to-me message over the overlay (Brunet's CTM) to the peer's
  address, or to a ring position for a far link, carrying its candidate endpoints. The receiver answers
  with its own candidates and neighbours, first sends one low-TTL packet to each of the requester's
  candidates (it opens the receiver's own NAT mapping without reaching the requester's NAT: the NAT lab
  showed that otherwise a router that accepts unsolicited input takes the port and the punch deadlocks),
  then punch probes so that the requester learns its peer-reflexive endpoint.
* PUNCH: the requester sends its INIT to every candidate, low-TTL first, then every ``PUNCH_INTERVAL_S``
  until one answers. The INIT is the probe: the first answer is already the handshake reply.
* TUNNEL: no direct path formed; the INIT travels through the overlay via a neighbour both ends are
  linked to (Brunet's tunnel edge), or greedily routed when there is none. The relay sees only sealed
  link packets, and later traffic may still upgrade the link to a direct path.
* CONFIRM: the initiator holds keys but the responder may not have received FIN; FIN is repeated until
  the peer's first sealed packet arrives.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .address import Address, short
from .events import Endpoint
from .punchback import PREPUNCH_TTL, PUNCH_INTERVAL_S, PunchBacks
from .reflexive import Reflexive
from .table import LEAF, Link
from .wire import Connect, ConnectReply, Hello, Neighbour

if TYPE_CHECKING:
    from .linksec import InitiatorHandshake, Session
    from .node import OverlayNode, Path

log = logging.getLogger(__name__)

RETRANSMIT_S = 1.0
"""First retransmission of a handshake or connect-to-me message; doubles each time (TCP's initial RTO)."""

HANDSHAKE, CONNECT, PUNCH, TUNNEL, CONFIRM = "handshake", "connect", "punch", "tunnel", "confirm"


@dataclass(frozen=True, slots=True)
class TunnelPath:
    """A link path through the overlay: routed to ``peer`` via ``relay`` (or greedily when ``None``)."""

    peer: Address
    relay: Address | None


class Attempt:
    __slots__ = (
        "deadline",
        "exact",
        "handshake",
        "id",
        "neighbours",
        "next_send",
        "peer",
        "punch_deadline",
        "reply_via",
        "retries",
        "role",
        "session",
        "state",
        "target",
        "targets",
        "token",
        "tunnel",
        "via",
    )

    def __init__(
        self, attempt_id: int, state: str, role: int, peer: Address | None, now: float, timeout: float
    ) -> None:
        self.id = attempt_id
        self.state = state
        self.role = role
        self.peer = peer
        self.handshake: InitiatorHandshake | None = None
        self.session: Session | None = None
        self.targets: list[Endpoint] = []
        self.token = 0
        self.deadline = now + timeout
        self.punch_deadline = 0.0
        self.next_send = now
        self.retries = 0
        self.neighbours: tuple[Neighbour, ...] = ()
        self.tunnel: TunnelPath | None = None
        self.target: Address | None = peer
        self.exact = True
        self.via: Address | None = None
        self.reply_via: Address | None = None


class Connector:
    def __init__(self, node: OverlayNode) -> None:
        self.node = node
        self.attempts: dict[int, Attempt] = {}
        self.by_peer: dict[int, Attempt] = {}
        self.by_handshake: dict[int, Attempt] = {}
        self.by_token: dict[int, Attempt] = {}
        self.punch = PunchBacks(node)
        self.reflexive = Reflexive(node.local_endpoints)
        self._next_id = 0
        self.outcomes: Counter[str] = Counter()

    # -- starting attempts ------------------------------------------------------------------------------

    def _new(self, state: str, role: int, peer: Address | None, now: float) -> Attempt:
        self._next_id += 1
        attempt = Attempt(self._next_id, state, role, peer, now, self.node.config.handshake_timeout_s)
        self.attempts[attempt.id] = attempt
        if peer is not None:
            self.by_peer[peer] = attempt
        return attempt

    def _handshake(self, attempt: Attempt, now: float) -> InitiatorHandshake:
        if attempt.handshake is None:
            attempt.handshake = self.node.security.initiate(now, expected_peer=attempt.peer)
            self.by_handshake[attempt.handshake.index] = attempt
        return attempt.handshake

    def busy(self, peer: int) -> bool:
        return peer in self.by_peer

    def connect_endpoint(self, endpoint: Endpoint, role: int, now: float) -> int:
        """Handshake straight to an underlay endpoint whose owner is unknown (a bootstrap peer)."""
        attempt = self._new(HANDSHAKE, role, None, now)
        attempt.targets = [endpoint]
        self._send_inits(attempt, now)
        return attempt.id

    def connect_address(
        self,
        peer: Address,
        role: int,
        now: float,
        *,
        hints: tuple[Endpoint, ...] = (),
        exact: bool = True,
        via: Address | None = None,
        reply_via: Address | None = None,
    ) -> int | None:
        """Link to the node ``peer`` (``exact``), or to whichever node other than this one is closest to
        the ring position ``peer`` (far links, joining, repair; the attempt learns who answered).
        ``via`` makes the connect-to-me start at that peer; ``reply_via`` is where the answer must go
        first (a node not yet in the ring is reachable only through the peer it joined through).
        Returns the attempt id, or ``None`` when a link or attempt already exists (the role is added)."""
        node = self.node
        if exact:
            link = node.table.get(peer)
            if link is not None:
                node.maintenance.add_role(link, role, now)
                return None
            existing = self.by_peer.get(peer)
            if existing is not None:
                existing.role |= role
                return None
        attempt = self._new(CONNECT, role, peer if exact else None, now)
        attempt.token = node.rng.getrandbits(62)
        attempt.target, attempt.exact, attempt.via = peer, exact, via
        attempt.reply_via = reply_via if reply_via is not None else node.maintenance.reply_via()
        self.by_token[attempt.token] = attempt
        attempt.targets = list(hints)
        self._send_connect(attempt, now)
        if hints and exact:
            self._send_inits(attempt, now, prepunch=True)
        node.set_timer(attempt.next_send, "attempt", attempt.id)
        return attempt.id

    def _send_connect(self, attempt: Attempt, now: float) -> None:
        assert attempt.target is not None
        msg = Connect(attempt.token, attempt.role, self.candidates(), attempt.reply_via)
        self.node.send_overlay(
            attempt.target, msg, now, exact=attempt.exact, exclude_src=not attempt.exact, via=attempt.via
        )
        attempt.next_send = now + RETRANSMIT_S * (2**attempt.retries)
        attempt.retries += 1

    def rekey(self, link: Link, now: float) -> None:
        """A fresh key exchange on an existing link, along its current path."""
        if link.peer in self.by_peer:
            return
        attempt = self._new(HANDSHAKE, 0, link.peer, now)
        if link.endpoint is not None:
            attempt.targets = [link.endpoint]
            self._send_inits(attempt, now)
            return
        attempt.state = TUNNEL
        attempt.tunnel = TunnelPath(link.peer, link.relay)
        self.node.transmit(self._handshake(attempt, now).packet, attempt.tunnel, now)
        attempt.next_send = now + RETRANSMIT_S
        self.node.set_timer(attempt.next_send, "attempt", attempt.id)

    def _send_inits(self, attempt: Attempt, now: float, prepunch: bool = False) -> None:
        hs = self._handshake(attempt, now)
        for endpoint in attempt.targets:
            if prepunch:
                self.node.transmit(hs.packet, endpoint, now, ttl=PREPUNCH_TTL)
            self.node.transmit(hs.packet, endpoint, now)
        if attempt.state == HANDSHAKE:
            attempt.next_send = now + RETRANSMIT_S * (2**attempt.retries)
            attempt.retries += 1
            self.node.set_timer(attempt.next_send, "attempt", attempt.id)

    # -- timers ---------------------------------------------------------------------------------------

    def on_timer(self, attempt_id: int, now: float) -> None:
        attempt = self.attempts.get(attempt_id)
        if attempt is None:
            return
        if now >= attempt.deadline:
            self._fail(attempt, "timeout", now)
            return
        if now < attempt.next_send:
            self.node.set_timer(attempt.next_send, "attempt", attempt.id)
            return
        state = attempt.state
        if state == HANDSHAKE:
            self._send_inits(attempt, now)
            return
        if state == CONNECT:
            self._send_connect(attempt, now)
            if attempt.targets:
                self._send_inits(attempt, now)
        elif state == PUNCH:
            if now >= attempt.punch_deadline:
                self._start_tunnel(attempt, now)
                return
            self._send_inits(attempt, now)
            attempt.next_send = now + PUNCH_INTERVAL_S
        elif state == TUNNEL:
            assert attempt.tunnel is not None
            self.node.transmit(self._handshake(attempt, now).packet, attempt.tunnel, now)
            attempt.next_send = now + RETRANSMIT_S
        elif state == CONFIRM:
            session = attempt.session
            if session is None or session.confirmed:
                self._finish(attempt)
                return
            fin = session.fin_packet
            link = self.node.table.get(session.peer_address)
            if fin is not None and link is not None:
                self.node.transmit(fin, self.node.link_path(link), now)
                self._send_hello(link, now)
            attempt.next_send = now + RETRANSMIT_S
        self.node.set_timer(attempt.next_send, "attempt", attempt.id)

    def _start_tunnel(self, attempt: Attempt, now: float) -> None:
        node = self.node
        assert attempt.peer is not None
        relay: Address | None = None
        best: float | None = None
        for neighbour in attempt.neighbours:
            link = node.table.get(neighbour.address)
            if link is None or not link.direct:
                continue
            rtt = link.srtt if link.srtt is not None else 1.0
            if best is None or rtt < best:
                relay, best = neighbour.address, rtt
        attempt.state = TUNNEL
        attempt.tunnel = TunnelPath(attempt.peer, relay)
        self.outcomes["punch_failed"] += 1
        log.info(
            "%s no direct path to %s; tunnelling via %s",
            node.log_prefix,
            short(attempt.peer),
            short(relay) if relay is not None else "the overlay",
        )
        node.transmit(self._handshake(attempt, now).packet, attempt.tunnel, now)
        attempt.next_send = now + RETRANSMIT_S
        node.set_timer(attempt.next_send, "attempt", attempt.id)

    def _fail(self, attempt: Attempt, reason: str, now: float) -> None:
        self.outcomes[f"failed_{attempt.state}"] += 1
        log.debug("%s attempt %d (%s) failed: %s", self.node.log_prefix, attempt.id, attempt.state, reason)
        session = attempt.session
        self._finish(attempt)
        if session is not None and not session.confirmed:
            link = self.node.table.get(session.peer_address)
            if link is not None and link.sessions == [session]:
                self.node.drop_link(link, "handshake never confirmed", now)
        self.node.maintenance.attempt_failed(attempt.peer, attempt.role, attempt.targets, now)

    def _finish(self, attempt: Attempt) -> None:
        self.attempts.pop(attempt.id, None)
        if attempt.peer is not None and self.by_peer.get(attempt.peer) is attempt:
            del self.by_peer[attempt.peer]
        if attempt.handshake is not None:
            self.by_handshake.pop(attempt.handshake.index, None)
        if attempt.token:
            self.by_token.pop(attempt.token, None)

    # -- handshake results --------------------------------------------------------------------------

    def on_established(self, session: Session, path: Path, now: float) -> None:
        node = self.node
        peer = session.peer_address
        attempt = self.by_handshake.get(session.index) if session.initiator else None
        link = node.table.get(peer)
        new = link is None
        if link is None:
            if len(node.table) >= node.config.max_links:
                node.counters["links_refused_full"] += 1
                node.security.close_session(session)
                return
            link = Link(peer, now)
            node.table.add(link)
        link.sessions.append(session)
        if len(link.sessions) > 3:
            node.security.close_session(link.sessions.pop(0))
        self._set_path(link, path)
        if attempt is not None:
            # The peer's punch probe often beats its ConnectReply (one hop against a routed path):
            # a session is an answer too.
            node.maintenance.connect_answered(attempt.id, now)
            if attempt.peer is None:  # a far link or a bootstrap: now we know who answered
                attempt.peer = peer
            node.maintenance.add_role(link, attempt.role, now, announce=False)
            self.outcomes["direct" if link.direct else "tunnel"] += 1
            if session.confirmed:
                self._finish(attempt)
            else:
                attempt.state = CONFIRM
                attempt.session = session
                attempt.next_send = now + RETRANSMIT_S
                node.set_timer(attempt.next_send, "attempt", attempt.id)
        pending = self.by_peer.get(peer)
        if pending is not None and pending is not attempt and pending.state != CONFIRM:
            # The peer reached us first (simultaneous open, or it answered our connect-to-me with a
            # handshake of its own): our attempt has nothing left to do.
            node.maintenance.add_role(link, pending.role, now, announce=False)
            self._finish(pending)
        self.punch.stop(peer)
        self._send_hello(link, now)
        if new:
            node.link_up(link)
            node.maintenance.link_established(link, attempt.role if attempt else 0, now)
        node.maintenance.ring_changed(now)

    def on_handshake_failed(self, index: int, answered_by: Address, now: float) -> None:
        """Our INIT reached an authentic node other than the one we meant (the peer moved, or its
        endpoint now belongs to someone else): this attempt is over; the node that answered is known."""
        attempt = self.by_handshake.get(index)
        if attempt is None:
            return
        self.outcomes["peer_mismatch"] += 1
        self._fail(attempt, f"answered by {short(answered_by)}", now)

    def _send_hello(self, link: Link, now: float) -> None:
        self.node.send_control(link, Hello(link.my_roles, self.candidates(), link.endpoint), now)

    def _set_path(self, link: Link, path: Path) -> None:
        if isinstance(path, TunnelPath):
            if link.endpoint is None:
                link.relay = path.relay
        else:
            link.endpoint = path
            link.relay = None

    def hello_received(self, link: Link, now: float) -> None:
        attempt = self.by_peer.get(link.peer)
        if (
            attempt is not None
            and attempt.state == CONFIRM
            and attempt.session is not None
            and attempt.session.confirmed
        ):
            self._finish(attempt)

    def path_changed(self, link: Link, endpoint: Endpoint, now: float) -> None:
        """An authenticated packet arrived from a new underlay endpoint: the peer roamed, or a direct
        path now works where we had a tunnel. Follow it, as WireGuard does."""
        if link.endpoint is None:
            self.outcomes["upgraded_to_direct"] += 1
            log.info("%s link to %s upgraded to direct %s", self.node.log_prefix, short(link.peer), endpoint)
        else:
            self.outcomes["roamed"] += 1
        link.endpoint = endpoint
        link.relay = None

    # -- connect-to-me ------------------------------------------------------------------------------

    def on_overlay_message(self, src: Address, msg: Any, now: float) -> None:
        if isinstance(msg, Connect):
            self._on_connect(src, msg, now)
        elif isinstance(msg, ConnectReply):
            self._on_connect_reply(src, msg, now)

    def _on_connect(self, src: Address, msg: Connect, now: float) -> None:
        node = self.node
        if src == node.address:
            return
        node.maintenance.learn((Neighbour(src, msg.candidates),), now)
        reply = ConnectReply(msg.token, self.candidates(), node.maintenance.neighbour_list())
        node.send_overlay(src, reply, now, via=msg.reply_via)
        if msg.candidates:
            self.punch.start(src, msg.token, msg.candidates, now)

    def _on_connect_reply(self, src: Address, msg: ConnectReply, now: float) -> None:
        node = self.node
        attempt = self.by_token.get(msg.token)
        node.maintenance.learn((*msg.neighbours, Neighbour(src, msg.candidates)), now)
        if attempt is None or attempt.state != CONNECT:
            return
        node.maintenance.connect_answered(attempt.id, now)
        if attempt.peer is None:
            attempt.peer = src
            link = node.table.get(src)
            if link is not None or src in self.by_peer:
                if link is not None:
                    node.maintenance.add_role(link, attempt.role, now)
                self._finish(attempt)
                return
            self.by_peer[src] = attempt
        elif attempt.peer != src:
            return
        attempt.state = PUNCH
        attempt.neighbours = msg.neighbours
        for endpoint in msg.candidates:
            if endpoint not in attempt.targets:
                attempt.targets.append(endpoint)
        attempt.punch_deadline = now + node.config.punch_timeout_s
        attempt.next_send = now + PUNCH_INTERVAL_S
        attempt.retries = 0
        self._send_inits(attempt, now, prepunch=True)
        node.set_timer(attempt.next_send, "attempt", attempt.id)

    # -- probes and foreign datagrams ---------------------------------------------------------------

    def on_probe(self, data: bytes, path: Path, now: float) -> None:
        """A punch probe from the peer of a connect-to-me: where it came from is where the peer can
        be reached (a peer-reflexive candidate), so the handshake goes there at once."""
        if isinstance(path, TunnelPath):
            self.node.counters["rx_dropped_tunnelled_probe"] += 1
            return
        token = self.punch.receive(data, path, now)
        attempt = self.by_token.get(token) if token is not None else None
        if attempt is None or attempt.state not in (CONNECT, PUNCH):
            return
        if path not in attempt.targets:
            attempt.targets.append(path)
            self.outcomes["prflx_learned"] += 1
            self.node.transmit(self._handshake(attempt, now).packet, path, now)

    def on_foreign_datagram(self, data: bytes, path: Path, now: float) -> None:
        self.node.counters["rx_dropped_foreign"] += 1

    # -- where this node can be reached ---------------------------------------------------------------

    def observed(self, link: Link, endpoint: Endpoint | None, now: float) -> None:
        self.reflexive.observed(link.peer, endpoint)

    def candidates(self) -> tuple[Endpoint, ...]:
        return self.reflexive.candidates()

    def nat_status(self) -> dict[str, Any]:
        return {**self.reflexive.status(), "outcomes": dict(sorted(self.outcomes.items()))}

    def leaf_links(self) -> list[Link]:
        return [link for link in self.node.table if link.my_roles & LEAF]
