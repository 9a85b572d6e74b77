"""Pure. NAT boxes for the simulator, modelled on what the NAT lab measured on Linux nftables routers.

Theory of operation. A :class:`LinuxNat` is a small conntrack table. Every flow is keyed both ways:
(private endpoint, remote endpoint) for outbound packets and (public port, remote endpoint) for inbound
ones. An outbound packet of a new flow gets a public port; an inbound packet is translated only if it
belongs to a live flow, except where the NAT type lets strangers in:

* **port** (port-restricted cone, EIM+APDF = plain ``masquerade``): a new flow first takes the public
  port of the host's newest live flow from the same private endpoint (Linux's ``find_appropriate_src``:
  the NAT looks up an existing connection of the same source, newest first), then the private source
  port, each only when the translated tuple (public port, remote) is free, otherwise a random free
  port. This is Linux's behaviour, and it is what makes masquerade endpoint-independent in practice;
  it also means that once one flow of a host was remapped, the host's later flows follow it.
* **full** / **addr** (EIM+EIF / EIM+ADF): the same, plus the lab's nft emulation of a cone: outbound
  traffic teaches a map public port -> private endpoint (and, for addr, a set of (remote IP, public port)
  pairs); an unsolicited inbound packet matching it is forwarded and starts a flow.
* **sym** / **symr** (APDM+APDF = ``masquerade fully-random`` / ``random``): every new flow gets a
  random port from the injected rng.

Lifetimes are Linux's: a flow lives 30 s while unreplied and 120 s once it has seen traffic both ways,
refreshed by every packet of the flow (conntrack refreshes on either direction); the cone map lives
120 s from the last outbound packet (nft ``update``). ``router_input_accept`` reproduces the lab's
conntrack clash: an unsolicited inbound packet that nothing claims is accepted by the router's own stack,
which leaves a confirmed flow (public port, remote) behind; an inside host's later flow to that remote
finds the tuple taken and is re-mapped to a new port. ``hairpin`` says whether the box loops a packet
from inside to its own public address back in (the simulator asks; the box itself only translates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from random import Random

from .common import Endpoint

UNREPLIED_TIMEOUT_S = 30.0
"""Linux ``nf_conntrack_udp_timeout``: an unreplied UDP flow is forgotten after 30 s (measured in the lab),
which is why the overlay keeps links alive more often than every 25 s."""
REPLIED_TIMEOUT_S = 120.0
"""Linux ``nf_conntrack_udp_timeout_stream``: a flow that has seen replies lives 120 s."""
CONE_MAP_TIMEOUT_S = 120.0
"""The lab's full/addr-cone nft map and set entries time out 120 s after the last outbound packet."""
SWEEP_INTERVAL_S = 30.0
"""Expired flows are swept at most this often (lookups check expiry themselves); keeps a long simulation
from accumulating dead entries without paying a sweep per packet."""
PORT_RANGE = (1024, 65535)
"""Linux masquerade picks unprivileged ports for unprivileged sources."""


class NatType(StrEnum):
    PUBLIC = "public"
    FULL = "full"
    ADDR = "addr"
    PORT = "port"
    SYM = "sym"
    SYMR = "symr"


@dataclass(slots=True)
class _Flow:
    private: Endpoint | None
    """None: the router's own stack owns the flow (an accepted unsolicited packet)."""
    public_port: int
    remote: Endpoint
    outbound_origin: bool
    """The flow began with an outbound packet (else with an inbound one let in by a cone rule)."""
    replied: bool
    expires: float

    def touch(self, outbound: bool, now: float, unreplied: float, replied: float) -> None:
        """A packet of the flow passed: the other direction than the first counts as a reply."""
        if outbound != self.outbound_origin:
            self.replied = True
        self.expires = now + (replied if self.replied else unreplied)


