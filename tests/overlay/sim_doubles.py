"""Test doubles of the simulator's two seams: small protocol cores (``DatagramCore``) and NAT boxes
(``NatBox``). The real overlay node and the ``nat`` package's models are tested elsewhere; these are
just enough behaviour to observe what the network does with datagrams."""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random

from overlay import Endpoint, Transmit


@dataclass
class Received:
    data: bytes
    src: Endpoint
    at: float


class Recorder:
    """A core that records what it receives, sends what the test queues, and keeps a settable timer.
    With ``echo`` it answers every datagram with ``b"re:" + data``."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.received: list[Received] = []
        self.outbox: list[Transmit] = []
        self.deadline: float | None = None
        self.fired: list[float] = []
        self.on_timer_deadline: float | None = None
        """What the deadline becomes after the timer fires (None: disarm)."""
        self.timer_polls = 0

    def send(self, data: bytes, dest: Endpoint, ttl: int = 0) -> None:
        self.outbox.append((data, dest, ttl))

    def receive_datagram(self, data: bytes, addr: Endpoint, now: float) -> None:
        self.received.append(Received(data, addr, now))
        if self.echo and not data.startswith(b"re:"):
            self.outbox.append((b"re:" + data, addr, 0))

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        self.timer_polls += 1
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.deadline = self.on_timer_deadline

    def payloads(self) -> list[bytes]:
        return [r.data for r in self.received]


@dataclass
class TestNat:
    """A NAT box double with RFC 4787's two axes. ``mapping`` is ``"endpoint"`` (EIM: one public port
    per private endpoint) or ``"address_port"`` (APDM, symmetric: one per private endpoint and
    destination). ``filtering`` is ``"none"`` (EIF, full cone), ``"address"`` (ADF) or
    ``"address_port"`` (APDF). Public ports start at ``first_port``; the box records every call."""

    __test__ = False  # not a pytest test class despite its name

    public_ip: str
    mapping: str = "endpoint"
    filtering: str = "address_port"
    hairpin: bool = False
    first_port: int = 40000
    refuse_outbound: bool = False
    ports: dict[tuple[Endpoint, Endpoint | None], int] = field(default_factory=dict)
    owners: dict[int, Endpoint] = field(default_factory=dict)
    contacted: dict[int, set[Endpoint]] = field(default_factory=dict)
    outbound_calls: list[tuple[Endpoint, Endpoint, float]] = field(default_factory=list)
    inbound_calls: list[tuple[Endpoint, Endpoint, float]] = field(default_factory=list)

    def outbound(self, src: Endpoint, dst: Endpoint, now: float) -> Endpoint | None:
        self.outbound_calls.append((src, dst, now))
        if self.refuse_outbound:
            return None
        key = (src, dst if self.mapping == "address_port" else None)
        port = self.ports.get(key)
        if port is None:
            port = self.ports[key] = self.first_port + len(self.ports)
            self.owners[port] = src
        self.contacted.setdefault(port, set()).add(dst)
        return (self.public_ip, port)

    def inbound(self, src: Endpoint, dst: Endpoint, now: float) -> Endpoint | None:
        self.inbound_calls.append((src, dst, now))
        owner = self.owners.get(dst[1])
        if owner is None:
            return None
        seen = self.contacted[dst[1]]
        if self.filtering == "address" and all(peer[0] != src[0] for peer in seen):
            return None
        if self.filtering == "address_port" and src not in seen:
            return None
        return owner


class Pinger:
    """A toy maintenance core: every ``period`` seconds it pings ``fanout`` peers drawn with its own
    seeded ``rng``, answers pings with pongs, and counts the pongs it gets. It stops pinging after
    ``until`` so that a run drains."""

    def __init__(
        self, rng: Random, peers: list[Endpoint], *, period: float, fanout: int, until: float = float("inf")
    ) -> None:
        self.rng = rng
        self.peers = peers
        self.period = period
        self.fanout = fanout
        self.until = until
        self.deadline: float | None = rng.random() * period
        self.outbox: list[Transmit] = []
        self.pings = 0
        self.pongs = 0

    def receive_datagram(self, data: bytes, addr: Endpoint, now: float) -> None:
        if data.startswith(b"ping"):
            self.pings += 1
            self.outbox.append((b"pong" + data[4:], addr, 0))
        elif data.startswith(b"pong"):
            self.pongs += 1

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        for _ in range(self.fanout):
            peer = self.peers[self.rng.randrange(len(self.peers))]
            self.outbox.append((b"ping" + self.rng.randbytes(8), peer, 0))
        deadline = now + self.period
        self.deadline = deadline if deadline <= self.until else None
