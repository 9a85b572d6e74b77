"""Pure. Greedy routing on the ring: deliver a message here, or forward it one hop closer.

Forwarding picks the linked peer closest to the destination (``table.closest``), going around peers
whose links missed a probe while another way makes progress; a message stops at the node with no peer
closer than itself (greedy delivery to a key's owner) or, with ``exact``, fails there with a
``RouteError`` to its source. ``via`` sends a message to one node first (a joiner is reachable only
through the peer it joined through). Messages carry their hop count and die at the hop limit.

``Routing`` is a part of ``OverlayNode`` kept in its own module; it uses the node's table, links and
counters, which the node defines.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .address import Address, closer
from .config import OverlayConfig
from .events import Delivered, Endpoint, OverlayEvent, Service, Undeliverable
from .relay import TunnelPath
from .table import ConnectionTable, Link
from .wire import (
    FLAG_EXACT,
    FLAG_EXCLUDE_SRC,
    FLAG_VIA,
    Routed,
    RouteError,
    WireError,
    decode_overlay,
    encode_routed,
)

if TYPE_CHECKING:
    from .connector import Connector
    from .liveness import Liveness
    from .maintenance import Maintenance


class Routing:
    """The routing part of ``OverlayNode`` (see the module docstring)."""

    # Defined by OverlayNode.
    _address: Address
    config: OverlayConfig
    table: ConnectionTable
    counters: Counter[str]
    suspects: set[int]
    liveness: Liveness
    maintenance: Maintenance
    connector: Connector

    def emit(self, event: OverlayEvent) -> None: ...  # pragma: no cover - OverlayNode's

    def send_plain(self, link: Link, plaintext: bytes, now: float) -> None: ...  # pragma: no cover

    def send_overlay(
        self,
        dest: Address,
        msg: Any,
        now: float,
        *,
        exact: bool = True,
        exclude_src: bool = False,
        via: Address | None = None,
    ) -> None: ...  # pragma: no cover

    def _receive(self, data: bytes, path: Endpoint | TunnelPath, now: float) -> None: ...  # pragma: no cover

    # -- routing ------------------------------------------------------------------------------------

    def route(self, msg: Routed, now: float) -> None:
        """Deliver ``msg`` here or forward it one hop closer to its destination."""
        if msg.hops > self.config.hop_limit:
            self.counters["route_hop_limit"] += 1
            self._route_failed(msg, "hop_limit", now)
            return
        if msg.via is not None:
            if msg.via != self._address:
                self._route_towards(msg.via, True, None, msg, now)
                return
            msg.via = None  # reached the via node: from here on, ordinary routing to dest
        exclude = msg.src if msg.flags & FLAG_EXCLUDE_SRC else None
        self._route_towards(msg.dest, bool(msg.flags & FLAG_EXACT), exclude, msg, now)

    def _route_towards(
        self, target: Address, exact: bool, exclude: Address | None, msg: Routed, now: float
    ) -> None:
        me = self._address
        if target == me and exclude != me:
            self._deliver(msg, now)
            return
        link = self.table.get(target)
        if link is None or not link.sessions or target == exclude:
            nxt = self.table.closest(target, exclude, self.suspects)
            if self.suspects and nxt is not None and exclude != me and not closer(target, nxt, me):
                nxt = self.table.closest(target, exclude)  # no way around the suspect makes progress
            link = None if nxt is None else self.table.get(nxt)
            if link is not None and exclude != me and not closer(target, link.peer, me):
                link = None  # this node is at least as close as any peer: the route ends here
        if link is not None and not link.direct and msg.service == Service.TUNNEL:
            link = self._direct_towards(target, exclude)  # a tunnel never runs inside a tunnel
        if link is None:
            if exact or (exclude == me and msg.src == me):
                self._route_failed(msg, "no_route" if len(self.table) else "not_joined", now)
            else:
                self._deliver(msg, now)
            return
        self._forward(link, msg, now)

    def detour_link(self, target: Address) -> Link | None:
        """The first hop of a resend to ``target``: the linked peer closest to it other than the one
        greedy routing would take, provided it is closer to ``target`` than this node (so greedy
        routing from there still ends at the node closest to ``target``) and not suspected; None when
        there is no such peer, or when this node itself is the closest.

        Why. A request that went unanswered was most often lost into a link whose peer had died
        unnoticed, and under churn the dead link is most often this node's own first hop: its resend,
        routed the same way, is lost the same way until a probe of that link goes unanswered (a
        DHT get at N = 1,000, S = 84 s then waited for its third send, 1.5 to 2 s). The second-best
        hop is one more hop at most on an alternative path."""
        me = self._address
        best = self.table.closest(target, None, self.suspects)
        if best is None or not closer(target, best, me):
            return None
        alt = self.table.closest(target, best, self.suspects | {best})
        if alt is None or alt == best or alt in self.suspects or not closer(target, alt, me):
            return None
        link = self.table.get(alt)
        return link if link is not None and link.sessions else None

    def _direct_towards(self, target: Address, exclude: Address | None) -> Link | None:
        """The directly linked peer closest to ``target`` and closer than this node (tunnelled
        links skipped; rare, so a scan)."""
        best: Link | None = None
        for link in self.table:
            if (
                link.direct
                and link.sessions
                and link.peer != exclude
                and closer(target, link.peer, best.peer if best is not None else self._address)
            ):
                best = link
        return best

    def _forward(self, link: Link, msg: Routed, now: float) -> None:
        if msg.src != self._address:
            self.counters["forwarded"] += 1
        self.liveness.on_send(link, now)
        self.send_plain(
            link,
            # FLAG_VIA follows ``via`` (cleared on reaching the via node), not the flags as received.
            encode_routed(
                msg.flags & ~FLAG_VIA, msg.service, msg.hops, msg.src, msg.dest, msg.via, msg.payload
            ),
            now,
        )

    def _deliver(self, msg: Routed, now: float) -> None:
        exact = msg.dest == self._address
        if msg.service == Service.OVERLAY:
            try:
                overlay_msg = decode_overlay(msg.payload)
            except WireError:
                self.counters["rx_malformed"] += 1
                return
            if isinstance(overlay_msg, RouteError):
                self.emit(Undeliverable(overlay_msg.dest, overlay_msg.service, "no_route"))
                self.maintenance.route_error(overlay_msg.dest, now)
            else:
                self.connector.on_overlay_message(msg.src, overlay_msg, now, msg.hops)
            return
        if msg.service == Service.TUNNEL:
            if not exact or len(msg.payload) < 22:
                self.counters["rx_malformed"] += 1
                return
            relay_bytes = msg.payload[:20]
            relay = None if relay_bytes == bytes(20) else Address(int.from_bytes(relay_bytes, "big"))
            self._receive(msg.payload[20:], TunnelPath(msg.src, relay), now)
            return
        self.emit(Delivered(msg.src, msg.dest, msg.service, msg.payload, msg.hops, exact))

    def _route_failed(self, msg: Routed, reason: str, now: float) -> None:
        if msg.src == self._address:
            self.emit(Undeliverable(msg.dest, msg.service, reason))
            return
        if msg.service in (Service.OVERLAY, Service.TUNNEL):
            return  # no error about errors, and tunnels have their own retransmission
        self.counters["route_errors_sent"] += 1
        self.send_overlay(msg.src, RouteError(msg.dest, msg.service), now)
