"""Pure. Path MTU discovery on every direct link of a node: one :class:`overlay.pmtu.PathMtu` per peer,
the probes on the wire, and the check that a confirmed size still arrives.

Theory of operation. When a direct link comes up (or its endpoint changes) the node asks
:meth:`LinkMtus.start` which sizes to probe; each probe is a sealed link datagram of exactly that many
bytes (``[KIND_PROBE][size u32][zeros]``; the socket sets DF on everything it sends, so the underlay
never fragments it) and the peer answers each with a small ``[KIND_PROBE_ACK][size u32]``.
Acknowledgements go to :meth:`acked`; a probe the local kernel refuses as too big (EMSGSIZE) to
:meth:`too_big`, which bounds the search at once. The node drives the timers with :meth:`deadline` and
:meth:`on_timer`, which return the probes that are due.

A path that shrinks without a word (a router in the middle drops what is too big and says nothing)
would swallow every full-size datagram while keepalives pass. So while a link carries data near its
confirmed size, the size is confirmed again every :data:`CONFIRM_INTERVAL_S` with one probe of exactly
that size (RFC 8899's confirmation probes); ``PmtuConfig.max_probes`` of them unanswered in a row call
:meth:`PathMtu.black_hole`, which drops the link to the base size and searches again. Until the first
search is complete, a link may send :data:`ASSUMED_PAYLOAD` (Ethernet's, what the overlay assumed
before it measured) unless the search already found less; once a path has failed (a refusal, a black
hole) it sends only what is confirmed, the base size until the new search finds more.

:meth:`limit` is the largest datagram the data path may send on the link now.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .address import Address
from .pmtu import IPV4_UDP_OVERHEAD, PathMtu, PmtuConfig, PmtuState
from .wire import KIND_PROBE, KIND_PROBE_ACK

ASSUMED_PAYLOAD = 1500 - IPV4_UDP_OVERHEAD
"""UDP payload sent before the path is measured (or when the peer answers no probes): an Ethernet
underlay's, the assumption the overlay made before it had discovery. DF is set, so a smaller path
loses these datagrams (and the search that follows finds its size) rather than fragmenting them."""

CONFIRM_INTERVAL_S = 2.0
"""How often a link that carries full-size data confirms its size: the longest a silent black hole
lasts is this plus ``max_probes`` probe timeouts (5 s with the defaults), well within TCP's patience."""

PROBE_HEADER = struct.Struct("!BI")
"""The kind byte and the probed size, at the start of a probe's and of an acknowledgement's plaintext."""


@dataclass(slots=True)
class _Link:
    mtu: PathMtu
    confirm_at: float | None = None
    """When to send the next confirmation probe (None: none planned)."""
    confirm_due: float | None = None
    """The deadline of the confirmation probe in flight (None: none in flight)."""
    confirm_size: int = 0
    """The size the confirmation probe in flight checks."""
    misses: int = 0
    """Confirmation probes unanswered in a row."""
    busy: bool = False
    """Full-size data was sent since the last confirmation."""
    fresh: bool = True
    """Nothing went wrong on this path yet: until it is measured, it may carry ``ASSUMED_PAYLOAD``."""


def probe_plaintext(size: int, overhead: int) -> bytes:
    """The plaintext of a probe whose sealed datagram (``overhead`` bytes of header and tag added) is
    ``size`` bytes long."""
    pad = size - overhead - PROBE_HEADER.size
    if pad < 0:
        raise ValueError(f"a probe of {size} bytes has no room for its header")
    return PROBE_HEADER.pack(KIND_PROBE, size) + bytes(pad)


def probe_ack(size: int) -> bytes:
    return PROBE_HEADER.pack(KIND_PROBE_ACK, size)


def probe_size(plaintext: bytes | memoryview) -> int | None:
    """The size a probe or acknowledgement names (None when it is too short to name one)."""
    if len(plaintext) < PROBE_HEADER.size:
        return None
    return int(PROBE_HEADER.unpack_from(plaintext)[1])


