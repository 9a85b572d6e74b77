"""NAT boxes, LANs, hairpinning, low-TTL datagrams and broadcast, observed through the network with the
NAT doubles of ``sim_doubles`` (the real NAT models live in the ``nat`` package)."""

from __future__ import annotations

from random import Random

import pytest

from overlay import BROADCAST, Drop, Network, Scheduler, SimHost
from tests.overlay.sim_doubles import Recorder, TestNat

SERVER = ("198.51.100.10", 3478)


def make(seed: int = 1) -> tuple[Scheduler, Network]:
    scheduler = Scheduler()
    return scheduler, Network(scheduler, Random(seed))


def behind(
    net: Network, nat: TestNat, ip: str, port: int = 4000, echo: bool = False
) -> tuple[SimHost, Recorder]:
    core = Recorder(echo=echo)
    return net.add_host(ip, port, core, nat=nat), core


def on_internet(net: Network, endpoint: tuple[str, int], echo: bool = False) -> tuple[SimHost, Recorder]:
    core = Recorder(echo=echo)
    return net.add_host(endpoint[0], endpoint[1], core), core


def send(
    s: Scheduler, host: SimHost, core: Recorder, data: bytes, dest: tuple[str, int], *, ttl: int = 0
) -> None:
    core.send(data, dest, ttl)
    host.poke()
    s.run_until(s.now + 1.0)


def test_outbound_creates_a_mapping_and_replies_come_back_through_it() -> None:
    s, net = make()
    nat = TestNat("203.0.113.1")
    a, a_core = behind(net, nat, "192.168.1.2")
    _srv, srv_core = on_internet(net, SERVER, echo=True)
    send(s, a, a_core, b"hello", SERVER)
    assert [r.src for r in srv_core.received] == [("203.0.113.1", 40000)]  # the translated source
    assert [(r.data, r.src) for r in a_core.received] == [(b"re:hello", SERVER)]
    assert nat.outbound_calls[0][:2] == (("192.168.1.2", 4000), SERVER)
    assert nat.inbound_calls[0][:2] == (SERVER, ("203.0.113.1", 40000))


def test_filtering_is_the_boxs_decision_on_arrival() -> None:
    s, net = make()
    strict = TestNat("203.0.113.1", filtering="address_port")
    cone = TestNat("203.0.113.2", filtering="none")
    a, a_core = behind(net, strict, "192.168.1.2")
    b, b_core = behind(net, cone, "192.168.1.2")  # the same private address behind another box
    srv, _srv_core = on_internet(net, SERVER)
    stranger, stranger_core = on_internet(net, ("198.51.100.20", 5000))
    send(s, a, a_core, b"open", SERVER)
    send(s, b, b_core, b"open", SERVER)
    send(s, stranger, stranger_core, b"knock", ("203.0.113.1", 40000))
    send(s, stranger, stranger_core, b"knock", ("203.0.113.2", 40000))
    send(s, stranger, stranger_core, b"knock", ("203.0.113.2", 40001))  # no mapping at all
    assert a_core.received == []
    assert [(r.data, r.src) for r in b_core.received] == [(b"knock", ("198.51.100.20", 5000))]
    assert stranger.counters.drops == {Drop.NAT_IN: 2}
    assert srv.counters.received == 2


def test_symmetric_mapping_shows_a_new_port_to_each_destination() -> None:
    s, net = make()
    nat = TestNat("203.0.113.1", mapping="address_port")
    a, a_core = behind(net, nat, "192.168.1.2")
    _one, one_core = on_internet(net, ("198.51.100.10", 3478))
    _two, two_core = on_internet(net, ("198.51.100.11", 3478))
    send(s, a, a_core, b"1", ("198.51.100.10", 3478))
    send(s, a, a_core, b"2", ("198.51.100.11", 3478))
    send(s, a, a_core, b"3", ("198.51.100.10", 3478))
    assert {r.src for r in one_core.received} == {("203.0.113.1", 40000)}
    assert {r.src for r in two_core.received} == {("203.0.113.1", 40001)}


