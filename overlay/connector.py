"""Pure. Link set-up: every way two nodes come to share an authenticated link.

Theory of operation. An *attempt* is one effort to link to a peer, with one link handshake (``linksec``).
Its states and transitions, in one place:

    HANDSHAKE --RESP--> CONFIRM --peer's first packet--> done         (a known endpoint: bootstrap, LAN)
    CONNECT --ConnectReply--> PUNCH --punch succeeded--> HANDSHAKE     (any member, behind any NAT)
                              PUNCH --punch failed--> TUNNEL --RESP--> CONFIRM --> done
    HANDSHAKE (after a punch) --no RESP by ``tunnel_at``--> TUNNEL
    any state --handshake timeout--> failed

* CONNECT: the requester routes a connect-to-me message over the overlay (Brunet's CTM) to the peer's
  address, or to a ring position for a far link, carrying a random token and its candidate endpoints.
  The receiver answers with its own candidates and neighbours and starts punching at once (``punching``:
  its pre-punch opens its own NAT, its full probes wait until the requester's side is open).
* PUNCH: the requester punches towards the answer's candidates under the same token. A reply to one of
  its probes proves a two-way path; the handshake then goes there (HANDSHAKE, with a deadline).
* TUNNEL: no direct path formed; the INIT travels through the overlay via a neighbour both ends are
  linked to (Brunet's tunnel edge, chosen by ``relay``), or greedily routed when there is none. The
  relay sees only sealed link packets. ``relay`` later retries a direct path (an *upgrade* attempt: the
  same CONNECT and PUNCH on the existing link, whose handshake then moves the link to the direct path;
  a failed upgrade leaves the tunnel as it was).
* CONFIRM: the initiator holds keys but the responder may not have received FIN; FIN is repeated until
  the peer's first sealed packet arrives.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from nat import PunchEvent, PunchSucceeded, is_beacon, is_private, is_probe, is_stun

from .address import Address, short
from .attempt import (
    CONFIRM,
    CONNECT,
    DIRECT_HANDSHAKE_S,
    DIRECT_RETRANSMIT_S,
    HANDSHAKE,
    PUNCH,
    RETRANSMIT_S,
    TUNNEL,
    Attempt,
    SetupTimes,
)
from .events import Endpoint
from .linkcare import make_room
from .punching import Puncher
from .reflexive import Reflexive
from .relay import Relays, TunnelPath
from .signalling import Signalling
from .table import Link
from .wire import Close, Hello, Neighbour, encode_control

if TYPE_CHECKING:
    from .linksec import InitiatorHandshake, Session
    from .node import OverlayNode, Path

log = logging.getLogger(__name__)


class Connector:
    __slots__ = (
        "_next_id",
        "attempts",
        "by_handshake",
        "by_peer",
        "by_token",
        "direct_times",
        "node",
        "outcomes",
        "punch",
        "reflexive",
        "relays",
        "signalling",
    )

    def __init__(self, node: OverlayNode) -> None:
        self.node = node
        self.attempts: dict[int, Attempt] = {}
        self.by_peer: dict[int, Attempt] = {}
        self.by_handshake: dict[int, Attempt] = {}
        self.by_token: dict[int, Attempt] = {}
        self.reflexive = Reflexive(node.local_endpoints, node.log_prefix)
        self.punch = Puncher(node, self.on_punch_result)
        self.relays = Relays(node)
        self.signalling = Signalling(node, self)
        self._next_id = 0
        self.outcomes: Counter[str] = Counter()
        self.direct_times = SetupTimes()

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

    def heard_of(self, informant: Address, entries: tuple[Neighbour, ...]) -> None:
        """``informant`` (a link peer) named ``entries`` among its neighbours: it is linked to them."""
        self.signalling.heard_of(informant, entries)

    def on_overlay_message(self, src: Address, msg: Any, now: float, hops: int = 0) -> None:
        self.signalling.on_overlay_message(src, msg, now, hops)

    def busy(self, peer: int) -> bool:
        """An attempt to link with ``peer`` is under way, ours or the peer's (we are punching back)."""
        return peer in self.by_peer or self.punch.punching(peer)

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
        ``hints`` are endpoints the peer is believed to have: our NAT is opened towards them at once.
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
        attempt.target, attempt.exact, attempt.via = peer, exact, via
        attempt.reply_via = reply_via if reply_via is not None else node.maintenance.reply_via()
        self._start_connect(attempt, hints if exact else (), now)
        local = node.lan.endpoint_of(peer, now) if exact else None
        if local is not None:
            # A member heard on our LAN: the handshake goes straight to its local endpoint (no
            # hairpinning through our router, no relay); the connect-to-me still runs as a fallback.
            attempt.targets = [local]
            self._send_inits(attempt, now)
            return attempt.id
        if exact and hints and not any(is_private(host) for host, _ in hints):
            # A peer without a private address is most likely public: a handshake straight to it
            # links at once, without waiting for the connect-to-me to find it through the ring. (Not
            # to a peer behind a NAT: an unsolicited packet can take its router's port, see punching.)
            attempt.targets = list(hints)
            self._send_inits(attempt, now)
        return attempt.id

    def try_direct(self, link: Link, now: float) -> int | None:
        """An upgrade attempt for a tunnelled link: connect-to-me and punch again; a handshake on the
        path found moves the link to it. Nothing changes when punching fails."""
        if link.peer in self.by_peer or link.direct:
            return None
        attempt = self._new(CONNECT, 0, link.peer, now)
        attempt.upgrade = True
        self._start_connect(attempt, link.candidates, now)
        return attempt.id

    def _start_connect(self, attempt: Attempt, hints: tuple[Endpoint, ...], now: float) -> None:
        attempt.token = self.node.rng.getrandbits(62) or 1
        self.by_token[attempt.token] = attempt
        if hints:
            self.punch.prepunch(attempt.token, hints, now)
        self.signalling.send_connect(attempt, now)
        self.node.set_timer(attempt.next_send, "attempt", attempt.id)

    def connect_local(self, peer: Address, endpoint: Endpoint, role: int, now: float) -> int:
        """A handshake straight to ``peer`` at a LAN ``endpoint`` (heard in its beacon): for an existing
        link, a move to the local path once the handshake completes (``role`` 0)."""
        attempt = self._new(HANDSHAKE, role, peer, now)
        attempt.targets = [endpoint]
        self._send_inits(attempt, now)
        return attempt.id

    def rekey(self, link: Link, now: float) -> None:
        """A fresh key exchange on an existing link, along its current path."""
        if link.peer in self.by_peer:
            return
        attempt = self._new(HANDSHAKE, 0, link.peer, now)
        if link.endpoint is not None:
            attempt.targets = [link.endpoint]
            self._send_inits(attempt, now)
            return
        self._tunnel(attempt, TunnelPath(link.peer, link.relay), now)

    def _send_inits(self, attempt: Attempt, now: float) -> None:
        hs = self._handshake(attempt, now)
        for endpoint in attempt.targets:
            self.node.transmit(hs.packet, endpoint, now)
        attempt.next_send = now + RETRANSMIT_S * (2**attempt.retries)
        attempt.retries += 1
        if attempt.tunnel_at is not None:  # after a punch: fast, and only until the fallback
            attempt.next_send = min(now + DIRECT_RETRANSMIT_S, attempt.tunnel_at)
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
            if attempt.tunnel_at is not None and now >= attempt.tunnel_at:
                self.punch_failed(attempt, "the direct handshake went unanswered", now)
            else:
                self._send_inits(attempt, now)
            return
        if state == CONNECT:
            self.signalling.send_connect(attempt, now)
        elif state == PUNCH:
            # The punch session has its own timer and reports back; this only guards the deadline.
            attempt.next_send = attempt.deadline
        elif state == TUNNEL:
            assert attempt.tunnel is not None
            if attempt.tunnel.relay is None and attempt.peer is not None and not attempt.upgrade:
                relay = self.relays.choose(attempt.neighbours)  # recruited by now?
                attempt.tunnel = TunnelPath(attempt.peer, relay)
            self.node.transmit(self._handshake(attempt, now).packet, attempt.tunnel, now)
            attempt.next_send = now + RETRANSMIT_S
        elif state == CONFIRM:
            session = attempt.session
            if session is None or session.confirmed:
                self.finish(attempt, now)
                return
            fin = session.fin_packet
            link = self.node.table.get(session.peer_address)
            if fin is not None and link is not None:
                self.node.transmit(fin, self.node.link_path(link), now)
                self._send_hello(link, now)
            attempt.next_send = now + RETRANSMIT_S
        self.node.set_timer(attempt.next_send, "attempt", attempt.id)

    def on_punch_result(self, attempt_id: int, event: PunchEvent, now: float) -> None:
        """The requester's punch session ended: handshake on the direct path, or fall back."""
        attempt = self.attempts.get(attempt_id)
        if attempt is None or attempt.state != PUNCH:
            return
        if isinstance(event, PunchSucceeded):
            self.outcomes["punch_succeeded"] += 1
            if event.peer_reflexive:
                self.outcomes["punch_via_prflx"] += 1
            attempt.state = HANDSHAKE
            attempt.targets = [event.endpoint]
            attempt.retries = 0
            attempt.tunnel_at = now + DIRECT_HANDSHAKE_S
            self._send_inits(attempt, now)
            return
        self.punch_failed(attempt, "no direct path", now)

    def punch_failed(self, attempt: Attempt, reason: str, now: float) -> None:
        self.outcomes["punch_failed"] += 1
        node = self.node
        assert attempt.peer is not None
        if attempt.upgrade:
            self.outcomes["upgrade_failed"] += 1
            log.debug("%s still no direct path to %s", node.log_prefix, short(attempt.peer))
            self.finish(attempt, now)
            self.relays.upgrade_failed(attempt.peer, attempt.neighbours, now)
            return
        relay = self.relays.choose(attempt.neighbours)
        self.relays.remember(attempt.peer, attempt.neighbours)
        if relay is None:
            self.relays.recruit(attempt.neighbours, now)
        log.info(
            "%s %s to %s; tunnelling via %s",
            node.log_prefix,
            reason,
            short(attempt.peer),
            short(relay) if relay is not None else "the overlay",
        )
        self._tunnel(attempt, TunnelPath(attempt.peer, relay), now)

    def _tunnel(self, attempt: Attempt, path: TunnelPath, now: float) -> None:
        attempt.state = TUNNEL
        attempt.tunnel = path
        attempt.tunnel_at = None
        self.node.transmit(self._handshake(attempt, now).packet, path, now)
        attempt.next_send = now + RETRANSMIT_S
        self.node.set_timer(attempt.next_send, "attempt", attempt.id)

    def _fail(self, attempt: Attempt, reason: str, now: float) -> None:
        self.outcomes[f"failed_{attempt.state}"] += 1
        log.debug("%s attempt %d (%s) failed: %s", self.node.log_prefix, attempt.id, attempt.state, reason)
        session = attempt.session
        self.finish(attempt, now)
        if attempt.upgrade:
            return
        if session is not None and not session.confirmed:
            link = self.node.table.get(session.peer_address)
            if link is not None and link.sessions == [session]:
                self.node.drop_link(link, "handshake never confirmed", now)
        self.node.maintenance.attempt_failed(attempt.peer, attempt.role, attempt.targets, now)

    def finish(self, attempt: Attempt, now: float) -> None:
        self.attempts.pop(attempt.id, None)
        if attempt.peer is not None and self.by_peer.get(attempt.peer) is attempt:
            del self.by_peer[attempt.peer]
        if attempt.handshake is not None:
            self.by_handshake.pop(attempt.handshake.index, None)
        if attempt.token:
            self.by_token.pop(attempt.token, None)
            self.punch.finish(attempt.token, now)

    # -- handshake results --------------------------------------------------------------------------

    def on_established(self, session: Session, path: Path, now: float) -> None:
        node = self.node
        peer = session.peer_address
        attempt = self.by_handshake.get(session.index) if session.initiator else None
        link = node.table.get(peer)
        new = link is None
        if link is None:
            if len(node.table) >= node.config.max_links and not make_room(node.maintenance, now):
                node.counters["links_refused_full"] += 1
                self._refuse(session, path, now)
                return
            link = Link(peer, now)
            node.table.add(link)
        link.sessions.append(session)
        if len(link.sessions) > 3:
            node.security.close_session(link.sessions.pop(0))
        self._set_path(link, path, now)
        if attempt is not None:
            # The peer's punch probe often beats its ConnectReply (one hop against a routed path):
            # a session is an answer too.
            node.maintenance.connect_answered(attempt.id, now)
            if attempt.peer is None:  # a far link or a bootstrap: now we know who answered
                attempt.peer = peer
            node.maintenance.add_role(link, attempt.role, now, announce=False)
            if attempt.token:
                self.outcomes["direct" if not isinstance(path, TunnelPath) else "tunnel"] += 1
                if attempt.punch_started is not None and not isinstance(path, TunnelPath):
                    self.direct_times.add(now - attempt.punch_started)
            if session.confirmed:
                self.finish(attempt, now)
            else:
                attempt.state = CONFIRM
                attempt.session = session
                attempt.next_send = now + RETRANSMIT_S
                node.set_timer(attempt.next_send, "attempt", attempt.id)
        pending = self.by_peer.get(peer)
        if (
            pending is not None
            and pending is not attempt
            and pending.state != CONFIRM
            and not (pending.upgrade and isinstance(path, TunnelPath))
        ):
            # The peer reached us first (simultaneous open, or it answered our connect-to-me with a
            # handshake of its own): our attempt has nothing left to do, unless it seeks a direct
            # path that this handshake did not bring.
            node.maintenance.add_role(link, pending.role, now, announce=False)
            self.finish(pending, now)
        self.punch.stop_peer(peer, now)
        self._send_hello(link, now)
        if new:
            node.link_up(link)
            node.maintenance.link_established(link, attempt.role if attempt else 0, now)
        node.maintenance.ring_changed(now)
        if peer not in self.by_peer:  # a member on our LAN: onto the local path with it
            node.lan.link_up(peer, now)

    def _refuse(self, session: Session, path: Path, now: float) -> None:
        """Close a session the table has no room for, saying so: a silent refusal left the peer with a
        link that looked up until its keepalives failed (a joiner stalled for a minute); told, it turns
        to its next bootstrap peer at once."""
        node = self.node
        node.transmit(session.seal(encode_control(Close("full")), now), path, now)  # fresh: can seal
        node.security.close_session(session)

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

    def _set_path(self, link: Link, path: Path, now: float) -> None:
        if isinstance(path, TunnelPath):
            if link.endpoint is None:
                self.relays.set_relay(link, path.relay, now)
                self.relays.tunnelled(link, now)
            return
        if link.endpoint is None and link.sessions[:-1]:
            self.outcomes["upgraded_to_direct"] += 1
            log.info("%s link to %s upgraded to direct %s", self.node.log_prefix, short(link.peer), path)
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
            self.finish(attempt, now)
        if not link.direct:
            self.relays.candidates_heard(link, now)

    def path_changed(self, link: Link, path: Path, now: float) -> bool:
        """An authenticated packet arrived along another path than the link's. From a new underlay
        endpoint on a direct link: the peer roamed; follow it, as WireGuard does. Through another relay
        on a tunnelled link: the peer moved its tunnel; answer the same way. A direct packet on a
        tunnelled link proves only one direction, so it changes nothing: upgrades go through a punch.
        Returns whether the link's path changed."""
        if isinstance(path, TunnelPath):
            if link.endpoint is None and path.relay != link.relay and path.relay is not None:
                self.outcomes["relay_followed"] += 1
                self.relays.set_relay(link, path.relay, now)
                return True
            return False
        if link.endpoint is None:
            self.node.counters["rx_direct_on_tunnel"] += 1
            return False
        self.outcomes["roamed"] += 1
        link.endpoint = path
        link.relay = None
        return True

    # -- datagrams that are not link packets ----------------------------------------------------------

    def on_probe(self, data: bytes, path: Path, now: float) -> None:
        """A datagram of the overlay's wire that is not a link packet: a punch probe or a LAN beacon."""
        if isinstance(path, TunnelPath):
            self.node.counters["rx_dropped_tunnelled_probe"] += 1
            return
        if is_probe(data):
            self.punch.receive(data, path, now)
        elif is_beacon(data):
            self.node.lan.on_beacon(data, path, now)
        else:
            self.node.counters["rx_dropped_unknown_type"] += 1

    def on_foreign_datagram(self, data: bytes, path: Path, now: float) -> None:
        if not isinstance(path, TunnelPath) and is_stun(data):
            self.node.counters["rx_stun"] += 1
            if self.node.stun is not None:
                self.node.stun.receive(data, path, now)
            return
        self.node.counters["rx_dropped_foreign"] += 1

    # -- where this node can be reached ---------------------------------------------------------------

    def observed(self, link: Link, endpoint: Endpoint | None, now: float) -> None:
        before, mapping = self.reflexive.candidates(), self.reflexive.mapping()
        self.reflexive.observed(link.peer, link.endpoint, endpoint, now)
        if self.reflexive.mapping() is not mapping:
            self.punch.mapping_changed(now)
        if self.reflexive.candidates() != before:
            self.signalling.candidates_changed(now)

    def candidates(self) -> tuple[Endpoint, ...]:
        return self.reflexive.candidates()

    def nat_status(self) -> dict[str, Any]:
        return {
            **self.reflexive.status(),
            **self.relays.status(),
            "outcomes": dict(sorted(self.outcomes.items())),
            "direct_link_s": self.direct_times.latest(),
        }