class LinkMtus:
    """The path MTU of every direct link of one node (see the module's docstring)."""

    __slots__ = ("_links", "config")

    def __init__(self, config: PmtuConfig | None = None) -> None:
        self.config = config or PmtuConfig()
        self._links: dict[Address, _Link] = {}

    def __contains__(self, peer: Address) -> bool:
        return peer in self._links

    def path(self, peer: Address) -> PathMtu | None:
        entry = self._links.get(peer)
        return None if entry is None else entry.mtu

    def start(self, peer: Address, now: float) -> list[int]:
        """A direct link to ``peer`` came up: the sizes to probe now."""
        entry = self._links.get(peer)
        if entry is None:
            entry = self._links[peer] = _Link(PathMtu(self.config))
        return entry.mtu.probes(now)

    def endpoint_changed(self, peer: Address, now: float) -> list[int]:
        """The peer is reached at a new endpoint: measure the new path from scratch."""
        entry = self._links.get(peer)
        if entry is None:
            return self.start(peer, now)
        entry.mtu.endpoint_changed(now)
        entry.confirm_at = entry.confirm_due = None
        entry.misses = 0
        return entry.mtu.probes(now)

    def forget(self, peer: Address) -> None:
        self._links.pop(peer, None)

    def limit(self, peer: Address) -> int:
        """The largest datagram (UDP payload) the link to ``peer`` may carry now."""
        entry = self._links.get(peer)
        if entry is None:
            return ASSUMED_PAYLOAD
        path = entry.mtu
        if entry.fresh and path.state is not PmtuState.COMPLETE:
            return max(path.mtu, min(ASSUMED_PAYLOAD, path.high))
        return path.mtu

    def sent_full(self, peer: Address, now: float) -> bool:
        """Data near the confirmed size went out on the link: confirm the size from time to time.
        True when this planned a confirmation (the caller re-arms the link's timer)."""
        entry = self._links.get(peer)
        if entry is None or entry.busy:
            return False
        entry.busy = True
        if entry.confirm_at is None and entry.confirm_due is None:
            entry.confirm_at = now + CONFIRM_INTERVAL_S
            return True
        return False

    def acked(self, peer: Address, size: int, now: float) -> list[int]:
        """The peer received our probe of ``size`` bytes. Returns the probes due now."""
        entry = self._links.get(peer)
        if entry is None:
            return []
        if entry.confirm_due is not None and size == entry.confirm_size:
            entry.confirm_due = None
            entry.misses = 0
        if entry.mtu.in_flight(size):  # not the late answer to a probe of a path since found to fail
            entry.mtu.probe_acked(size, now)
        return entry.mtu.probes(now)

    def too_big(self, peer: Address, size: int, now: float) -> list[int]:
        """A datagram of ``size`` bytes could not be sent (EMSGSIZE): the path takes less."""
        entry = self._links.get(peer)
        if entry is None:
            return []
        if size <= self.limit(peer) and not entry.mtu.in_flight(size):
            entry.fresh = False  # a size we were sending: the path shrank, assume nothing any more
            entry.mtu.black_hole(now)
        else:
            entry.mtu.packet_too_big(size - 1, now)
        entry.confirm_due = None
        entry.misses = 0
        return entry.mtu.probes(now)

    def deadline(self, peer: Address) -> float | None:
        entry = self._links.get(peer)
        if entry is None:
            return None
        times = [t for t in (entry.mtu.get_timer(), entry.confirm_at, entry.confirm_due) if t is not None]
        return min(times) if times else None

    def on_timer(self, peer: Address, now: float) -> list[int]:
        """Run the link's timers: the probes to send now (search, retries and confirmation)."""
        entry = self._links.get(peer)
        if entry is None:
            return []
        path = entry.mtu
        confirm: list[int] = []
        retry = False
        if entry.confirm_due is not None and now >= entry.confirm_due:
            entry.misses += 1
            entry.confirm_due = None
            if entry.misses >= self.config.max_probes:
                entry.misses = 0
                entry.confirm_at = None
                entry.fresh = False
                path.black_hole(now)
            else:
                retry = True  # one lost probe proves nothing: again at once
        if retry or (entry.confirm_at is not None and now >= entry.confirm_at):
            entry.confirm_at = None
            if (retry or entry.busy) and path.state in (PmtuState.SEARCHING, PmtuState.COMPLETE):
                entry.busy = False
                entry.confirm_due = now + self.config.probe_timeout_s
                entry.confirm_size = path.mtu
                confirm.append(path.mtu)
        path.handle_timer(now)
        return confirm + path.probes(now)

    def status(self, peer: Address) -> dict[str, object] | None:
        entry = self._links.get(peer)
        if entry is None:
            return None
        return {"state": entry.mtu.state.value, "mtu": entry.mtu.mtu, "limit": self.limit(peer)}
