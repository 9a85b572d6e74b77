"""Pure. An overlay of many ``OverlayNode``s on the simulated network, and what is measured on it.

This is the harness behind ``ipop simulate`` and the simulator tests: it starts nodes (each with its own
identity and rng drawn from the cluster's seed), drains their events, knows the true ring (every live
node's address, sorted) and so can say whether each node's nearest links are its true ring neighbours,
samples greedy routes between random pairs, kills and partitions nodes, and counts what maintenance
costs. It reads no clock: wall-clock figures (speed, memory) are the I/O caller's business.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from random import Random

from nat import NatType, make_nat

from ..address import Address, closer, ring_distance
from ..config import OverlayConfig
from ..events import Delivered, Endpoint, JoinStateChanged, Service, Undeliverable
from ..identity import Identity
from ..node import OverlayNode
from .host import SimHost
from .model import LatencyModel
from .network import Network
from .scheduler import Scheduler
from .seams import NatBox

PORT = 5800
"""Every simulated node listens on the same port, as real ones do by default."""

SECRET = b"simulated overlay network secret"

ROUTE_TIMEOUT_S = 30.0
"""A sampled route that has not arrived after this is a failure (routes take well under a second)."""


@dataclass
class Member:
    """One node of the cluster, with what the harness observed of it."""

    node: OverlayNode
    host: SimHost
    started: float
    joined_at: float | None = None
    nat_type: str = "public"
    """The lab type of the NAT box the node sits behind (``nat.NatType``), or ``public``."""


@dataclass
class RouteSample:
    hops: list[int]
    failures: int
    wrong_owner: int


class Cluster:
    """A simulated overlay; see the module docstring."""

    def __init__(
        self,
        seed: int,
        *,
        latency: LatencyModel | None = None,
        config: dict[str, object] | None = None,
        trace: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = Random(seed)
        self.scheduler = Scheduler()
        self.network = Network(self.scheduler, Random(self.rng.getrandbits(64)), latency, trace=trace)
        self.node_rng = Random(self.rng.getrandbits(64))
        """One generator for every node's choices: the simulation runs one event at a time in a fixed
        order, so sharing it keeps runs reproducible, and a Mersenne Twister costs 3 KB per node."""
        self.config_overrides = dict(config or {})
        self.members: dict[Address, Member] = {}
        self.bootstrap: tuple[Endpoint, ...] = ()
        self._count = 0
        self._configs: dict[tuple[Endpoint, ...], OverlayConfig] = {}
        self._sorted: list[int] | None = None
        self._routes: dict[int, tuple[Address, float]] = {}
        self._route_hops: dict[int, int] = {}
        self._route_failed: set[int] = set()
        self._site_hosts: dict[int, int] = {}
        self.on_event: Callable[[Member, object], None] | None = None
        """Extra event consumer (e.g. a DHT on top); called for every event of every member."""

    @property
    def now(self) -> float:
        return self.scheduler.now

    # -- membership ---------------------------------------------------------------------------------

    def add_node(
        self,
        *,
        bootstrap: tuple[Endpoint, ...] | None = None,
        nat: NatType | str | None = None,
        beside: Member | None = None,
        router_input_accept: bool = False,
        hairpin: bool = False,
    ) -> Member:
        """Start a node; it joins through ``bootstrap`` (default: the cluster's bootstrap peers; the
        very first node has none and starts a new overlay). With ``nat`` (a ``nat.NatType`` other than
        public) the node sits alone behind a new NAT box of that type, at a private address (the same
        192.168.1.2 at every site, as at home); ``beside`` puts it on the LAN of that member's NAT box
        instead. ``router_input_accept`` and ``hairpin`` configure a new box as ``nat.LinuxNat`` does."""
        self._count += 1
        i = self._count
        ip = f"11.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        box: NatBox | None = None
        nat_type = "public"
        if beside is not None:
            box, nat_type = beside.host.nat, beside.nat_type
            if box is None:
                raise ValueError("beside= needs a member behind a NAT box")
            self._site_hosts[id(box)] = self._site_hosts.get(id(box), 1) + 1
            ip = f"192.168.1.{1 + self._site_hosts[id(box)]}"
        elif nat is not None and NatType(nat) is not NatType.PUBLIC:
            public_ip = f"12.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            made = make_nat(
                nat,
                public_ip,
                Random(self.rng.getrandbits(64)),
                hairpin=hairpin,
                router_input_accept=router_input_accept,
            )
            assert made is not None
            box, nat_type = made, NatType(nat).value
            self._site_hosts[id(box)] = 1
            ip = "192.168.1.2"
        identity = Identity.generate(self.rng)
        if bootstrap is None:
            bootstrap = self.bootstrap
        config = self._configs.get(bootstrap)
        if config is None:  # one shared config per bootstrap list: nodes do not each carry a copy
            config = OverlayConfig(realm="sim", secret=SECRET, bootstrap=bootstrap, **self.config_overrides)  # type: ignore[arg-type]
            self._configs[bootstrap] = config
        now = self.now
        node = OverlayNode(identity, config, self.node_rng, now, local_endpoints=((ip, PORT),))
        member_box: list[Member] = []

        def drain(host: SimHost) -> None:
            if member_box:
                self._drain(member_box[0])

        host = self.network.add_host(ip, PORT, node, nat=box, after_activity=drain)
        member = Member(node, host, now, nat_type=nat_type)
        member_box.append(member)
        if node.maintenance.state == "joined":
            member.joined_at = now
        self.members[node.address] = member
        self._sorted = None
        self._drain(member)
        return member

    def set_bootstrap(self, members: Iterable[Member]) -> None:
        self.bootstrap = tuple(m.host.endpoint for m in members)

    def kill(self, member: Member) -> None:
        """The node's host vanishes without a word (crash, power cut)."""
        if member.host.alive:
            self.network.remove_host(member.host)
        self.members.pop(member.node.address, None)
        self._sorted = None

    def leave(self, member: Member) -> None:
        """The node leaves politely (its peers hear Close) and its host goes."""
        member.node.close(self.now)
        member.host.poke()
        self.kill(member)

    def live(self) -> list[Member]:
        return list(self.members.values())

    # -- events -------------------------------------------------------------------------------------

    def _drain(self, member: Member) -> None:
        node = member.node
        while (event := node.next_event()) is not None:
            if isinstance(event, JoinStateChanged) and event.state == "joined" and member.joined_at is None:
                member.joined_at = self.now
            elif isinstance(event, Delivered) and event.service == Service.ECHO:
                self._route_arrived(node.address, event)
            elif isinstance(event, Undeliverable) and event.service == Service.ECHO:
                pass  # the sample's deadline counts it
            if self.on_event is not None:
                self.on_event(member, event)

    # -- the true ring --------------------------------------------------------------------------------

    def ring(self) -> list[int]:
        if self._sorted is None:
            self._sorted = sorted(self.members)
        return self._sorted

    def true_neighbours(self, address: Address) -> tuple[Address, Address]:
        ring = self.ring()
        i = bisect.bisect_left(ring, address)
        return Address(ring[i - 1]), Address(ring[(i + 1) % len(ring)])

    def owner(self, key: int) -> Address:
        """The live node closest to ``key`` on the ring (greedy routing's destination)."""
        ring = self.ring()
        i = bisect.bisect_left(ring, key) % len(ring)
        a, b = Address(ring[i - 1]), Address(ring[i])
        return a if closer(Address(key), a, b) else b

    def inconsistent(self) -> list[Member]:
        """Members whose nearest left or right link is not their true ring neighbour."""
        if len(self.members) < 2:
            return []
        bad = []
        for address, member in self.members.items():
            left, right = self.true_neighbours(address)
            table = member.node.table
            if table.left(1) != [left] or table.right(1) != [right]:
                bad.append(member)
        return bad

    def ring_consistent(self) -> bool:
        return not self.inconsistent()

    def run_until_consistent(self, timeout: float, check_every: float = 1.0) -> float | None:
        """Run until the ring is consistent; the simulated time that took, or None on timeout."""
        start = self.now
        while self.now - start < timeout:
            if self.ring_consistent():
                return self.now - start
            self.scheduler.run_for(check_every)
        return self.now - start if self.ring_consistent() else None

    # -- routing samples ----------------------------------------------------------------------------

    def sample_routes(self, pairs: int, *, exact: bool = True, batch: int = 500) -> RouteSample:
        """Route ``pairs`` messages between random live nodes (``exact``: to a node's address; otherwise
        to a random key, which must reach the key's owner) and collect their hop counts."""
        members = self.live()
        hops: list[int] = []
        failures = wrong = 0
        sent = 0
        while sent < pairs:
            self._routes.clear()
            self._route_hops.clear()
            self._route_failed.clear()
            for _ in range(min(batch, pairs - sent)):
                sent += 1
                src = self.rng.choice(members)
                if exact:
                    dest = self.rng.choice(members).node.address
                    while dest == src.node.address:
                        dest = self.rng.choice(members).node.address
                    expected = dest
                else:
                    dest = Address(self.rng.getrandbits(160))
                    expected = self.owner(dest)
                self._routes[sent] = (expected, self.now)
                src.node.send(dest, Service.ECHO, sent.to_bytes(4, "big"), self.now, exact=exact)
                src.host.poke()
            self.scheduler.run_for(ROUTE_TIMEOUT_S, stop=lambda: len(self._route_hops) >= len(self._routes))
            for sample in self._routes:
                if sample in self._route_failed:
                    wrong += 1
                elif sample in self._route_hops:
                    hops.append(self._route_hops[sample])
                else:
                    failures += 1
        return RouteSample(hops, failures, wrong)

    def _route_arrived(self, at: Address, event: Delivered) -> None:
        if len(event.payload) != 4:
            return
        sample = int.from_bytes(event.payload, "big")
        route = self._routes.get(sample)
        if route is None or sample in self._route_hops:
            return
        self._route_hops[sample] = event.hops
        if route[0] != at:
            self._route_failed.add(sample)

    # -- costs ----------------------------------------------------------------------------------------

    def traffic(self) -> tuple[int, int]:
        """Datagrams and bytes sent by every live node so far."""
        msgs = octets = 0
        for member in self.members.values():
            counters = member.node.counters
            msgs += counters["tx_datagrams"]
            octets += counters["tx_bytes"]
        return msgs, octets


def nearest_gap(addresses: list[int]) -> int:
    """The smallest ring distance between two of ``addresses`` (for tests on crowded rings)."""
    ring = sorted(addresses)
    return min(ring_distance(Address(a), Address(b)) for a, b in zip(ring, ring[1:] + ring[:1], strict=True))
