"""NAT box models: mapping and filtering of each type, port preservation, lifetimes, the conntrack
clash, and the helpers that give the simulator its NAT mix."""

from __future__ import annotations

from random import Random

import pytest

from nat import LinuxNat, NatType, assign_nat_types, blocked_pairs, make_nat, pair_is_punchable

PUB = "203.0.113.2"
H1, H2 = ("192.168.1.2", 40000), ("192.168.1.3", 40000)
X, X2, Y = ("198.51.100.10", 3478), ("198.51.100.10", 3479), ("198.51.100.11", 3478)


def nat(kind: str, **opts: bool) -> LinuxNat:
    box = make_nat(kind, PUB, Random(1), **opts)
    assert box is not None
    return box


@pytest.mark.parametrize("kind", ["full", "addr", "port"])
def test_cone_types_map_endpoint_independently_and_preserve_ports(kind: str) -> None:
    box = nat(kind)
    assert box.outbound(H1, X, 0.0) == (PUB, 40000)
    assert box.outbound(H1, Y, 0.0) == (PUB, 40000)
    assert box.outbound(H1, X2, 0.0) == (PUB, 40000)


@pytest.mark.parametrize("kind", ["sym", "symr"])
def test_symmetric_types_map_per_destination(kind: str) -> None:
    box = nat(kind)
    ports = {box.outbound(H1, d, 0.0) for d in (X, X2, Y)}
    assert len(ports) == 3
    assert box.outbound(H1, X, 1.0) == box.outbound(H1, X, 1.5)  # one flow keeps its port


def test_filtering_of_each_type() -> None:
    stranger, same_ip_other_port = ("198.51.100.99", 5), X2
    expect = {
        # kind: (stranger passes, same address other port passes)
        "full": (True, True),
        "addr": (False, True),
        "port": (False, False),
        "sym": (False, False),
    }
    for kind, (from_stranger, from_other_port) in expect.items():
        box = nat(kind)
        public = box.outbound(H1, X, 0.0)
        assert public is not None
        assert box.inbound(X, public, 0.1) == H1, kind  # the reply of the flow
        assert (box.inbound(stranger, public, 0.2) == H1) is from_stranger, kind
        assert (box.inbound(same_ip_other_port, public, 0.3) == H1) is from_other_port, kind


def test_inbound_to_another_address_or_unknown_port_is_dropped() -> None:
    box = nat("full")
    box.outbound(H1, X, 0.0)
    assert box.inbound(X, ("203.0.113.99", 40000), 0.1) is None
    assert box.inbound(X, (PUB, 40001), 0.1) is None


def test_unreplied_flow_lives_30_s_refreshed_by_outbound() -> None:
    box = nat("port")
    public = box.outbound(H1, X, 0.0)
    assert public is not None
    box.outbound(H1, X, 20.0)  # refresh
    assert box.inbound(X, public, 49.0) == H1  # 20 + 30 > 49: alive, and now replied
    assert box.inbound(X, public, 49.0 + 119.0) == H1  # replied: 120 s
    assert box.inbound(X, public, 49.0 + 119.0 + 121.0) is None


def test_unreplied_flow_expires_after_30_s() -> None:
    box = nat("port")
    public = box.outbound(H1, X, 0.0)
    assert public is not None
    assert box.inbound(X, public, 30.5) is None


def test_expired_symmetric_mapping_gets_a_new_port() -> None:
    box = nat("sym")
    first = box.outbound(H1, X, 0.0)
    again = box.outbound(H1, X, 100.0)
    assert first != again  # the old flow is gone; fully-random picks afresh


def test_port_clash_between_two_hosts_remaps_the_second() -> None:
    box = nat("port")
    assert box.outbound(H1, X, 0.0) == (PUB, 40000)
    second = box.outbound(H2, X, 0.0)
    assert second is not None and second[1] != 40000 and box.remapped == 1
    # To another destination H2 follows its existing mapping (Linux's find_appropriate_src), though
    # its own port would be free there.
    assert box.outbound(H2, Y, 0.0) == second


def test_a_hosts_later_flows_follow_its_newest_remapped_port_until_it_expires() -> None:
    """The grid's clash: one unsolicited packet to the host's public port (router input accepted)
    moved one flow, and every later flow of that host to any peer left from the moved port, so peers
    that knew the advertised port reached the router's stack instead (conntrack -L on the clash
    routers: all 14 flows of clash1 from one port)."""
    peer, other, third = ("203.0.113.6", 40000), ("203.0.113.10", 5800), ("192.168.7.2", 5800)
    box = nat("port", router_input_accept=True)
    assert box.inbound(peer, (PUB, 40000), 0.0) is None
    moved = box.outbound(H1, peer, 0.1)
    assert moved is not None and moved[1] != 40000
    assert box.outbound(H1, other, 0.2) == moved
    assert box.outbound(H1, third, 0.3) == moved
    assert box.remapped == 3
    # Another host keeps its own port: the lookup is by private source.
    assert box.outbound(H2, other, 0.3) == (PUB, 40000)
    # Once every flow of H1 has expired (30 s unreplied), a new flow gets the host's own port again.
    assert box.outbound(H1, Y, 100.0) == (PUB, 40000)


