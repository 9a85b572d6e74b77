"""Pure. The answering side of a connect-to-me: punch probes towards the requester's candidates.

A node that receives a connect-to-me sends a few probes to each candidate endpoint the requester gave.
The first round goes out twice: once with a small TTL (``PREPUNCH_TTL``), which opens this node's own NAT
mapping without reaching the requester's NAT (the NAT lab showed that a router which accepts unsolicited
input otherwise takes the port and both punches deadlock), then with the normal TTL, so the requester
learns the endpoint it sees this node at (a peer-reflexive candidate) and sends its handshake there.
Rounds repeat every ``PUNCH_INTERVAL_S`` until a link exists or ``punch_timeout_s`` has passed.

Probes are ``nat``'s punch-probe datagrams (31 bytes, MAC'd under the realm key), so nobody outside the
realm can make a node believe in a path; the token is the connect-to-me's, which only the two ends and the
overlay's (sealed) hops have seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nat import DecodeError, ProbeKind, PunchProbe, decode_probe, encode_probe

from .events import Endpoint

if TYPE_CHECKING:
    from .node import OverlayNode

PUNCH_INTERVAL_S = 0.2
"""Probe pacing while punching: ICE paces checks at 50 ms; four times that keeps a 3 s punch to 15
rounds per candidate while still retrying often enough for 20 % loss."""

PREPUNCH_TTL = 2
"""Enough to leave the host and its own NAT router, too little to reach a NAT across the core."""

MAX_PUNCHBACKS = 64
"""Concurrent punch-backs this node performs for others; bounds what connect requests can make it send."""


class _PunchBack:
    __slots__ = ("seq", "targets", "token", "until")

    def __init__(self, token: int, targets: tuple[Endpoint, ...], until: float) -> None:
        self.token = token
        self.targets = targets
        self.until = until
        self.seq = 0


class PunchBacks:
    """Every punch-back under way, by requester address."""

    def __init__(self, node: OverlayNode) -> None:
        self.node = node
        self._active: dict[int, _PunchBack] = {}
        self._timer_armed = False

    def __len__(self) -> int:
        return len(self._active)

    def start(self, peer: int, token: int, targets: tuple[Endpoint, ...], now: float) -> None:
        node = self.node
        if len(self._active) >= MAX_PUNCHBACKS and peer not in self._active:
            node.counters["punchbacks_refused"] += 1
            return
        punch = _PunchBack(token, targets[:8], now + node.config.punch_timeout_s)
        self._active[peer] = punch
        self._send(punch, now, ttl=PREPUNCH_TTL)
        self._send(punch, now)
        if not self._timer_armed:
            self._timer_armed = True
            node.set_timer(now + PUNCH_INTERVAL_S, "punchback", None)

    def stop(self, peer: int) -> None:
        self._active.pop(peer, None)

    def round(self, now: float) -> None:
        """One round of probes, re-armed while any punch-back remains."""
        self._timer_armed = False
        for peer, punch in list(self._active.items()):
            if now >= punch.until or self.node.table.get(peer) is not None:
                del self._active[peer]
                continue
            self._send(punch, now)
        if self._active:
            self._timer_armed = True
            self.node.set_timer(now + PUNCH_INTERVAL_S, "punchback", None)

    def _send(self, punch: _PunchBack, now: float, ttl: int = 0) -> None:
        punch.seq += 1
        packet = encode_probe(PunchProbe(ProbeKind.PROBE, punch.token, punch.seq), self.node.security.netkey)
        for endpoint in punch.targets:
            self.node.transmit(packet, endpoint, now, ttl=ttl)

    def receive(self, data: bytes, path: Endpoint, now: float) -> int | None:
        """Authenticate a probe; its token, or None (counted) when it is not a valid probe."""
        counters = self.node.counters
        try:
            probe = decode_probe(data, self.node.security.netkey)
        except DecodeError:
            counters["rx_dropped_bad_probe"] += 1
            return None
        if probe.kind is not ProbeKind.PROBE:
            counters["rx_probe_ignored"] += 1
            return None
        return probe.token
