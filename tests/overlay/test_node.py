"""The overlay node core, driven by the simulator in small overlays: joining, routing, shortcuts,
failure detection, bootstrap retries, strangers, and hostile datagrams."""

from __future__ import annotations

from random import Random

from overlay import Cluster, Delivered, Identity, LinkDown, OverlayConfig, OverlayNode, Service, SimHost
from overlay.liveness import DEAD_WINDOW, PROBE_DEFAULT_S

SECRET = b"simulated overlay network secret"


def small(seed: int, nodes: int) -> Cluster:
    cluster = Cluster(seed)
    first = cluster.add_node()
    cluster.set_bootstrap([first])
    for _ in range(nodes - 1):
        cluster.add_node()
    assert cluster.run_until_consistent(60.0) is not None
    return cluster


def test_joiners_learn_their_place_and_report_joined() -> None:
    cluster = small(1, 12)
    for member in cluster.live():
        assert member.node.maintenance.state == "joined"
        assert member.joined_at is not None
        status = member.node.status(cluster.now)
        assert status["left"] and status["right"]
        assert all({"peer", "kinds", "endpoint", "rtt_ms", "age_s"} <= set(link) for link in status["links"])


def test_messages_carry_their_hop_count_and_reach_exact_and_closest_destinations() -> None:
    cluster = small(2, 16)
    members = cluster.live()
    src, dest = members[0], members[7]
    got: list[Delivered] = []
    cluster.on_event = lambda m, e: got.append(e) if isinstance(e, Delivered) and e.service == 40 else None
    src.node.send(dest.node.address, 40, b"hello", cluster.now)
    src.host.poke()
    cluster.scheduler.run_for(2.0)
    assert [(e.payload, e.dest, e.exact) for e in got] == [(b"hello", dest.node.address, True)]
    assert 1 <= got[0].hops <= 4
    key = dest.node.address + 1  # a key just past a node belongs to it or to its right neighbour
    got.clear()
    src.node.send(key, 40, b"to a key", cluster.now, exact=False)
    src.host.poke()
    cluster.scheduler.run_for(2.0)
    assert len(got) == 1 and not got[0].exact


def test_traffic_to_one_destination_opens_a_shortcut_that_idles_out() -> None:
    cluster = small(3, 40)
    cluster.scheduler.run_for(60.0)  # the joiners' temporary links have closed
    members = cluster.live()
    src = members[7]
    dest = next(m for m in members if m is not src and src.node.table.get(m.node.address) is None)
    for _ in range(25):
        src.node.send(dest.node.address, Service.IPOP, b"x", cluster.now)
        src.host.poke()
        cluster.scheduler.run_for(0.1)
    cluster.scheduler.run_for(5.0)
    link = src.node.table.get(dest.node.address)
    assert (link is not None and "shortcut" in src.node.status(cluster.now)["links"][0]["kinds"]) or any(
        "shortcut" in entry["kinds"] for entry in src.node.status(cluster.now)["links"]
    )
    cluster.scheduler.run_for(src.node.config.shortcut_idle_s + 30.0)
    assert all("shortcut" not in entry["kinds"] for entry in src.node.status(cluster.now)["links"])


def test_application_traffic_on_a_roleless_link_makes_it_a_shortcut_instead_of_unused() -> None:
    cluster = small(3, 30)
    cluster.scheduler.run_for(60.0)
    members = cluster.live()
    src = members[4]
    dest = next(m for m in members if m is not src and src.node.table.get(m.node.address) is None)
    src.node.connector.connect_address(dest.node.address, 0, cluster.now)  # a link with no role
    src.host.poke()
    cluster.scheduler.run_for(2.0)
    assert src.node.table.get(dest.node.address) is not None
    for _ in range(30):  # traffic over an existing link is not counted towards a shortcut
        src.node.send(dest.node.address, Service.IPOP, b"x", cluster.now)
        src.host.poke()
        cluster.scheduler.run_for(1.0)
    link = src.node.table.get(dest.node.address)
    back = dest.node.table.get(src.node.address)
    assert link is not None and back is not None, "closed as unused although it carried traffic"
    mine = next(e for e in src.node.status(cluster.now)["links"] if e["peer"] == f"{dest.node.address:040x}")
    theirs = next(
        e for e in dest.node.status(cluster.now)["links"] if e["peer"] == f"{src.node.address:040x}"
    )
    assert "shortcut" in mine["my_roles"] and "shortcut" in theirs["peer_roles"]


