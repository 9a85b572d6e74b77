"""DhtNodes on a scripted ring: the operations end to end, TTL and refresh, forged deletes, limits."""

from __future__ import annotations

import dataclasses

from dht import (
    AlreadyOwned,
    Created,
    Deleted,
    DhtConfig,
    Failed,
    Kind,
    OwnershipLost,
    Reason,
    Stored,
    Values,
    sign_record,
)
from dht.codec import Write, encode
from overlay import Service, distance_key, key_address
from tests.dht.ring import Member, Ring


def ring_of(n: int = 50, seed: int = 1, **kw: float) -> Ring:
    ring = Ring(DhtConfig(), seed=seed, **kw)  # type: ignore[arg-type]
    ring.add(n)
    ring.run(3)
    return ring


def values_of(result: object) -> list[bytes]:
    assert isinstance(result, Values), result
    return [v.value for v in result.values]


def two(ring: Ring) -> tuple[Member, Member]:
    a, b = sorted(ring.members)[:2]
    return ring.members[a], ring.members[b]


def test_create_get_put_delete() -> None:
    ring = ring_of()
    alice, bob = two(ring)
    assert ring.do(alice, lambda n, t: n.create(b"ip:10.0.0.1", b"alice", 600, t)) == Created(
        b"ip:10.0.0.1", b"alice", 600
    )
    got = ring.do(bob, lambda n, t: n.get(b"ip:10.0.0.1", t))
    assert isinstance(got, Values)
    (info,) = got.values
    assert (info.value, info.owner, info.kind) == (b"alice", alice.identity.public_key, Kind.CREATE)
    assert 599 < info.ttl <= 600
    assert ring.do(bob, lambda n, t: n.create(b"ip:10.0.0.1", b"bob", 600, t)) == AlreadyOwned(
        b"ip:10.0.0.1", alice.identity.public_key
    )
    assert ring.do(alice, lambda n, t: n.create(b"ip:10.0.0.1", b"alice", 600, t)) == Created(
        b"ip:10.0.0.1", b"alice", 600
    )
    assert ring.do(alice, lambda n, t: n.put(b"group", b"a", 600, t)) == Stored(b"group", b"a", 600)
    assert ring.do(bob, lambda n, t: n.put(b"group", b"b", 600, t)) == Stored(b"group", b"b", 600)
    assert values_of(ring.do(alice, lambda n, t: n.get(b"group", t))) == [b"a", b"b"]
    assert ring.do(bob, lambda n, t: n.delete(b"group", b"b", t)) == Deleted(b"group", b"b")
    assert values_of(ring.do(alice, lambda n, t: n.get(b"group", t))) == [b"a"]
    assert isinstance(ring.do(bob, lambda n, t: n.put(b"ip:10.0.0.1", b"x", 60, t)), AlreadyOwned)
    assert values_of(ring.do(bob, lambda n, t: n.get(b"nothing-here", t))) == []


def test_every_position_lives_on_its_closest_node_and_copies() -> None:
    ring = ring_of()
    alice, _ = two(ring)
    ring.do(alice, lambda n, t: n.put(b"k", b"v", 600, t))
    ring.run(5)
    for i in range(8):
        pos = key_address(b"k", i)
        ranked = sorted(ring.members, key=lambda a, p=pos: distance_key(p, a))
        holders = {a for a, m in ring.members.items() if pos in m.node.store}
        assert holders == set(ranked[:3]), f"position {i}"


def test_lost_messages_are_resent() -> None:
    """With 20 % of messages lost, a request and its answer both arrive in one attempt 64 % of the
    time; three attempts per position make operations succeed all the same."""
    ring = ring_of(loss=0.2)
    alice, bob = two(ring)
    for i in range(10):
        key = b"k%d" % i
        assert isinstance(ring.do(alice, lambda n, t, k=key: n.create(k, b"v", 600, t)), Created)
        assert values_of(ring.do(bob, lambda n, t, k=key: n.get(k, t))) == [b"v"]
    assert ring.lost > 0.15 * ring.sent


def test_no_answers_means_no_quorum_not_absence() -> None:
    ring = ring_of()
    alice, _ = two(ring)
    ring.drop = lambda src, dst, payload: src != alice.address  # every answer is lost
    result = ring.do(alice, lambda n, t: n.get(b"k", t))
    assert isinstance(result, Failed) and result.reason is Reason.NO_QUORUM
    result = ring.do(alice, lambda n, t: n.create(b"k", b"v", 60, t))
    assert isinstance(result, Failed) and result.reason is Reason.NO_QUORUM