def test_refused_outbound_is_dropped_before_the_internet() -> None:
    s, net = make()
    nat = TestNat("203.0.113.1", refuse_outbound=True)
    a, a_core = behind(net, nat, "192.168.1.2")
    _srv, srv_core = on_internet(net, SERVER)
    send(s, a, a_core, b"x", SERVER)
    assert srv_core.received == []
    assert a.counters.drops == {Drop.NAT_OUT: 1}


@pytest.mark.parametrize("ttl", [1, 2])
def test_low_ttl_opens_the_own_mapping_but_never_arrives(ttl: int) -> None:
    """The natlab trick: A opens its own NAT towards B with a low-TTL datagram that dies in the core;
    B's first datagram then passes A's port-restricted filter."""
    s, net = make()
    nat_a = TestNat("203.0.113.1")
    nat_b = TestNat("203.0.113.2", first_port=50000)
    a, a_core = behind(net, nat_a, "192.168.1.2")
    b, b_core = behind(net, nat_b, "192.168.2.2")
    send(s, b, b_core, b"stun", SERVER)  # B's mapping 203.0.113.2:50000 exists (server unbound: dropped)
    send(s, a, a_core, b"prepunch", ("203.0.113.2", 50000), ttl=ttl)
    assert len(nat_a.outbound_calls) == 1, "the low-TTL datagram passed A's own NAT"
    assert nat_b.inbound_calls == [], "and never reached B's NAT"
    assert b_core.received == []
    assert a.counters.drops == {Drop.TTL: 1}
    send(s, b, b_core, b"punch", ("203.0.113.1", 40000))
    assert [(r.data, r.src) for r in a_core.received] == [(b"punch", ("203.0.113.2", 50000))]


def test_default_and_high_ttl_reach_the_far_nat() -> None:
    s, net = make()
    nat_b = TestNat("203.0.113.2")
    _b, _b_core = behind(net, nat_b, "192.168.2.2")
    pub, pub_core = on_internet(net, ("198.51.100.20", 5000))
    send(s, pub, pub_core, b"x", ("203.0.113.2", 40000), ttl=0)
    send(s, pub, pub_core, b"y", ("203.0.113.2", 40000), ttl=3)
    assert len(nat_b.inbound_calls) == 2
    send(s, pub, pub_core, b"z", ("203.0.113.2", 40000), ttl=2)
    assert len(nat_b.inbound_calls) == 2  # a public sender's low-TTL datagram dies in the core too


def test_lan_hosts_reach_each_other_directly_by_private_address() -> None:
    s, net = make()
    nat = TestNat("203.0.113.1")
    a, a_core = behind(net, nat, "192.168.1.2")
    _c, c_core = behind(net, nat, "192.168.1.3", echo=True)
    a_core.send(b"hi", ("192.168.1.3", 4000))
    a.poke()
    start = s.now
    s.run_until(s.now + 1.0)
    assert [(r.data, r.src) for r in c_core.received] == [(b"hi", ("192.168.1.2", 4000))]
    assert 0.00025 <= c_core.received[0].at - start <= 0.00035  # 0.3 ms +- 0.05 ms
    assert [r.data for r in a_core.received] == [b"re:hi"]
    assert nat.outbound_calls == [] and nat.inbound_calls == []


def test_private_addresses_of_another_lan_are_not_routed() -> None:
    s, net = make()
    a, a_core = behind(net, TestNat("203.0.113.1"), "192.168.1.2")
    _b, b_core = behind(net, TestNat("203.0.113.2"), "192.168.2.2")
    send(s, a, a_core, b"x", ("192.168.2.2", 4000))
    assert b_core.received == []
    assert a.counters.drops == {Drop.NO_ROUTE: 1}


@pytest.mark.parametrize("hairpin", [False, True])
def test_hairpin_only_through_a_box_that_hairpins(hairpin: bool) -> None:
    s, net = make()
    nat = TestNat("203.0.113.1", filtering="none", hairpin=hairpin)
    a, a_core = behind(net, nat, "192.168.1.2")
    c, c_core = behind(net, nat, "192.168.1.3")
    send(s, c, c_core, b"open", SERVER)  # C's mapping: 203.0.113.1:40000
    send(s, a, a_core, b"via-public", ("203.0.113.1", 40000))
    if hairpin:
        # A's datagram arrives from A's public mapping (40001), as a real hairpinning NAT shows it.
        assert [(r.data, r.src) for r in c_core.received] == [(b"via-public", ("203.0.113.1", 40001))]
        assert a.counters.drops == {}
    else:
        assert c_core.received == []
        assert a.counters.drops == {Drop.HAIRPIN: 1}


