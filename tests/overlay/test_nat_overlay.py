"""NAT traversal of the overlay in the simulator: for every pair of the NAT lab's types two nodes end up
linked, directly exactly where the lab found punching possible and through a relay elsewhere; the
conntrack clash, loss, nodes behind one NAT, a relay that leaves, and an overlay of a few hundred nodes
in which 30 % of the pairs cannot link directly."""

from __future__ import annotations

import itertools
import statistics
from random import Random

import pytest

from nat import NatType, assign_nat_types, blocked_pairs, pair_is_punchable
from overlay import Cluster, Delivered, Member, Service
from overlay.address import Address
from overlay.maintenance import FAILED_HOLD_S, SHORTCUT_RETRY_S
from overlay.punching import NEVER
from overlay.relay import relay_cost
from overlay.table import SHORTCUT
from overlay.wire import Neighbour

TYPES = ["public", "full", "addr", "port", "sym", "symr"]


def run_until(cluster: Cluster, condition: object, timeout: float, step: float = 0.1) -> float:
    """Run the simulation until ``condition()`` holds; the simulated time that took (fails on timeout)."""
    start = cluster.now
    while not condition():  # type: ignore[operator]
        assert cluster.now - start < timeout, "condition not reached in simulated time"
        cluster.scheduler.run_for(step)
    return cluster.now - start


def linked(a: Member, b: Member) -> bool:
    ab, ba = a.node.table.get(b.node.address), b.node.table.get(a.node.address)
    return bool(ab and ba and ab.sessions and ba.sessions and a.node.connector.busy(b.node.address) is False)


def echo_arrives(cluster: Cluster, src: Member, dest: Member) -> bool:
    got: list[Delivered] = []
    previous = cluster.on_event

    def catch(member: Member, event: object) -> None:
        if member is dest and isinstance(event, Delivered) and event.payload == b"ping through":
            got.append(event)

    cluster.on_event = catch
    try:
        src.node.send(dest.node.address, Service.IPOP, b"ping through", cluster.now)
        src.host.poke()
        cluster.scheduler.run_for(2.0)
    finally:
        cluster.on_event = previous
    return bool(got)


def two_sites(
    a_type: str, b_type: str, seed: int = 1, *, router_input_accept: bool = False, loss: float = 0.0
) -> tuple[Cluster, Member, Member]:
    cluster = Cluster(seed)
    boot = cluster.add_node()
    cluster.set_bootstrap([boot])
    a = cluster.add_node(nat=a_type, router_input_accept=router_input_accept)
    a.host.impair(loss=loss)
    run_until(cluster, lambda: a.node.maintenance.state == "joined", 60)
    b = cluster.add_node(nat=b_type, router_input_accept=router_input_accept)
    b.host.impair(loss=loss)
    return cluster, a, b


@pytest.mark.parametrize(("a_type", "b_type"), list(itertools.combinations_with_replacement(TYPES, 2)))
def test_every_pair_of_nat_types_links_directly_where_the_lab_could_and_relayed_elsewhere(
    a_type: str, b_type: str
) -> None:
    cluster, a, b = two_sites(a_type, b_type)
    run_until(cluster, lambda: linked(a, b), 30)
    cluster.scheduler.run_for(5.0)  # let any tunnel settle on its relay
    ab, ba = a.node.table.get(b.node.address), b.node.table.get(a.node.address)
    assert ab is not None and ba is not None
    punchable = pair_is_punchable(a_type, b_type)
    assert ab.direct is punchable and ba.direct is punchable, (ab.path_text(), ba.path_text())
    if not punchable:
        boot = cluster.live()[0].node.address
        assert ab.relay == boot and ba.relay == boot  # the one common neighbour both reach directly
    assert echo_arrives(cluster, a, b) and echo_arrives(cluster, b, a)


def test_the_conntrack_clash_case_goes_direct() -> None:
    """Both routers' own stacks accept unsolicited packets (the lab's 4-in-5 failure without the
    pre-punch). A node that joins and at once links to the other sends its connect-to-me before it
    knows its public endpoint; the peer can pre-punch only what was advertised, so probes from the
    public endpoint used to reach the peer's router first and take its port (seed 3 here; 4 seeds in 20
    before the connect-to-me was sent again with the new candidates). Now every seed punches, with
    no port remapped on either router."""
    readvertised = 0
    for seed in range(1, 11):
        cluster, a, b = two_sites("port", "port", seed, router_input_accept=True)
        run_until(cluster, lambda a=a, b=b: linked(a, b), 30)  # type: ignore[misc]
        link = a.node.table.get(b.node.address)
        assert link is not None, seed
        assert a.host.nat is not None and b.host.nat is not None
        remapped = a.host.nat.remapped + b.host.nat.remapped  # type: ignore[attr-defined]
        assert link.direct and remapped == 0, (seed, link.path_text(), remapped)
        readvertised += a.node.counters["connect_readvertised"] + b.node.counters["connect_readvertised"]
    assert readvertised >= 1  # the race these seeds exercise