def test_values_are_gone_after_their_ttl() -> None:
    ring = ring_of()
    alice, bob = two(ring)
    ring.do(alice, lambda n, t: n.put(b"k", b"v", 30, t, refresh=False))
    ring.do(alice, lambda n, t: n.create(b"c", b"v", 30, t, refresh=False))
    start = ring.now
    ring.run_until(start + 28)
    assert values_of(ring.do(bob, lambda n, t: n.get(b"k", t))) == [b"v"]
    ring.run_until(start + 31)
    assert values_of(ring.do(bob, lambda n, t: n.get(b"k", t))) == []
    assert values_of(ring.do(bob, lambda n, t: n.get(b"c", t))) == []
    ring.run(10)  # sweeps
    assert sum(m.node.store.count for m in ring.members.values()) == 0
    assert isinstance(ring.do(bob, lambda n, t: n.create(b"c", b"bob", 30, t)), Created)


def test_owner_refresh_keeps_a_record_alive_until_the_owner_dies() -> None:
    ring = ring_of()
    alice, bob = two(ring)
    ring.do(alice, lambda n, t: n.create(b"k", b"v", 20, t))
    ring.do(alice, lambda n, t: n.put(b"g", b"v", 20, t))
    ring.run(100)
    got = ring.do(bob, lambda n, t: n.get(b"k", t))
    assert values_of(got) == [b"v"]
    assert isinstance(got, Values) and got.values[0].ttl > 5
    assert values_of(ring.do(bob, lambda n, t: n.get(b"g", t))) == [b"v"]
    assert sorted(o.key for o in alice.node.owned()) == [b"g", b"k"]
    ring.kill(alice.address)
    ring.run(25)
    assert values_of(ring.do(bob, lambda n, t: n.get(b"k", t))) == []
    assert isinstance(ring.do(bob, lambda n, t: n.create(b"k", b"bob", 20, t)), Created)


def test_delete_stops_the_refresh() -> None:
    ring = ring_of()
    alice, bob = two(ring)
    ring.do(alice, lambda n, t: n.put(b"g", b"v", 20, t))
    ring.do(alice, lambda n, t: n.delete(b"g", b"v", t))
    assert alice.node.owned() == []
    ring.run(60)
    assert values_of(ring.do(bob, lambda n, t: n.get(b"g", t))) == []


def test_a_lapsed_lease_taken_by_another_is_reported_as_lost() -> None:
    ring = ring_of()
    alice, bob = two(ring)
    ring.do(alice, lambda n, t: n.create(b"k", b"alice", 20, t))
    # Alice is cut off (every message from or to her lost) for longer than the TTL; Bob takes the key.
    ring.drop = lambda src, dst, payload: alice.address in (src, dst)
    ring.run(25)
    assert isinstance(ring.do(bob, lambda n, t: n.create(b"k", b"bob", 600, t)), Created)
    ring.drop = None
    ring.run(20)
    assert OwnershipLost(b"k", b"alice", bob.identity.public_key) in alice.events
    assert alice.node.owned() == []
    assert values_of(ring.do(alice, lambda n, t: n.get(b"k", t))) == [b"bob"]


def test_forged_deletes_and_puts_are_refused_and_counted() -> None:
    ring = ring_of()
    alice, mallory = two(ring)
    ring.do(alice, lambda n, t: n.create(b"k", b"v", 600, t))
    # Mallory signs a delete with her key but names Alice as owner, and sends it to every position.
    mine = sign_record(mallory.identity, Kind.DELETE, b"k", b"v", ttl=600, seq=10**9)
    forged = dataclasses.replace(mine, owner=alice.identity.public_key)
    for i in range(8):
        payload = encode(Write(1234 + i, i, forged))
        mallory.node.router.send(key_address(b"k", i), Service.DHT, payload, ring.now, exact=False)
    ring.run(2)
    assert sum(m.node.stats.forged for m in ring.members.values()) >= 8
    # Her own, validly signed delete only speaks for her own value: Alice's stays.
    assert ring.do(mallory, lambda n, t: n.delete(b"k", b"v", t)) == Deleted(b"k", b"v")
    got = ring.do(mallory, lambda n, t: n.get(b"k", t))
    assert isinstance(got, Values) and [(v.value, v.owner) for v in got.values] == [
        (b"v", alice.identity.public_key)
    ]