def test_broadcast_reaches_only_the_senders_lan_on_that_port() -> None:
    s, net = make()
    nat = TestNat("203.0.113.1")
    a, a_core = behind(net, nat, "192.168.1.2", port=5353)
    _same, same_core = behind(net, nat, "192.168.1.3", port=5353)
    _other_port, other_port_core = behind(net, nat, "192.168.1.4", port=5354)
    _other_lan, other_lan_core = behind(net, TestNat("203.0.113.2"), "192.168.1.3", port=5353)
    _pub, pub_core = on_internet(net, ("198.51.100.20", 5353))
    send(s, a, a_core, b"beacon", (BROADCAST, 5353))
    assert [(r.data, r.src) for r in same_core.received] == [(b"beacon", ("192.168.1.2", 5353))]
    assert a_core.received == other_port_core.received == other_lan_core.received == pub_core.received == []
    assert a.counters.sent == 1 and net.counters.received == 1
    assert nat.outbound_calls == []


def test_public_lans_by_label_hear_broadcasts_and_talk_at_lan_speed() -> None:
    s, net = make()
    r1 = Recorder()
    r2 = Recorder()
    r3 = Recorder()
    loner = Recorder()
    h1 = net.add_host("198.51.100.1", 7000, r1, lan="rack-1")
    net.add_host("198.51.100.2", 7000, r2, lan="rack-1")
    net.add_host("198.51.100.3", 7000, r3, lan="rack-2")
    solo = net.add_host("198.51.100.4", 7000, loner)
    send(s, h1, r1, b"beacon", (BROADCAST, 7000))
    assert r2.payloads() == [b"beacon"] and r3.received == []
    start = s.now
    r1.send(b"direct", ("198.51.100.2", 7000))
    h1.poke()
    s.run_until(s.now + 1.0)
    assert r2.received[-1].at - start < 0.001
    send(s, solo, loner, b"anyone?", (BROADCAST, 7000))
    assert solo.counters.sent == 1 and r1.received == [] and r3.received == []


def test_nat_boxes_are_checked_for_conflicting_addresses() -> None:
    _s, net = make()
    nat = TestNat("203.0.113.1")
    behind(net, nat, "192.168.1.2")
    with pytest.raises(ValueError):
        behind(net, nat, "192.168.1.2")  # already bound behind this box
    with pytest.raises(ValueError):
        behind(net, TestNat("203.0.113.1"), "192.168.1.9")  # another box, same public address
    with pytest.raises(ValueError):
        net.add_host("192.168.1.5", 4000, Recorder(), nat=nat, lan="x")
    with pytest.raises(ValueError):
        on_internet(net, ("203.0.113.1", 4000))  # a NAT box's address
    on_internet(net, ("198.51.100.50", 4000))
    with pytest.raises(ValueError):
        behind(net, TestNat("198.51.100.50"), "10.0.0.2")  # a public host's address
    assert net.host_at(("192.168.1.2", 4000), nat) is not None
    assert net.host_at(("192.168.1.2", 4000)) is None


def test_partition_by_nat_public_address_takes_the_whole_lan() -> None:
    s, net = make()
    nat = TestNat("203.0.113.1", filtering="none")
    a, a_core = behind(net, nat, "192.168.1.2")
    _c, c_core = behind(net, nat, "192.168.1.3")
    _srv, srv_core = on_internet(net, SERVER)
    net.partition([{"203.0.113.1"}])
    send(s, a, a_core, b"out", SERVER)
    send(s, a, a_core, b"lan", ("192.168.1.3", 4000))
    assert srv_core.received == []
    assert c_core.payloads() == [b"lan"]  # the LAN is not cut
    assert a.counters.drops == {Drop.PARTITION: 1}