@pytest.mark.parametrize(("a_type", "b_type"), [("port", "port"), ("full", "sym"), ("port", "sym")])
def test_links_form_under_twenty_percent_loss(a_type: str, b_type: str) -> None:
    cluster, a, b = two_sites(a_type, b_type, seed=3, loss=0.2)
    run_until(cluster, lambda: linked(a, b), 60)
    cluster.scheduler.run_for(5.0)
    link = a.node.table.get(b.node.address)
    assert link is not None and link.direct is pair_is_punchable(a_type, b_type)


LOSSY_SITE_SEEDS = (17, 24, 29, 35)
"""Seeds where the lossy member below, before the fixes of this test, had no link to a true ring
neighbour after 60 s (24, 35: its first neighbour list lost, it kept only its bootstrap link and its
connect-to-me messages could not leave it) or waited 45 to 100+ s for its shortcut (17, 24, 29, 35:
the peer still held a half-open link and did not punch back, and one failure held the next attempt
for 60 s). In seeds 1 to 100 every member now links to both ring neighbours within 25 s and opens
its shortcut within 24 s."""


@pytest.mark.parametrize("seed", LOSSY_SITE_SEEDS)
def test_a_member_behind_a_lossy_nat_links_to_its_ring_and_to_its_traffic(seed: int) -> None:
    """The NAT lab grid's lossy site in the simulator: a member behind an address-restricted NAT with
    20 % loss each way joins a ring of members behind every NAT type, links to its true ring
    neighbours, and a stream of messages to a member it is not linked to and can punch to opens a
    direct shortcut (the grid's ``lossy1 -> port1`` sometimes had no link at all after 100 s)."""
    cluster = Cluster(seed)
    boot = cluster.add_node()
    cluster.set_bootstrap([boot])
    members = [cluster.add_node(nat=t) for t in ("full", "addr", "port", "sym") * 3 + ("port",)]
    lossy = cluster.add_node(nat="addr")
    lossy.host.impair(loss=0.2)
    table = lossy.node.table
    left, right = cluster.true_neighbours(lossy.node.address)
    run_until(cluster, lambda: table.get(left) is not None and table.get(right) is not None, 30)
    cluster.scheduler.run_for(max(0.0, 20.0 - cluster.now))
    peer = next(
        m for m in members if pair_is_punchable("addr", m.nat_type) and table.get(m.node.address) is None
    )

    def shortcut() -> bool:
        lossy.node.send(peer.node.address, Service.IPOP, b"x" * 64, cluster.now)  # 20 a second
        lossy.host.poke()
        link = table.get(peer.node.address)
        return link is not None and link.direct and bool(link.sessions)

    run_until(cluster, shortcut, 30, step=0.05)


def test_a_peer_holding_a_half_open_link_punches_back() -> None:
    """``a`` dropped its link to ``b`` and its Close was lost: ``b`` still holds a direct link when
    ``a``'s connect-to-me arrives. ``b`` must punch back (it answers probes only under a token it
    punches for); it did not, and behind ``b``'s port-restricted NAT the pair fell back to a relay."""
    cluster, a, b = two_sites("addr", "port", seed=2)
    run_until(cluster, lambda: linked(a, b), 30)
    cluster.scheduler.run_for(5.0)
    link = a.node.table.get(b.node.address)
    assert link is not None and link.direct
    a.node.drop_link(link, "test: the Close is lost", cluster.now, notify=False)
    assert b.node.table.get(a.node.address) is not None  # b's end is half open
    a.node.connector.connect_address(b.node.address, SHORTCUT, cluster.now)
    a.host.poke()
    run_until(cluster, lambda: (ab := a.node.table.get(b.node.address)) is not None and bool(ab.sessions), 5)
    ab = a.node.table.get(b.node.address)
    assert ab is not None and ab.direct, ab.path_text()


def test_a_failed_shortcut_is_tried_again_soon_while_traffic_goes_on() -> None:
    """A traffic-driven shortcut that failed is tried again after ``SHORTCUT_RETRY_S`` (doubling up
    to ``FAILED_HOLD_S``), not after the minute that hearsay waits."""
    cluster, a, _b = two_sites("full", "full", seed=2)
    run_until(cluster, lambda: a.node.maintenance.state == "joined", 30)
    m, connector = a.node.maintenance, a.node.connector
    peer = Address(a.node.address ^ (1 << 100))  # no such node: every attempt would time out
    waits = []
    for _ in range(6):
        m.attempt_failed(peer, SHORTCUT, [], cluster.now)
        waits.append(m.shortcut_retry[peer][1])
        for _ in range(a.node.config.shortcut_after_messages):
            m.count_traffic(peer, cluster.now)
        assert peer not in connector.by_peer  # held
        m.traffic.clear()
        cluster.scheduler.run_for(waits[-1])
        for _ in range(a.node.config.shortcut_after_messages):
            m.count_traffic(peer, cluster.now)
        attempt = connector.by_peer.get(peer)
        assert attempt is not None and attempt.role == SHORTCUT  # tried again
        connector.finish(attempt, cluster.now)
        m.traffic.clear()
    assert waits == [SHORTCUT_RETRY_S * 2**k for k in range(4)] + [FAILED_HOLD_S] * 2