class LinuxNat:
    """A NAT box of one of the lab's types; satisfies the simulator's ``NatBox`` protocol."""

    def __init__(
        self,
        public_ip: str,
        kind: NatType,
        rng: Random,
        *,
        hairpin: bool = False,
        router_input_accept: bool = False,
        unreplied_timeout_s: float = UNREPLIED_TIMEOUT_S,
        replied_timeout_s: float = REPLIED_TIMEOUT_S,
        port_range: tuple[int, int] = PORT_RANGE,
    ) -> None:
        if kind is NatType.PUBLIC:
            raise ValueError("a public host has no NAT box")
        self.public_ip = public_ip
        self.kind = kind
        self.hairpin = hairpin
        self.router_input_accept = router_input_accept
        self._rng = rng
        self._unreplied = unreplied_timeout_s
        self._replied = replied_timeout_s
        self._lo, self._hi = port_range
        self._out: dict[tuple[Endpoint, Endpoint], _Flow] = {}
        self._in: dict[tuple[int, Endpoint], _Flow] = {}
        self._cone: dict[int, tuple[Endpoint, float]] = {}
        self._seen: dict[tuple[str, int], float] = {}
        self._newest: dict[Endpoint, _Flow] = {}
        """Per private endpoint: its newest outbound flow (what ``find_appropriate_src`` finds first)."""
        self._next_sweep = 0.0
        self.dropped_inbound = 0
        self.remapped = 0

    def __repr__(self) -> str:
        return f"LinuxNat({self.public_ip!r}, {self.kind.value}, flows={len(self._in)})"

    @property
    def flows(self) -> int:
        return len(self._in)

    def outbound(self, src: Endpoint, dst: Endpoint, now: float) -> Endpoint | None:
        """Translate the source of a packet from ``src`` (inside) to ``dst``; None if no port is free."""
        self._maybe_sweep(now)
        flow = self._out.get((src, dst))
        if flow is not None and flow.expires <= now:
            self._drop(flow)
            flow = None
        if flow is None:
            port = self._allocate(src, dst, now)
            if port is None:
                return None
            flow = _Flow(src, port, dst, True, False, now + self._unreplied)
            self._out[(src, dst)] = flow
            self._in[(port, dst)] = flow
            self._newest[src] = flow
        else:
            flow.touch(True, now, self._unreplied, self._replied)
        if self.kind in (NatType.FULL, NatType.ADDR):
            self._cone[flow.public_port] = (src, now + CONE_MAP_TIMEOUT_S)
            if self.kind is NatType.ADDR:
                self._seen[(dst[0], flow.public_port)] = now + CONE_MAP_TIMEOUT_S
        return (self.public_ip, flow.public_port)

    def inbound(self, src: Endpoint, dst: Endpoint, now: float) -> Endpoint | None:
        """The inside destination of a packet from ``src`` to our public ``dst``; None if filtered."""
        if dst[0] != self.public_ip:
            return None
        self._maybe_sweep(now)
        key = (dst[1], src)
        flow = self._in.get(key)
        if flow is not None and flow.expires <= now:
            self._drop(flow)
            flow = None
        if flow is not None:
            if flow.private is None:  # the router's own flow: its stack eats the packet
                flow.expires = now + self._unreplied
                self.dropped_inbound += 1
                return None
            flow.touch(False, now, self._unreplied, self._replied)
            return flow.private
        private = self._cone_target(src, dst[1], now)
        if private is not None:
            # Prerouting DNAT: conntrack records remote -> private, so the host's answers match it.
            flow = _Flow(private, dst[1], src, False, False, now + self._unreplied)
            self._in[key] = flow
            self._out.setdefault((private, src), flow)
            return private
        self.dropped_inbound += 1
        if self.router_input_accept:
            self._in[key] = _Flow(None, dst[1], src, False, False, now + self._unreplied)
        return None

    # -- internals ------------------------------------------------------------------------------------

    def _cone_target(self, src: Endpoint, port: int, now: float) -> Endpoint | None:
        if self.kind not in (NatType.FULL, NatType.ADDR):
            return None
        entry = self._cone.get(port)
        if entry is None or entry[1] <= now:
            return None
        if self.kind is NatType.ADDR and self._seen.get((src[0], port), 0.0) <= now:
            return None
        return entry[0]

    def _taken(self, port: int, dst: Endpoint, now: float) -> bool:
        flow = self._in.get((port, dst))
        return flow is not None and flow.expires > now

    def _source_port(self, src: Endpoint, now: float) -> int | None:
        """The public port of ``src``'s newest live outbound flow, or None (Linux keeps a hash of
        connections by original source, newest at the head of each chain)."""
        flow = self._newest.get(src)
        if flow is not None and flow.expires > now and self._out.get((src, flow.remote)) is flow:
            return flow.public_port
        live = [f for (s, _), f in self._out.items() if s == src and f.outbound_origin and f.expires > now]
        if not live:
            self._newest.pop(src, None)
            return None
        self._newest[src] = live[-1]  # dicts keep insertion order: the last is the newest
        return live[-1].public_port

    def _allocate(self, src: Endpoint, dst: Endpoint, now: float) -> int | None:
        if self.kind in (NatType.PORT, NatType.FULL, NatType.ADDR):
            current = self._source_port(src, now)
            if current is not None and not self._taken(current, dst, now):
                if current != src[1]:
                    self.remapped += 1
                return current
            if self._lo <= src[1] <= self._hi and not self._taken(src[1], dst, now):
                return src[1]
            self.remapped += 1
        span = self._hi - self._lo + 1
        for _ in range(64):
            port = self._lo + self._rng.randrange(span)
            if not self._taken(port, dst, now):
                return port
        start = self._rng.randrange(span)
        for i in range(span):
            port = self._lo + (start + i) % span
            if not self._taken(port, dst, now):
                return port
        return None

    def _drop(self, flow: _Flow) -> None:
        self._in.pop((flow.public_port, flow.remote), None)
        if flow.private is not None and self._out.get((flow.private, flow.remote)) is flow:
            del self._out[(flow.private, flow.remote)]

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_S
        for flow in [f for f in self._in.values() if f.expires <= now]:
            self._drop(flow)
        for port in [p for p, (_, exp) in self._cone.items() if exp <= now]:
            del self._cone[port]
        for k in [k for k, exp in self._seen.items() if exp <= now]:
            del self._seen[k]
        for private in [p for p, f in self._newest.items() if f.expires <= now]:
            del self._newest[private]


