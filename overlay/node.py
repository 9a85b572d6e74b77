"""Pure. The overlay node: a sans-IO core that turns datagrams, timers and application requests into
datagrams and events.

Theory of operation. ``OverlayNode`` follows aioquic's shape: the driver (real UDP in ``driver``, or the
simulator) hands it every received datagram with ``receive_datagram(data, addr, now)``, collects what to
send with ``datagrams_to_send(now)``, wakes it at ``get_timer()`` with ``handle_timer(now)``, and drains
``next_event()``. Applications call ``send()``. The node never reads a clock, a socket or a global random
generator: ``now`` and ``rng`` come from outside, so the simulator replays a run exactly from its seed.

Every datagram is either a link handshake message or a sealed link packet (``linksec``), a hole-punching
probe, or a LAN beacon. Inside a sealed packet is an application message from the link peer, a control
message of the link (``wire``), or a message being routed across the ring. Routing is greedy: forward to
the linked peer closest to the destination on the ring until no peer is closer than this node
(``table``). Link set-up lives in ``connector``, ring upkeep (near, far and shortcut links, keepalives,
bootstrap) in ``maintenance``, the data plane's fast path on direct links (and their path MTU) in
``datapath``.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from random import Random
from typing import Any

from .address import Address, short
from .config import OverlayConfig
from .connector import Connector
from .datapath import ALWAYS_FITS, DataPath
from .events import (
    Delivered,
    Endpoint,
    LinkDown,
    LinkUp,
    OverlayEvent,
    Service,
    Transmit,
)
from .identity import Identity
from .lan import LanDiscovery
from .linksec import (
    HS_FIN,
    HS_INIT,
    HS_RESP,
    MAGIC,
    PACKET_DATA,
    Dropped,
    Established,
    HandshakeFailed,
    LinkSecurity,
    Plaintext,
    Reply,
    Session,
)
from .liveness import Liveness
from .maintenance import Maintenance
from .pmtu import PmtuConfig
from .relay import TunnelPath
from .routing import Routing
from .sessions import preferred_session
from .status import node_status
from .stunning import StunQueries
from .table import ConnectionTable, Link, role_names
from .wire import (
    FLAG_EXACT,
    FLAG_EXCLUDE_SRC,
    KIND_APP,
    KIND_CONTROL,
    KIND_PROBE,
    KIND_PROBE_ACK,
    KIND_ROUTED,
    Close,
    Hello,
    Neighbours,
    Ping,
    Pong,
    Roles,
    Routed,
    WireError,
    decode_control,
    decode_routed,
    encode_app,
    encode_control,
    encode_overlay,
)

log = logging.getLogger(__name__)

Path = Endpoint | TunnelPath
"""Where a datagram came from or goes to: an underlay endpoint, or a tunnel through the overlay."""

LINGER_S = 5.0
"""How long the sessions of a link this node closed still accept messages (several round trips: the
peer stops using the link when our Close arrives)."""

MAX_EVENTS = 65536
"""Events not drained by the application are dropped (and counted) beyond this, bounding memory."""


class OverlayNode(Routing):
    """One overlay member. See the module docstring for how to drive it."""

    def __init__(
        self,
        identity: Identity,
        config: OverlayConfig,
        rng: Random,
        now: float,
        *,
        local_endpoints: tuple[Endpoint, ...] = (),
        suite: int = 1,
        cache_cipher_contexts: bool = False,
        pmtu: PmtuConfig | None = None,
        lan_broadcast: tuple[Endpoint, ...] = (),
        stun_servers: tuple[Endpoint, ...] = (),
    ) -> None:
        self.identity = identity
        self.config = config
        self.rng = rng
        self._address = identity.address
        self.log_prefix = short(self._address)
        self.started = now
        self.security = LinkSecurity(
            identity,
            config.realm,
            config.secret,
            rng,
            suite=suite,
            handshakes_per_second=config.handshakes_per_second,
            handshake_timeout_s=config.handshake_timeout_s,
            cache_cipher_contexts=cache_cipher_contexts,
        )
        self.table = ConnectionTable(self._address)
        self.local_endpoints = local_endpoints
        self.counters: Counter[str] = Counter()
        self._out: list[Transmit] = []
        self._events: list[OverlayEvent] = []
        self._event_pos = 0
        """Events are read from ``_events[_event_pos:]``; the list is emptied once all are read. A list
        rather than a deque: an empty deque keeps a 64-slot block (~760 B per node)."""
        self._timers: list[tuple[float, int, str, Any]] = []
        self._timer_seq = 0
        self._lingering: dict[int, tuple[Session, float]] = {}
        self.suspects: set[int] = set()
        """Peers whose links missed a probe: routing goes around them while another way exists."""
        self.datapath = DataPath(self, pmtu)
        self._receivers = self.datapath.receivers
        self.connector = Connector(self)
        self.liveness = Liveness(self)
        self.maintenance = Maintenance(self, now)
        port = local_endpoints[0][1] if local_endpoints else 0
        self.lan = LanDiscovery(self, lan_broadcast, port, now)
        """LAN discovery: beacons to ``lan_broadcast`` (the I/O layer's broadcast addresses; none: off)."""
        self.stun = StunQueries(self, stun_servers, now) if stun_servers else None
        """STUN at run time: ``stun_servers`` (resolved IP endpoints) asked where they see us. None
        without servers: its two idle clients cost ~1.5 KB per node, and most nodes have none."""

    # -- the sans-IO surface -------------------------------------------------------------------------

    @property
    def address(self) -> Address:
        return self._address

    def receive_datagram(self, data: bytes, addr: Endpoint, now: float) -> None:
        """Feed one datagram from the underlay. Never raises on any input."""
        self.counters["rx_datagrams"] += 1
        self.counters["rx_bytes"] += len(data)
        self._receive(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        timers = self._timers
        self.liveness.drop_early(timers)  # link entries that would wake the node for nothing
        return timers[0][0] if timers else None

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, ref = heapq.heappop(timers)
            if kind == "link":
                self.liveness.check(ref, now)
            elif kind == "attempt":
                self.connector.on_timer(ref, now)
            elif kind == "tick":
                self.maintenance.tick(now)
            elif kind == "punchback":
                self.connector.punch.round(now)
            elif kind == "nat":
                self.connector.relays.tend(now)
            elif kind == "repair":
                self.maintenance.repair(now)
            elif kind == "pmtu":
                self.datapath.on_timer(ref, now)
            elif kind == "lan":
                self.lan.on_timer(now)
            elif kind == "stun" and self.stun is not None:
                self.stun.on_timer(now)

    def next_event(self) -> OverlayEvent | None:
        events, pos = self._events, self._event_pos
        if pos >= len(events):
            return None
        event = events[pos]
        if pos + 1 == len(events):
            events.clear()
            self._event_pos = 0
        else:
            self._event_pos = pos + 1
        return event

    def close(self, now: float) -> None:
        """Leave the overlay politely: every peer hears that this node is going."""
        for link in list(self.table):
            self.send_control(link, Close("leaving"), now)
        for link in list(self.table):
            self.drop_link(link, "closed by this node", now, notify=False)
        for session, _ in self._lingering.values():
            self.security.close_session(session)
        self._lingering.clear()

    # -- what applications call ---------------------------------------------------------------------

    def send(
        self,
        dest: Address,
        service: int,
        payload: bytes,
        now: float,
        *,
        exact: bool = True,
        detour: bool = False,
    ) -> None:
        """Route ``payload`` to ``dest`` (see ``events.Router``). Over a direct link when one exists;
        with ``detour``, through the second-best first hop when there is one."""
        link = self.table.get(dest)
        if link is not None and link.sessions:
            link.last_app = now
            self.liveness.on_send(link, now)
            self.send_plain(link, encode_app(service, payload), now)
            return
        if dest == self._address:
            self.emit(Delivered(self._address, dest, service, payload, 0, exact))
            return
        if service >= Service.DHT:
            self.maintenance.count_traffic(dest, now)
        msg = Routed(FLAG_EXACT if exact else 0, service, 0, self._address, dest, None, payload)
        first = self.detour_link(dest) if detour else None
        if first is not None:
            self.counters["detours"] += 1
            self._forward(first, msg, now)
            return
        self.route(msg, now)

    def ring_neighbours(self) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
        k = self.config.near_per_side
        return tuple(self.table.left(k)), tuple(self.table.right(k))

    # -- helpers used by connector and maintenance ----------------------------------------------------

    def emit(self, event: OverlayEvent) -> None:
        if len(self._events) - self._event_pos >= MAX_EVENTS:
            self.counters["events_dropped"] += 1
            return
        self._events.append(event)

    def set_timer(self, when: float, kind: str, ref: Any) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, ref))

    def transmit(self, data: bytes, path: Path, now: float, ttl: int = 0) -> None:
        """Send a whole datagram along ``path``: straight to an endpoint, or tunnelled through the
        overlay as a routed message of service TUNNEL (whose payload names the relay, for the reply)."""
        self.counters["tx_datagrams"] += 1
        if isinstance(path, TunnelPath):
            relay = path.relay.to_bytes(20, "big") if path.relay is not None else bytes(20)
            self.route(
                Routed(FLAG_EXACT, Service.TUNNEL, 0, self._address, path.peer, path.relay, relay + data),
                now,
            )
            return
        self.counters["tx_bytes"] += len(data)
        self._out.append((data, path, ttl))

    def link_path(self, link: Link) -> Path:
        if link.endpoint is not None:
            return link.endpoint
        return TunnelPath(link.peer, link.relay)

    def send_plain(self, link: Link, plaintext: bytes, now: float) -> None:
        """Seal ``plaintext`` in the link's newest usable session and send it."""
        session = self.sending_session(link)
        if session is None:
            self.counters["tx_no_session"] += 1
            return
        try:
            datagram = session.seal(plaintext, now)
        except ValueError:  # counter exhausted: the rekey did not happen in time
            self.counters["tx_seal_refused"] += 1
            return
        link.last_tx = now
        if len(datagram) > ALWAYS_FITS:
            datagram = self.datapath.mark_oversized(link.peer, datagram)
        self.transmit(datagram, self.link_path(link), now)

    def send_control(self, link: Link, msg: Any, now: float) -> None:
        self.counters["tx_control"] += 1
        self.send_plain(link, encode_control(msg), now)

    def send_overlay(
        self,
        dest: Address,
        msg: Any,
        now: float,
        *,
        exact: bool = True,
        exclude_src: bool = False,
        via: Address | None = None,
    ) -> None:
        flags = (FLAG_EXACT if exact else 0) | (FLAG_EXCLUDE_SRC if exclude_src else 0)
        self.route(Routed(flags, Service.OVERLAY, 0, self._address, dest, via, encode_overlay(msg)), now)

    def sending_session(self, link: Link) -> Session | None:
        """The session to seal with: both ends must come to choose the same one, so that the others
        fall idle and can be closed (see ``preferred_session``)."""
        sessions: list[Session] = link.sessions
        if len(sessions) == 1:
            return sessions[0]
        return preferred_session(sessions, self._address)

    def drop_link(
        self, link: Link, reason: str, now: float, *, notify: bool = True, linger: bool = False
    ) -> None:
        """Remove ``link``. With ``linger`` (this node closes a working link), its sessions still
        accept routed and application messages for ``LINGER_S``: what the peer sent before it heard
        our Close is forwarded, not lost."""
        if self.table.remove(link.peer) is None:
            return
        self.suspects.discard(link.peer)
        self.connector.relays.relay_gone(link.peer, now)
        for session in link.sessions:
            if linger:
                self._lingering[session.index] = (session, now + LINGER_S)
            else:
                self.security.close_session(session)
        link.sessions = []
        self.datapath.forget(link.peer)
        log.info("%s link to %s down: %s", self.log_prefix, short(link.peer), reason)
        self.emit(LinkDown(link.peer, reason))
        if notify:
            self.maintenance.ring_changed(now)

    # -- receive path -------------------------------------------------------------------------------

    def _receive(self, data: bytes, path: Path, now: float) -> None:
        if len(data) < 2 or data[0] != MAGIC:
            self.connector.on_foreign_datagram(data, path, now)
            return
        kind = data[1]
        if kind == PACKET_DATA:
            opened = self.security.open_data(data, now)
            if opened is None:
                self.counters["rx_data_not_opened"] += 1  # held for its FIN, or dropped
                return
            session, plaintext = opened
            self._on_plaintext(session, plaintext, path, now)
        elif kind in (HS_INIT, HS_RESP, HS_FIN):
            self._on_handshake(data, path, now)
        else:
            self.connector.on_probe(data, path, now)

    def _on_handshake(self, data: bytes, path: Path, now: float) -> None:
        result = self.security.receive(data, now)
        if isinstance(result, Reply):
            self.transmit(result.packet, path, now)
        elif isinstance(result, Established):
            if result.reply is not None:
                self.transmit(result.reply, path, now)
            self.connector.on_established(result.session, path, now)
            for plaintext in result.early:  # DATA that overtook the HS_FIN, in arrival order
                self._on_plaintext(result.session, plaintext, path, now)
        elif isinstance(result, Plaintext):
            self._on_plaintext(result.session, result.data, path, now)
        elif isinstance(result, HandshakeFailed):
            self.connector.on_handshake_failed(result.index, result.peer_address, now)
        elif isinstance(result, Dropped):
            self.counters[f"rx_dropped_{result.reason}"] += 1

    def expire_lingering(self, now: float) -> None:
        for index, (session, until) in list(self._lingering.items()):
            if now >= until:
                del self._lingering[index]
                self.security.close_session(session)

    def on_plaintext(self, session: Session, plaintext: bytes, path: Path, now: float) -> None:
        """A datagram of ``session`` that the data path opened (``datapath``)."""
        self._on_plaintext(session, plaintext, path, now)

    def _on_plaintext(self, session: Session, plaintext: bytes, path: Path, now: float) -> None:
        link = self.table.get(session.peer_address)
        if link is None and session.index in self._lingering:
            if plaintext and plaintext[0] == KIND_ROUTED:
                self._on_routed(None, plaintext, now)
            elif plaintext and plaintext[0] == KIND_APP and len(plaintext) >= 2:
                self.emit(
                    Delivered(session.peer_address, self._address, plaintext[1], plaintext[2:], 1, True)
                )
            return
        if link is None or session not in link.sessions:
            self.counters["rx_unlinked_session"] += 1
            return
        link.last_rx = now
        link.probe_tries = 0
        if path != self.link_path(link) and self.connector.path_changed(link, path, now):
            # Only a path the link really moved to voids what was measured of the old one. Restarting
            # the path MTU search for every packet that arrived another way (a tunnelled packet on a
            # direct link, a direct one on a tunnel) fed a loop in the NAT lab: each probe's answer,
            # arriving the other way, restarted the search again, thousands of times a second.
            self.datapath.endpoint_changed(link, now)
        if not plaintext:
            return
        kind = plaintext[0]
        if kind == KIND_APP:
            if len(plaintext) < 2:
                self.counters["rx_malformed"] += 1
                return
            link.last_app = now
            receiver = self._receivers.get(plaintext[1])
            if receiver is not None:
                self.datapath.learn(session, link)
                receiver.app_message(link.peer, plaintext, now)
                return
            self.emit(Delivered(link.peer, self._address, plaintext[1], plaintext[2:], 1, True))
        elif kind == KIND_ROUTED:
            self._on_routed(link, plaintext, now)
        elif kind == KIND_CONTROL:
            try:
                control = decode_control(plaintext[1:])
            except WireError:
                self.counters["rx_malformed"] += 1
                return
            self._on_control(link, control, path, now)
        elif kind in (KIND_PROBE, KIND_PROBE_ACK):
            self.datapath.on_probe(link, kind, plaintext, now)
        else:
            self.counters["rx_malformed"] += 1

    def _on_routed(self, link: Link | None, plaintext: bytes, now: float) -> None:
        try:
            msg = decode_routed(plaintext)
        except WireError:
            self.counters["rx_malformed"] += 1
            return
        msg.hops += 1
        if link is not None and msg.service >= Service.DHT:
            link.last_app = now
        self.route(msg, now)

    def _on_control(self, link: Link, msg: Any, path: Path, now: float) -> None:
        observed = None if isinstance(path, TunnelPath) else path
        if isinstance(msg, Ping):
            self.send_control(link, Pong(msg.nonce, observed), now)
            self.liveness.heard(link)
        elif isinstance(msg, Pong):
            if msg.nonce == link.probe_nonce and link.probe_sent:
                link.observe_rtt(now - link.probe_sent)
                link.probe_sent = 0.0
                self.suspects.discard(link.peer)
                self.liveness.heard(link)
            self.connector.observed(link, msg.observed, now)
        elif isinstance(msg, Hello):
            old, link.peer_roles = link.peer_roles, msg.roles
            link.candidates = msg.candidates
            link.told_endpoints = True
            self.maintenance.roles_changed(link, old, now)
            self.connector.observed(link, msg.observed, now)
            self.connector.hello_received(link, now)
            self.maintenance.ring_changed(now)
        elif isinstance(msg, Roles):
            old, link.peer_roles = link.peer_roles, msg.roles
            self.maintenance.roles_changed(link, old, now)
        elif isinstance(msg, Neighbours):
            self.connector.heard_of(link.peer, msg.entries)
            self.maintenance.learn(msg.entries, now)
        elif isinstance(msg, Close):
            self.drop_link(link, f"closed by peer: {msg.reason}", now)

    # -- status -----------------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        """Everything ``ipop status`` shows about the overlay, as JSON-ready data."""
        return node_status(self, now)

    def link_up(self, link: Link) -> None:
        log.info("%s link to %s up via %s", self.log_prefix, short(link.peer), link.path_text())
        self.emit(LinkUp(link.peer, role_names(link.my_roles | link.peer_roles), link.path_text()))