def test_a_crashed_neighbour_is_noticed_and_the_ring_closes_over_it() -> None:
    cluster = small(4, 12)
    victim = cluster.live()[5]
    downs: list[float] = []
    cluster.on_event = lambda m, e: downs.append(cluster.now) if isinstance(e, LinkDown) else None
    start = cluster.now
    cluster.kill(victim)
    healed = cluster.run_until_consistent(120.0)
    assert healed is not None
    config = victim.node.config
    # A keepalive interval of quiet, then the pings' window (about a second per probe timeout here).
    assert downs and min(downs) - start <= config.keepalive_s * 1.05 + DEAD_WINDOW * PROBE_DEFAULT_S + 1
    # Its neighbours counted the pings it left unanswered and the links they gave up on for silence.
    others = [m for m in cluster.live() if m is not victim]
    assert sum(m.node.counters["links_lost_silent"] for m in others) >= 1
    assert sum(m.node.counters["probes_unanswered"] for m in others) >= config.probe_retries


def test_unreachable_bootstrap_peers_are_retried_with_backoff_and_said_so() -> None:
    cluster = Cluster(5)
    lonely = cluster.add_node(bootstrap=(("11.9.9.9", 5800),))
    cluster.scheduler.run_for(60.0)
    maintenance = lonely.node.maintenance
    assert maintenance.state == "bootstrapping"
    assert "no bootstrap peer answered; retrying in" in maintenance.state_detail
    sent = lonely.node.counters["tx_datagrams"]
    assert 5 <= sent <= 40  # retransmissions with backoff, not a flood


def test_a_node_with_another_secret_gets_no_answer_at_all() -> None:
    cluster = small(6, 4)
    first = cluster.live()[0]
    config = OverlayConfig(
        realm="sim", secret=b"another secret, another network", bootstrap=(first.host.endpoint,)
    )
    rng = Random(1)
    stranger = OverlayNode(
        Identity.generate(rng), config, rng, cluster.now, local_endpoints=(("11.8.8.8", 5800),)
    )
    host: SimHost = cluster.network.add_host("11.8.8.8", 5800, stranger)
    cluster.scheduler.run_for(30.0)
    assert len(stranger.table) == 0
    assert stranger.counters["rx_datagrams"] == 0  # not one datagram came back
    assert first.node.security.counters["bad_mac"] > 0
    assert host.alive


def test_random_and_mutated_datagrams_are_dropped_and_counted_never_raised() -> None:
    cluster = small(7, 8)
    members = cluster.live()
    captured: list[bytes] = []
    target = members[3]
    original = target.node.receive_datagram

    def capture(data: bytes, addr: tuple[str, int], now: float) -> None:
        captured.append(data)
        original(data, addr, now)

    target.node.receive_datagram = capture  # type: ignore[method-assign]
    cluster.scheduler.run_for(30.0)
    target.node.receive_datagram = original  # type: ignore[method-assign]
    assert len(captured) > 10
    rng = Random(7)
    victim = members[2].node
    before = sum(victim.counters.values()) + sum(victim.security.counters.values())
    for i in range(20_000):
        if i % 2:
            data = rng.randbytes(rng.randrange(0, 200))
            if rng.random() < 0.5 and data:
                data = bytes([0xA1, rng.randrange(0, 8)]) + data[2:]
        else:
            data = bytearray(rng.choice(captured))
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[: rng.randrange(1, len(data) + 1)]) if rng.random() < 0.2 else bytes(data)
        victim.receive_datagram(data, ("11.7.7.7", 5800), cluster.now)
    after = sum(victim.counters.values()) + sum(victim.security.counters.values())
    assert after - before >= 20_000  # every one was counted somewhere
    members[2].host.poke()
    cluster.scheduler.run_for(30.0)
    assert cluster.ring_consistent()


def test_re_arming_a_link_check_adds_no_heap_entry_and_the_check_still_runs_when_due() -> None:
    """Liveness keeps about one timer entry per link: re-arming a link to a later time leaves the
    pending (earlier) entry in place, and when that one fires the check re-arms for the new time. The
    check then runs when due: a link kept silent past its interval is pinged."""
    cluster = small(4, 6)
    member = cluster.live()[0]
    node = member.node
    link = next(iter(node.table))
    before = len(node._timers)
    now = cluster.now
    for i in range(1, 101):
        node.liveness._arm(link, now + 0.5 + i * 0.01)
    assert len(node._timers) <= before + 1
    due = link.next_check
    # Silence from the peer from now on: the check at ``due`` must find the link idle and ping it.
    cluster.network.partition([[member.host.endpoint[0]]])
    cluster.scheduler.run_until(due + node.config.keepalive_s + 1.0)
    assert link.probe_tries >= 1 or node.table.get(link.peer) is None
