"""A tiny discrete-event harness for unit tests: two hosts behind ``nat.LinuxNat`` boxes run
``PunchSession``s against each other over a seeded lossy network. It is a test double of the network
(the real simulator lives in ``overlay``); the NAT boxes and punch sessions are the real ones."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from nat import Endpoint, LinuxNat, PunchConfig, PunchSession, PunchState, make_nat

SERVER: Endpoint = ("198.51.100.10", 3478)
LATENCY = 0.010


@dataclass
class Host:
    name: str
    private: Endpoint
    nat: LinuxNat | None
    session: PunchSession | None = None
    received_probes: int = 0
    reflexive: Endpoint | None = None
    log: list[str] = field(default_factory=list)

    @property
    def public_ip(self) -> str:
        return self.nat.public_ip if self.nat else self.private[0]


class PunchNet:
    def __init__(self, rng: Random, loss: float = 0.0) -> None:
        self.rng = rng
        self.loss = loss
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.hosts: dict[str, Host] = {}
        self.by_public_ip: dict[str, Host] = {}

    def add(self, name: str, private: Endpoint, kind: str, public_ip: str, **opts: bool) -> Host:
        nat = make_nat(kind, public_ip, self.rng, **opts)
        if nat is None:
            private = (public_ip, private[1])  # a public host's socket is its public endpoint
        host = Host(name, private, nat)
        self.hosts[name] = host
        self.by_public_ip[host.public_ip] = host
        return host

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn))

    def send(self, host: Host, dst: Endpoint, kind: str, ttl: int = 0) -> None:
        src = host.private
        if host.nat is not None:
            translated = host.nat.outbound(src, dst, self.now)
            if translated is None:
                return
            src = translated
        if ttl in (1, 2):
            return  # passed our own NAT, expires in the core
        if self.rng.random() < self.loss:
            return
        self.at(self.now + LATENCY, lambda: self._arrive(src, dst, kind))

    def stun(self, host: Host) -> Endpoint:
        """Our reflexive endpoint as a server sees it (a STUN exchange, answered at once)."""
        refl = host.nat.outbound(host.private, SERVER, self.now) if host.nat else host.private
        assert refl is not None
        if host.nat:
            host.nat.inbound(SERVER, refl, self.now)  # the answer comes back through the NAT
        host.reflexive = refl
        return refl

    def _arrive(self, src: Endpoint, dst: Endpoint, kind: str) -> None:
        host = self.by_public_ip.get(dst[0])
        if host is None:
            return
        if host.nat is not None:
            private = host.nat.inbound(src, dst, self.now)
            if private is None or private != host.private:
                return
        elif dst != host.private:
            return
        self._deliver(host, src, kind)

    def _deliver(self, host: Host, src: Endpoint, kind: str) -> None:
        session = host.session
        if kind == "probe":
            host.received_probes += 1
            self.send(host, src, "reply")  # every valid probe is answered to its source
            if session is not None:
                session.probe_received(src, self.now)
        elif kind == "reply" and session is not None:
            session.reply_received(src, self.now)
        self._pump(host)

    def start(
        self, host: Host, remote: list[Endpoint], at: float, config: PunchConfig, hold_s: float = 0.0
    ) -> None:
        def go() -> None:
            host.session = PunchSession(remote, self.now, config=config, hold_s=hold_s)
            self._pump(host)

        self.at(at, go)

    def _pump(self, host: Host) -> None:
        session = host.session
        if session is None:
            return
        session.handle_timer(self.now)
        for dst, ttl in session.probes_due(self.now):
            self.send(host, dst, "probe", ttl)
        timer = session.get_timer()
        if timer is not None:
            self.at(max(timer, self.now), lambda: self._pump(host))

    def run(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            t, _, fn = heapq.heappop(self._heap)
            self.now = t
            fn()
        self.now = until


def punch_pair(
    kind_a: str,
    kind_b: str,
    seed: int,
    *,
    loss: float = 0.0,
    router_input_accept: bool = False,
    config: PunchConfig | None = None,
    skew: float = 0.0,
    hold_b: float = 0.0,
) -> tuple[PunchSession, PunchSession, PunchNet]:
    """Both hosts learn their reflexive endpoint from a server, exchange it, and punch. B starts
    ``skew`` seconds before A (B learns of the attempt first)."""
    net = PunchNet(Random(seed), loss)
    a = net.add("a", ("192.168.1.2", 40000), kind_a, "203.0.113.2", router_input_accept=router_input_accept)
    b = net.add("b", ("192.168.2.2", 40000), kind_b, "203.0.113.6", router_input_accept=router_input_accept)
    ra, rb = net.stun(a), net.stun(b)
    cfg = config or PunchConfig()
    net.start(b, [ra], 0.0, cfg, hold_s=hold_b)
    net.start(a, [rb], skew, cfg)
    net.run(skew + cfg.timeout_s + 1.0)
    assert a.session is not None and b.session is not None
    return a.session, b.session, net


def direct(a: PunchSession, b: PunchSession) -> bool:
    return a.state is PunchState.SUCCEEDED and b.state is PunchState.SUCCEEDED