def make_nat(
    kind: NatType | str,
    public_ip: str,
    rng: Random,
    *,
    hairpin: bool = False,
    router_input_accept: bool = False,
) -> LinuxNat | None:
    """A NAT box of the lab type ``kind``, or None for ``public`` (a host without a NAT)."""
    kind = NatType(kind)
    if kind is NatType.PUBLIC:
        return None
    return LinuxNat(public_ip, kind, rng, hairpin=hairpin, router_input_accept=router_input_accept)


_HARD = {NatType.SYM, NatType.SYMR}
_EASY_RESTRICTED = {NatType.PORT}


def pair_is_punchable(type_a: NatType | str, type_b: NatType | str) -> bool:
    """The NAT lab's 5 x 5 result (plus public hosts): direct unless one side is symmetric and the other
    symmetric or port-restricted. Assumes the low-TTL pre-punch (with it the router-input-accept clash
    goes direct too)."""
    a, b = NatType(type_a), NatType(type_b)
    if a in _HARD:
        return b not in _HARD and b not in _EASY_RESTRICTED
    if b in _HARD:
        return a not in _EASY_RESTRICTED
    return True


def blocked_pairs(types: Sequence[NatType | str]) -> int:
    """Unordered pairs of hosts that cannot link directly."""
    sym = sum(1 for t in types if NatType(t) in _HARD)
    port = sum(1 for t in types if NatType(t) is NatType.PORT)
    return sym * port + sym * (sym - 1) // 2


def assign_nat_types(n: int, blocked_share: float, rng: Random) -> list[NatType]:
    """NAT types for ``n`` hosts such that about ``blocked_share`` of all unordered pairs cannot link
    directly (``pair_is_punchable`` is False). Blocked pairs are sym x sym and sym x port, so the counts
    of symmetric (s) and port-restricted (p) hosts decide the share: s*p + s(s-1)/2 pairs. Among the
    (s, p) that come closest, the most balanced is taken (a realistic mix rather than all-symmetric);
    the other hosts get full or address-restricted cones. The list is shuffled with ``rng``."""
    if n < 0 or not 0.0 <= blocked_share <= 1.0:
        raise ValueError("n >= 0 and 0 <= blocked_share <= 1")
    total = n * (n - 1) // 2
    target = blocked_share * total
    best: tuple[float, int, int, int] | None = None
    for s in range(n + 1):
        base = s * (s - 1) // 2
        p = 0 if s == 0 else round((target - base) / s)
        p = max(0, min(n - s, p))
        error = abs(base + s * p - target)
        key = (max(0.0, error - s / 2), abs(s - p), s, p)
        if best is None or key < best:
            best = key
    assert best is not None
    s, p = best[2], best[3]
    rest = n - s - p
    types = [NatType.SYM] * s + [NatType.PORT] * p
    types += [NatType.FULL if i % 2 == 0 else NatType.ADDR for i in range(rest)]
    rng.shuffle(types)
    return types