def test_nodes_behind_one_nat_link_directly_by_their_private_addresses() -> None:
    cluster = Cluster(4)
    boot = cluster.add_node()
    cluster.set_bootstrap([boot])
    a = cluster.add_node(nat="sym")
    run_until(cluster, lambda: a.node.maintenance.state == "joined", 60)
    b = cluster.add_node(beside=a)  # same LAN, same symmetric NAT, which does not hairpin
    run_until(cluster, lambda: linked(a, b), 30)
    link = a.node.table.get(b.node.address)
    assert link is not None and link.endpoint == b.host.endpoint == ("192.168.1.3", 5800)


def test_a_tunnel_survives_its_relay_leaving() -> None:
    cluster = Cluster(5)
    boot = cluster.add_node()
    cluster.set_bootstrap([boot])
    others = [cluster.add_node(nat="full") for _ in range(3)]
    a = cluster.add_node(nat="sym")
    b = cluster.add_node(nat="port")
    run_until(cluster, lambda: linked(a, b), 60)
    cluster.scheduler.run_for(10.0)
    link = a.node.table.get(b.node.address)
    assert link is not None and not link.direct and link.relay is not None
    relay = cluster.members[link.relay]
    assert relay in [boot, *others]
    cluster.leave(relay)
    run_until(cluster, lambda: link.relay not in (None, relay.node.address) and linked(a, b), 60)
    assert echo_arrives(cluster, a, b) and echo_arrives(cluster, b, a)


@pytest.mark.slow
def test_an_overlay_where_30_percent_of_pairs_cannot_link_directly_routes_everything() -> None:
    """150 nodes (the CI-sized version of the issue's 1,000; ``ipop simulate --nat-blocked`` runs that):
    the ring forms, at least 99 % of routes between random pairs arrive, no punchable pair is left on a
    tunnel, and direct links form within a second of the punch's start. A blocked pair may still go
    direct, rarely: a symmetric NAT that happens to give a new flow a port it already uses towards
    another peer (Linux only keeps whole tuples unique) opens a path that works."""
    cluster = Cluster(7, trace=False)
    seeds = [cluster.add_node()]
    cluster.set_bootstrap(seeds)
    seeds += [cluster.add_node() for _ in range(4)]
    cluster.scheduler.run_for(5.0)
    cluster.set_bootstrap(seeds)
    types = assign_nat_types(145, 0.33, Random(7))
    for t in types:
        cluster.add_node(nat=t)
        cluster.scheduler.run_for(0.02)
    members = cluster.live()
    share = blocked_pairs([m.nat_type for m in members]) / (len(members) * (len(members) - 1) / 2)
    assert 0.27 <= share <= 0.33
    converged = cluster.run_until_consistent(300)
    assert converged is not None
    cluster.scheduler.run_for(30)
    sample = cluster.sample_routes(2000)
    assert len(sample.hops) / 2000 >= 0.99
    by_address = {m.node.address: m.nat_type for m in members}
    direct_times: list[float] = []
    blocked_links = blocked_direct = 0
    for m in members:
        direct_times += m.node.connector.direct_times
        for link in m.node.table:
            if pair_is_punchable(m.nat_type, by_address[link.peer]):
                assert link.direct, (m.nat_type, by_address[link.peer])
            else:
                blocked_links += 1
                blocked_direct += link.direct
    assert blocked_links > 50 and blocked_direct <= 0.02 * blocked_links
    assert statistics.median(direct_times) <= 1.0
    assert any(m.nat_type == NatType.SYM for m in members)


