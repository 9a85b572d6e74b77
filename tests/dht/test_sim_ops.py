"""The DHT on the real overlay in the simulator (issue 3's simulator tests): replica holders killed, a
joiner taking over its key range, a forged delete, and expiry."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from dht import AlreadyOwned, Created, Deleted, Kind, OpResult, Stored, Values, sign_record
from dht.codec import Write, encode
from overlay import Address, Service, key_address
from tests.dht.simnet import do, overlay_with_dht, stable_nodes


def values_of(result: OpResult) -> list[bytes]:
    assert isinstance(result, Values), result
    return [v.value for v in result.values]


@pytest.mark.timeout(300)
def test_get_answers_with_every_holder_of_three_of_eight_positions_dead() -> None:
    """Every node holding 3 of the key's 8 positions dies at once, without a word. Once the overlay has
    noticed (keepalive and probes: under 30 s), and before the owner republishes, a get answers from
    the five positions left, and its read repair fills the three that came back empty."""
    sim = overlay_with_dht(60, seed=11)
    key, value = b"name:alice", b"10.250.0.7"
    owner, reader = stable_nodes(sim)[:2]
    assert isinstance(do(sim, owner, lambda n, now: n.put(key, value, 600, now)), Stored)
    written = sim.cluster.now
    sim.cluster.scheduler.run_for(2.0)
    holders = {i: set(sim.holders(key, i)) for i in range(8)}
    assert all(len(h) == 3 for h in holders.values()), holders  # a primary and its two copies

    # Three positions whose holders hold nothing else of the key, and are neither owner nor reader.
    def clear(trio: tuple[int, ...]) -> bool:
        doomed = set().union(*(holders[j] for j in trio))
        kept = set().union(*(holders[j] for j in range(8) if j not in trio)) | {owner, reader}
        return not doomed & kept

    chosen = next(trio for trio in itertools.combinations(range(8), 3) if clear(trio))
    for address in sorted(set().union(*(holders[j] for j in chosen))):
        sim.kill(address)
    alice = sim.nodes[owner].node.identity.public_key
    assert sim.positions_holding(key, value, alice) == 5

    assert sim.cluster.run_until_consistent(40.0) is not None
    assert sim.cluster.now < written + sim.config.republish_s - 6.0, "the get comes before a republish"
    assert sim.positions_holding(key, value, alice) == 5
    assert values_of(do(sim, reader, lambda n, now: n.get(key, now))) == [value]
    # Read repair sends the value to the three positions as soon as the get has its answers; a store
    # routed to a position whose new holder is still settling in may take a resend (simulated time).
    for _ in range(50):
        if sim.positions_holding(key, value, alice) == 8:
            break
        sim.cluster.scheduler.run_for(0.1)
    assert sim.positions_holding(key, value, alice) == 8, "read repair refilled the lost positions"


@pytest.mark.timeout(300)
def test_joiners_take_over_their_key_ranges_with_no_record_lost() -> None:
    """Forty records written once (no owner refresh, so only hand-over can keep them), then ten nodes
    join one after another. Every position ends on its new closest node and its copies, old holders
    drop what they handed over, and every record is held at as many positions as before the joins
    (all eight, but for a put whose eighth request went unanswered: see the report of branch dht2)."""
    sim = overlay_with_dht(40, seed=12)
    nodes = stable_nodes(sim)
    records: dict[bytes, tuple[bytes, bytes]] = {}
    for n in range(40):
        key, value, writer = b"k%d" % n, b"v%d" % n, nodes[n % len(nodes)]
        result = do(sim, writer, lambda d, now, k=key, v=value: d.put(k, v, 3600, now, refresh=False))
        assert isinstance(result, Stored), result
        records[key] = (value, sim.nodes[writer].node.identity.public_key)
    sim.cluster.scheduler.run_for(5.0)
    handed_over = sim.stats().positions_handed_over
    before = {key: sim.positions_holding(key, value, owner) for key, (value, owner) in records.items()}
    assert sum(before.values()) >= 8 * len(records) - 2, before  # a put may leave a position to repair

    joiners: set[Address] = set()
    for _ in range(10):
        joiners.add(sim.add_node().address)
        sim.cluster.scheduler.run_for(3.0)
    sim.cluster.scheduler.run_for(20.0)
    assert sim.cluster.ring_consistent()

    taken_over = 0
    for key, (value, owner) in records.items():
        assert sim.positions_holding(key, value, owner) == before[key], key
        for index in range(8):
            holders = sim.holders(key, index)
            primary = sim.cluster.owner(key_address(key, index))
            assert not holders or primary in holders, (key, index)
            taken_over += primary in joiners and primary in holders
    assert taken_over >= 10, "the joiners became the closest node of some positions"
    assert sim.stats().positions_handed_over > handed_over, "old holders let go of what moved"
    reader = stable_nodes(sim)[-1]
    for key, (value, _) in list(records.items())[:10]:
        assert values_of(do(sim, reader, lambda d, now, k=key: d.get(k, now))) == [value]


@pytest.mark.timeout(300)
def test_a_forged_delete_is_refused_and_counted() -> None:
    """Mallory signs a tombstone for Alice's value with her own key but names Alice as the owner, and
    routes it to all eight positions: the replicas refuse and count it, and the value stays. Her own,
    honestly signed delete of the same value only speaks for her (she owns nothing there)."""
    sim = overlay_with_dht(40, seed=13)
    alice, mallory, reader = stable_nodes(sim)[:3]
    key, value = b"ns:broadcast", b"alice"
    assert isinstance(do(sim, alice, lambda n, now: n.put(key, value, 600, now)), Stored)
    alice_key = sim.nodes[alice].node.identity.public_key

    m = sim.nodes[mallory]
    forged = dataclasses.replace(
        sign_record(m.node.identity, Kind.DELETE, key, value, ttl=600, seq=1 << 40), owner=alice_key
    )
    forged_before = sim.stats().forged
    for index in range(8):
        message = encode(Write(1000 + index, index, forged))
        m.member.node.send(key_address(key, index), Service.DHT, message, sim.cluster.now, exact=False)
    m.member.host.poke()
    sim.cluster.scheduler.run_for(5.0)
    assert sim.stats().forged - forged_before == 8
    assert sim.positions_holding(key, value, alice_key) == 8
    assert values_of(do(sim, reader, lambda n, now: n.get(key, now))) == [value]

    assert isinstance(do(sim, mallory, lambda n, now: n.delete(key, value, now)), Deleted)
    assert values_of(do(sim, reader, lambda n, now: n.get(key, now))) == [value]
    assert isinstance(do(sim, alice, lambda n, now: n.delete(key, value, now)), Deleted)
    assert values_of(do(sim, reader, lambda n, now: n.get(key, now))) == []


@pytest.mark.timeout(300)
def test_values_are_gone_after_their_ttl_and_a_lapsed_lease_frees_the_key() -> None:
    """A put value and a created key, neither refreshed, live their TTL and not a second more on any
    replica; the stores forget them at the next sweep, and another node may then create the key."""
    sim = overlay_with_dht(30, seed=14)
    a, b, reader = stable_nodes(sim)[:3]
    assert isinstance(do(sim, a, lambda n, now: n.put(b"tmp", b"x", 20, now, refresh=False)), Stored)
    assert isinstance(
        do(sim, a, lambda n, now: n.create(b"ip:10.250.0.9", b"a", 20, now, refresh=False)), Created
    )
    written = sim.cluster.now
    assert values_of(do(sim, reader, lambda n, now: n.get(b"tmp", now))) == [b"x"]
    taken = do(sim, b, lambda n, now: n.create(b"ip:10.250.0.9", b"b", 60, now))
    assert isinstance(taken, AlreadyOwned), taken

    sim.cluster.scheduler.run_until(written + 20.5)
    for key in (b"tmp", b"ip:10.250.0.9"):
        assert all(sim.holders(key, i) == [] for i in range(8)), key
    assert values_of(do(sim, reader, lambda n, now: n.get(b"tmp", now))) == []
    sim.cluster.scheduler.run_for(sim.config.sweep_interval_s)
    positions = {key_address(b"tmp", i) for i in range(8)}
    assert not any(p in sd.node.store for sd in sim for p in positions), "swept from memory"
    assert isinstance(do(sim, b, lambda n, now: n.create(b"ip:10.250.0.9", b"b", 60, now)), Created)


def test_a_run_is_a_function_of_the_seed() -> None:
    """Two runs with the same seed: the same results at the same simulated instants, the same counters."""

    def run() -> tuple[list[tuple[float, OpResult]], dict[str, int]]:
        sim = overlay_with_dht(20, seed=15)
        nodes = stable_nodes(sim)
        seen: list[tuple[float, OpResult]] = []
        for i, address in enumerate(nodes[:6]):
            key = b"k%d" % (i % 3)
            result = do(
                sim, address, lambda n, now, k=key, a=address: n.create(k, a.to_bytes(20, "big"), 60, now)
            )
            seen.append((sim.cluster.now, result))
            seen.append((sim.cluster.now, do(sim, nodes[-1], lambda n, now, k=key: n.get(k, now))))
        return seen, sim.stats().as_dict()

    assert run() == run()