def test_router_input_accept_reproduces_the_conntrack_clash() -> None:
    peer = ("203.0.113.6", 40000)
    drop = nat("port")
    assert drop.inbound(peer, (PUB, 40000), 0.0) is None
    assert drop.outbound(H1, peer, 0.01) == (PUB, 40000)  # nothing confirmed: the port is kept

    accept = nat("port", router_input_accept=True)
    assert accept.inbound(peer, (PUB, 40000), 0.0) is None  # eaten by the router's own stack
    moved = accept.outbound(H1, peer, 0.01)
    assert moved is not None and moved[1] != 40000 and accept.remapped == 1
    # The peer keeps sending to the old port: the router's stale flow eats it, so the punch deadlocks.
    assert accept.inbound(peer, (PUB, 40000), 0.5) is None
    # Our flow itself works only for packets to the new port.
    assert accept.inbound(peer, moved, 0.6) == H1


def test_dnat_flow_of_a_full_cone_is_answered_through_the_same_port() -> None:
    box = nat("full")
    box.outbound(H1, X, 0.0)
    stranger = ("198.51.100.99", 7)
    assert box.inbound(stranger, (PUB, 40000), 1.0) == H1
    assert box.outbound(H1, stranger, 1.1) == (PUB, 40000)


def test_cone_map_expires_120_s_after_last_outbound() -> None:
    box = nat("full")
    box.outbound(H1, X, 0.0)
    assert box.inbound(("198.51.100.99", 7), (PUB, 40000), 119.0) == H1
    assert box.inbound(("198.51.100.98", 7), (PUB, 40000), 121.0) is None


def test_sweep_keeps_tables_bounded() -> None:
    box = nat("sym")
    for i in range(1000):
        box.outbound(H1, ("198.51.100.10", 1000 + i), float(i) * 0.01)
    assert box.flows == 1000
    box.outbound(H1, X, 1000.0)
    assert box.flows == 1


def test_port_exhaustion_returns_none() -> None:
    box = LinuxNat(PUB, NatType.SYM, Random(1), port_range=(5000, 5003))
    got = [box.outbound(H1, X, 0.0), box.outbound(H2, X, 0.0)]
    got += [box.outbound(("192.168.1.9", p), X, 0.0) for p in range(2)]
    assert len({g for g in got if g}) == 4
    assert box.outbound(("192.168.1.10", 1), X, 0.0) is None


def test_make_nat_and_misuse() -> None:
    assert make_nat("public", PUB, Random(1)) is None
    box = make_nat("port", PUB, Random(1), hairpin=True)
    assert box is not None and box.hairpin and box.public_ip == PUB
    with pytest.raises(ValueError):
        LinuxNat(PUB, NatType.PUBLIC, Random(1))
    with pytest.raises(ValueError):
        make_nat("cone", PUB, Random(1))


def test_pair_table_is_the_labs() -> None:
    relay = {frozenset({"port", "sym"}), frozenset({"sym"}), frozenset({"port", "symr"}), frozenset({"symr"})}
    relay.add(frozenset({"sym", "symr"}))
    kinds = ["full", "addr", "port", "sym", "symr", "public"]
    for a in kinds:
        for b in kinds:
            assert pair_is_punchable(a, b) == (frozenset({a, b}) not in relay), (a, b)
            assert pair_is_punchable(a, b) == pair_is_punchable(b, a)


@pytest.mark.parametrize("n", [10, 100, 1000])
@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_assign_nat_types_hits_the_blocked_share(n: int, share: float) -> None:
    types = assign_nat_types(n, share, Random(n))
    assert len(types) == n
    total = n * (n - 1) // 2
    blocked = blocked_pairs(types)
    brute = sum(
        1
        for i in range(min(n, 100))
        for j in range(i + 1, min(n, 100))
        if not pair_is_punchable(types[i], types[j])
    )
    if n <= 100:
        assert brute == blocked
    tolerance = 0.02 if n >= 100 else 0.1
    assert abs(blocked / total - share) <= tolerance


def test_assign_nat_types_is_deterministic_and_mixed() -> None:
    a = assign_nat_types(1000, 0.3, Random(5))
    assert a == assign_nat_types(1000, 0.3, Random(5))
    assert set(a) >= {NatType.SYM, NatType.PORT, NatType.FULL, NatType.ADDR}
    with pytest.raises(ValueError):
        assign_nat_types(10, 1.5, Random(1))
