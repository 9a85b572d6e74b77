"""LAN discovery at run time (``overlay.lan``): two nodes on one LAN, first linked through a public
address (as through a NAT router that hairpins), hear each other's beacons and move the link onto the
LAN; bad and foreign beacons are counted and dropped."""

from __future__ import annotations

from random import Random

from nat import Beacon, encode_beacon
from overlay import Endpoint, Identity, OverlayConfig, OverlayNode
from tests.overlay.test_datapath import Pair

SECRET = b"lan-test-secret-0123456789abcdef"
LA, LB = ("192.168.5.2", 5800), ("192.168.5.3", 5800)
BROADCAST = ("192.168.5.255", 5800)
PA, PB = ("203.0.113.9", 5800), ("203.0.113.9", 40000)
"""The public side of the LAN's router: A is reached at PA, B's packets to PA come from PB."""


class Lan(Pair):
    """Two nodes on one LAN behind one router (``Pair``'s clock and ``run``, a wire of its own)."""

    def __init__(self, *, beacons: bool = True) -> None:
        rng = Random(5)
        self.now = 0.0
        targets = (BROADCAST,) if beacons else ()
        self.a = self._node(Identity.generate(rng), (), LA, targets)
        self.b = self._node(Identity.generate(rng), (PA,), LB, targets)
        self.lan = {LA: self.a, LB: self.b}
        self.public = {PA: (self.a, PB)}

    def _node(
        self, identity: Identity, bootstrap: tuple[Endpoint, ...], me: Endpoint, targets: tuple[Endpoint, ...]
    ) -> OverlayNode:
        config = OverlayConfig(realm="lan", secret=SECRET, bootstrap=bootstrap)
        return OverlayNode(
            identity,
            config,
            Random(identity.address & 0xFFFF),
            self.now,
            local_endpoints=(me,),
            lan_broadcast=targets,
        )

    def own(self, node: OverlayNode) -> Endpoint:
        return LA if node is self.a else LB

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for src in (self.a, self.b):
                for data, addr, _ttl in src.datagrams_to_send(self.now):
                    moved = True
                    if addr == BROADCAST:
                        for other in (self.a, self.b):
                            if other is not src:
                                other.receive_datagram(data, self.own(src), self.now)
                    elif addr in self.lan:
                        self.lan[addr].receive_datagram(data, self.own(src), self.now)
                    elif addr in self.public:
                        dest, seen_as = self.public[addr]
                        dest.receive_datagram(data, seen_as if src is self.b else PA, self.now)
                    elif addr == PB:
                        self.b.receive_datagram(data, PA, self.now)
                while src.next_event() is not None:
                    pass


def test_a_link_through_the_public_address_moves_to_the_lan_when_beacons_are_heard() -> None:
    lan = Lan()
    lan.run(5.0)
    a_to_b, b_to_a = lan.a.table.get(lan.b.address), lan.b.table.get(lan.a.address)
    assert a_to_b is not None and b_to_a is not None
    assert lan.a.counters["rx_beacon"] >= 1 and lan.b.counters["rx_beacon"] >= 1
    assert b_to_a.endpoint == LA and a_to_b.endpoint == LB, (b_to_a.endpoint, a_to_b.endpoint)
    status = lan.b.status(lan.now)["lan"]
    assert status["enabled"] and status["beacons_sent"] >= 1
    assert [p["endpoint"] for p in status["peers"]] == ["192.168.5.2:5800"]
    assert lan.b.lan.endpoint_of(lan.a.address, lan.now) == LA


def test_without_broadcast_addresses_nothing_is_sent_and_the_public_path_stays() -> None:
    lan = Lan(beacons=False)
    lan.run(5.0)
    b_to_a = lan.b.table.get(lan.a.address)
    assert b_to_a is not None and b_to_a.endpoint == PA
    assert lan.a.counters["tx_beacon"] == 0 and not lan.b.status(lan.now)["lan"]["enabled"]


def test_forged_and_foreign_beacons_are_counted_and_dropped() -> None:
    lan = Lan()
    lan.run(1.0)
    stranger = Identity.generate(Random(99)).address.to_bytes(20, "big")
    other_realm = OverlayNode(
        Identity.generate(Random(7)),
        OverlayConfig(realm="other", secret=SECRET, bootstrap=()),
        Random(1),
        0.0,
    )
    foreign = encode_beacon(Beacon(stranger, 5800), other_realm.security.netkey)
    forged = bytearray(encode_beacon(Beacon(stranger, 5800), lan.a.security.netkey))
    forged[-1] ^= 1
    for data in (foreign, bytes(forged)):
        lan.a.receive_datagram(data, ("192.168.5.66", 5800), lan.now)
    assert lan.a.counters["rx_dropped_bad_beacon"] == 2
    assert stranger not in {bytes.fromhex(p["peer"]) for p in lan.a.status(lan.now)["lan"]["peers"]}