def test_a_restarted_owner_continues_its_sequence() -> None:
    """A node that restarts with its identity begins its sequence numbers again; replicas answer
    "stale" with what they hold and the owner numbers above it."""
    ring = ring_of()
    alice, bob = two(ring)
    for _ in range(5):
        ring.do(alice, lambda n, t: n.put(b"g", b"v", 600, t, refresh=False))
    from dht import DhtNode

    fresh = DhtNode(alice.node.router, alice.identity, ring.config, ring.rng)
    alice.node = fresh
    alice.results.clear()  # the new life numbers its operations from 1 again
    assert ring.do(alice, lambda n, t: n.delete(b"g", b"v", t)) == Deleted(b"g", b"v")
    assert values_of(ring.do(bob, lambda n, t: n.get(b"g", t))) == []
    assert ring.do(alice, lambda n, t: n.create(b"c", b"v", 600, t)) == Created(b"c", b"v", 600)


def test_a_full_store_refuses_with_a_clear_error() -> None:
    ring = Ring(DhtConfig(max_records=12), seed=3)
    ring.add(4)  # every node holds every position (3 holders of 4 nodes)
    ring.run(3)
    alice = ring.members[sorted(ring.members)[0]]
    results = [ring.do(alice, lambda n, t, i=i: n.put(b"k%d" % i, b"v", 600, t)) for i in range(6)]
    assert isinstance(results[0], Stored)
    assert any(isinstance(r, Failed) and r.reason is Reason.STORE_FULL for r in results)
    assert all(m.node.store.count <= 12 for m in ring.members.values())
    assert sum(m.node.stats.refused_full for m in ring.members.values()) > 0


def test_values_per_key_cap() -> None:
    ring = Ring(DhtConfig(max_values_per_key=2), seed=4)
    ring.add(20)
    ring.run(3)
    alice = ring.members[sorted(ring.members)[0]]
    for v in (b"a", b"b"):
        assert isinstance(ring.do(alice, lambda n, t, v=v: n.put(b"k", v, 600, t)), Stored)
    result = ring.do(alice, lambda n, t: n.put(b"k", b"c", 600, t))
    assert isinstance(result, Failed) and result.reason is Reason.KEY_FULL


def test_large_values_are_split_over_several_replies() -> None:
    ring = ring_of(20)
    alice, bob = two(ring)
    values = [bytes([i]) * 1024 for i in range(12)]
    for v in values:
        ring.do(alice, lambda n, t, v=v: n.put(b"k", v, 600, t))
    assert values_of(ring.do(bob, lambda n, t: n.get(b"k", t))) == values


def test_pending_operations_are_bounded() -> None:
    ring = Ring(DhtConfig(max_pending_ops=2), seed=5)
    ring.add(10)
    alice = ring.members[sorted(ring.members)[0]]
    ids = [ring.start(alice, lambda n, t, i=i: n.get(b"k%d" % i, t)) for i in range(3)]
    result = ring.wait(alice, ids[2], timeout=0.0)
    assert isinstance(result, Failed) and result.reason is Reason.BUSY
    assert all(isinstance(ring.wait(alice, i), Values) for i in ids[:2])


def test_a_flooding_peer_is_rate_limited() -> None:
    ring = Ring(DhtConfig(peer_rate_per_s=10, peer_burst=20), seed=6)
    ring.add(30)
    ring.run(3)
    target = key_address(b"k", 0)
    holder = ring.members[ring.closest(target)]
    flooder = next(
        m
        for a, m in sorted(ring.members.items())
        if a not in holder.node.replicator.members and m is not holder
    )
    for i in range(100):
        payload = encode(
            Write(i + 1, 0, sign_record(flooder.identity, Kind.PUT, b"k", b"%d" % i, ttl=60, seq=i + 1))
        )
        flooder.node.router.send(target, Service.DHT, payload, ring.now, exact=False)
    ring.run(1)
    assert holder.node.stats.rate_limited >= 70
    assert holder.node.stats.writes_accepted <= 30