def test_a_responder_waits_for_the_requesters_probe_unless_its_own_mapping_is_dependent() -> None:
    """Behind an endpoint-independent mapping the requester's probes reach the responder through the
    mapping its pre-punch opened, so the responder never probes first (a probe of the requester is
    checked back at once); behind a symmetric NAT the requester cannot reach it first, so it probes
    after about the answer's one-way trip."""
    cluster, a, b = two_sites("port", "port")
    run_until(cluster, lambda: linked(a, b), 30)
    assert not a.node.connector.reflexive.mapping_dependent()
    assert a.node.connector.punch.hold_for(2) == NEVER
    # Two peers report b at two different public ports: what a symmetric NAT shows.
    reflexive, now = b.node.connector.reflexive, cluster.now
    reflexive.observed(1, ("198.51.100.20", 5800), ("12.0.0.9", 40001), now)
    reflexive.observed(2, ("198.51.100.21", 5800), ("12.0.0.9", 40002), now)
    reflexive.observed(3, ("198.51.100.22", 5800), ("12.0.0.9", 40003), now)
    assert reflexive.mapping_dependent()
    assert b.node.connector.punch.hold_for(2) < 1.0


GRID_TYPES = ["full", "full", "addr", "addr", "port", "port", "sym", "sym", "addr"]
"""The NAT grid's sites (tests/ipop/test_system_nat.py) besides its two clash sites."""


def test_no_node_sends_unsolicited_to_a_nat_it_only_heard_of() -> None:
    """The NAT grid's clash, reproduced: 11 nodes behind the grid's NATs join at once, two of them
    behind ``port`` routers whose own stack accepts unsolicited input. A packet that reaches such a
    router before its host has sent to the sender takes the host's public port, and Linux then moves
    every later flow of the host to a new port (``nat.LinuxNat`` models that reuse). Two ways it
    happened: a node listed a new neighbour with only the public endpoint its packets came from
    (before its ``Hello`` gave candidates), and another node took that for a public node and sent
    its handshake straight there; and a responder's own probes, after a hold, reached the
    requester's router before the requester had pre-punched (7-10 remapped ports over these seeds
    before, 0 after). Links between punchable pairs must all be direct: a responder whose mapping
    was still unknown held its probes, and one whose mapping then showed a symmetric NAT must probe
    after all (without that, full x sym pairs relayed)."""
    released = 0
    for seed in range(1, 21):
        cluster = Cluster(seed, trace=False)
        boot = cluster.add_node()
        cluster.set_bootstrap([boot])
        members = [cluster.add_node(nat=t) for t in GRID_TYPES]
        members += [cluster.add_node(nat="port", router_input_accept=True) for _ in range(2)]
        assert cluster.run_until_consistent(30) is not None, seed
        cluster.scheduler.run_for(10.0)
        remapped = {m.node.address: m.host.nat.remapped for m in members}  # type: ignore[union-attr]
        assert sum(remapped.values()) == 0, (seed, remapped)
        types = {m.node.address: m.nat_type for m in [boot, *members]}
        for m in members:
            for link in m.node.table:
                if pair_is_punchable(m.nat_type, types[link.peer]):
                    assert link.direct, (seed, m.nat_type, types[link.peer], link.path_text())
        released += sum(m.node.counters["punch_holds_released"] for m in members)
    assert released >= 1


def test_a_relay_behind_a_lossy_link_is_passed_over_for_a_clean_one_with_a_longer_rtt() -> None:
    """The NAT grid's flake: a tunnel took the site with 20 % loss as its relay because its RTT was
    the lowest, and pings through it came back 3 and 7 times of 10. The loss node a sees on its link
    to a candidate (the holes in that peer's DATA counters) now weighs more than a few ms of RTT."""
    cluster = Cluster(3)
    boot = cluster.add_node()
    cluster.set_bootstrap([boot])
    lossy, clean = cluster.add_node(nat="full"), cluster.add_node(nat="full")
    a = cluster.add_node(nat="sym")
    run_until(cluster, lambda: linked(a, lossy) and linked(a, clean), 60)
    lossy.host.impair(loss=0.2)
    for _ in range(100):  # traffic from the lossy site to a over their direct link
        lossy.node.send(a.node.address, Service.IPOP, b"x" * 100, cluster.now)
        lossy.host.poke()
        cluster.scheduler.run_for(0.05)
    to_lossy, to_clean = a.node.table.get(lossy.node.address), a.node.table.get(clean.node.address)
    assert to_lossy is not None and to_lossy.direct and to_clean is not None and to_clean.direct
    missing, seen = zip(*(s.receive_loss() for s in to_lossy.sessions), strict=True)
    assert 0.1 < sum(missing) / sum(seen) < 0.35  # the holes show the loss
    to_lossy.srtt, to_clean.srtt = 0.010, 0.030  # the lossy relay is the nearer by far
    relays = a.node.connector.relays
    offered = tuple(Neighbour(m.node.address, (m.host.endpoint,)) for m in (lossy, clean))
    assert relays.choose(offered) == clean.node.address
    assert relay_cost(to_clean) == pytest.approx(0.030)  # clean: the RTT alone, as before
    assert relay_cost(to_lossy) > 10 * 0.010
    to_clean.srtt = 0.2  # far slower than the loss costs: the RTT decides again
    assert relays.choose(offered) == lossy.node.address
