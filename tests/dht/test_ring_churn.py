"""DhtNodes on a scripted ring under races, deaths, joins and churn."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from dht import (
    AlreadyOwned,
    Created,
    DhtConfig,
    Failed,
    Kind,
    OpId,
    OpResult,
    Reason,
    Record,
    Values,
    sign_record,
)
from dht.codec import DecodeError, Write, decode
from dht.store import precedes
from overlay import Address, distance_key, key_address
from tests.dht.ring import Member, Ring


def values_of(result: OpResult) -> list[bytes]:
    assert isinstance(result, Values), result
    return [v.value for v in result.values]


def holders(ring: Ring, pos: int) -> set[Address]:
    return {a for a, m in ring.members.items() if pos in m.node.store}


def ranked(ring: Ring, pos: int) -> list[Address]:
    return sorted(ring.members, key=lambda a: distance_key(pos, a))


def race(
    ring: Ring,
    key: bytes,
    racers: list[Member],
    *,
    during: Callable[[], None] | None = None,
    wait: float = 20.0,
) -> dict[Address, OpResult]:
    """Start ``create(key)`` on every racer within 50 ms, run ``during`` 0.1 s in, and wait until all
    surviving racers have their answer."""
    ops: dict[Address, OpId] = {}
    for m in racers:

        def go(m: Member = m) -> None:
            if m.address in ring.members:
                ops[m.address] = ring.start(
                    m, lambda n, t: n.create(key, m.address.to_bytes(20, "big"), 600, t)
                )

        ring.at(ring.now + ring.rng.uniform(0, 0.05), go)
    if during is not None:
        ring.at(ring.now + 0.1, during)
    ring.run(wait)
    return {a: m.results[ops[a]] for a, m in ring.members.items() if a in ops and ops[a] in m.results}


# Known gap, not hidden: in about 1 seed in 20 (seed 10 before dht3's replication change, seed 3
# after it: the change moves the random draws) a position's only holder accepts the winner's commit and
# dies 0.1 s later, before its push to the copies lands (10 % loss); 4 of 8 positions then hold the
# value and the get right after the race finds no majority. Safety holds (no second creator can
# reach 5 positions); the value is readable again when its owner republishes. Open in issue 3.
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_racing_creates_never_have_two_winners(seed: int) -> None:
    """10 racers per key, 10 % of messages lost, and mid-race one holder of a position dies (in odd
    trials a racer dies too). Never two winners; the winner's value is what everyone reads, and no
    loser's value is ever readable."""
    ring = Ring(DhtConfig(), seed=seed, loss=0.1)
    ring.add(50)
    ring.run(3)
    won = 0
    for trial in range(12):
        key = b"ip:10.0.0.%d" % trial
        racers = [ring.members[a] for a in ring.rng.sample(sorted(ring.members), 10)]
        racer_addresses = {m.address for m in racers}
        pos = key_address(key, ring.rng.randrange(8))
        holder = ring.closest(pos, [a for a in ring.members if a not in racer_addresses])

        def deaths(holder: Address = holder, racer: Address = racers[0].address, trial: int = trial) -> None:
            ring.kill(holder)
            if trial % 2:
                ring.kill(racer)

        results = race(ring, key, racers, during=deaths)
        winners = [a for a, r in results.items() if isinstance(r, Created)]
        assert len(winners) <= 1, f"trial {trial}: {len(winners)} winners"
        assert all(isinstance(r, Created | AlreadyOwned | Failed) for r in results.values())
        reader = next(m for a, m in ring.members.items() if a not in racer_addresses)
        ring.loss, loss = 0.0, ring.loss
        got = values_of(ring.do(reader, lambda n, t, k=key: n.get(k, t)))
        ring.loss = loss
        if winners:
            assert got == [winners[0].to_bytes(20, "big")]
        elif trial % 2:  # the racer that died may have committed before it could hear so
            assert got in ([], [racers[0].address.to_bytes(20, "big")])
        else:
            assert got == []
        won += len(winners)
        ring.add(2 - (trial % 2 == 0))
        ring.run(3)
    assert won >= 6, "positions agree on a racer, so most races have a winner"


def test_racing_creates_while_nodes_join_at_the_key_positions() -> None:
    """Joiners that become the closest node of four of the eight positions in the middle of a race
    (the positions' records must reach them before they accept a competing claim)."""
    ring = Ring(DhtConfig(), seed=5)
    ring.add(60)
    ring.run(3)
    for trial in range(12):
        key = b"name:%d" % trial
        racers = [ring.members[a] for a in ring.rng.sample(sorted(ring.members), 12)]

        def joins(key: bytes = key) -> None:
            for i in ring.rng.sample(range(8), 4):
                ring.at(ring.now + ring.rng.uniform(0, 0.2), lambda i=i: ring.add_near(key_address(key, i)))

        results = race(ring, key, racers, during=joins)
        assert sum(isinstance(r, Created) for r in results.values()) <= 1


def _split_race(ring: Ring, key: bytes, *, lose_deletes: bool) -> tuple[Member, Member, Member]:
    """Two racers of which each reaches only half of the key's positions: each reserves four of
    eight, neither can win, both roll back. Returns them and a third node whose reservation every
    position ranks below theirs (so it cannot simply displace them)."""
    a, b, *others = (ring.members[x] for x in sorted(ring.members))

    def rec(m: Member) -> Record:
        return sign_record(m.identity, Kind.RESERVE, key, b"", ttl=15, seq=1)

    late = next(m for m in others if precedes(rec(a), rec(m)) and precedes(rec(b), rec(m)))

    def drop(src: Address, dst: Address, payload: bytes) -> bool:
        try:
            m = decode(payload, ring.config)
        except DecodeError:
            return False
        if not isinstance(m, Write) or m.record.key != key:
            return False
        if lose_deletes and m.record.kind is Kind.DELETE:
            return True
        return (src == a.address and m.index >= 4) or (src == b.address and m.index < 4)

    ring.drop = drop
    results = race(ring, key, [a, b], wait=ring.config.op_timeout_s + 0.5)
    assert [r for r in results.values() if not isinstance(r, Failed)] == []
    assert len(results) == 2
    return a, b, late


def test_losers_roll_back_so_the_key_is_free_at_once() -> None:
    ring = Ring(DhtConfig(), seed=6)
    ring.add(50)
    ring.run(3)
    started = ring.now
    _, _, late = _split_race(ring, b"contended", lose_deletes=False)
    ring.drop = None
    result = ring.do(late, lambda n, t: n.create(b"contended", b"late", 600, t))
    assert ring.now - started < ring.config.reserve_lease_s  # the reservations would still be live
    assert isinstance(result, Created)


def test_lost_roll_backs_block_the_key_only_for_the_reservation_lease() -> None:
    ring = Ring(DhtConfig(), seed=7)
    ring.add(50)
    ring.run(3)
    started = ring.now
    _, _, late = _split_race(ring, b"contended", lose_deletes=True)
    result = ring.do(late, lambda n, t: n.create(b"contended", b"late", 600, t))
    assert isinstance(result, Failed) and result.reason is Reason.CONTENDED
    ring.run_until(started + ring.config.reserve_lease_s + 1)
    assert isinstance(ring.do(late, lambda n, t: n.create(b"contended", b"late", 600, t)), Created)


def test_get_answers_with_three_of_eight_positions_dead() -> None:
    """Every holder (the closest node and both copies) of three positions dies at once: before the
    ring notices, messages to them vanish; after, new nodes are closest and know nothing. A get
    answers from the other five positions either way, and read repair refills the three."""
    ring = Ring(DhtConfig(), seed=8, detect_s=30.0)
    ring.add(120)
    ring.run(3)
    owner = ring.members[sorted(ring.members)[0]]
    ring.do(owner, lambda n, t: n.create(b"k", b"v", 3600, t))
    ring.run(5)
    positions = [key_address(b"k", i) for i in range(8)]
    # Three positions whose holders hold none of the other five (and are not the owner).
    for dead in itertools.combinations(positions, 3):
        doomed = set().union(*(set(ranked(ring, p)[:3]) for p in dead))
        alive = [p for p in positions if p not in dead]
        if owner.address not in doomed and not any(holders(ring, p) & doomed for p in alive):
            break
    else:
        raise AssertionError("no three positions with separate holders")
    positions = [*dead, *alive]
    reader = next(m for a, m in ring.members.items() if a not in doomed and a != owner.address)
    for a in doomed:
        ring.kill(a)
    assert values_of(ring.do(reader, lambda n, t: n.get(b"k", t))) == [b"v"]
    ring.run(31)  # the ring notices the deaths
    assert all(not holders(ring, p) for p in positions[:3])
    assert values_of(ring.do(reader, lambda n, t: n.get(b"k", t))) == [b"v"]
    ring.run(5)
    for p in positions:
        assert set(ranked(ring, p)[:3]) <= holders(ring, p), "read repair and copies restored it"


def test_the_death_of_a_closest_node_loses_nothing() -> None:
    """Copies on the neighbours: when the closest node of every position dies without a word, the
    next closest already holds the records, before any repair."""
    ring = Ring(DhtConfig(), seed=9, detect_s=2.0)
    ring.add(60)
    ring.run(3)
    owner = ring.members[sorted(ring.members)[0]]
    ring.do(owner, lambda n, t: n.put(b"k", b"v", 3600, t, refresh=False))
    ring.run(3)
    primaries = {ring.closest(key_address(b"k", i)) for i in range(8)} - {owner.address}
    for a in primaries:
        ring.kill(a)
    ring.run(3)
    for i in range(8):
        pos = key_address(b"k", i)
        assert ring.closest(pos) in holders(ring, pos)
    reader = next(m for a, m in ring.members.items() if a != owner.address)
    op = ring.start(reader, lambda n, t: n.get(b"k", t))
    assert values_of(ring.wait(reader, op)) == [b"v"]
    assert reader.node.stats.repairs_sent == 0


def test_joiners_take_over_their_key_range_with_no_record_lost() -> None:
    ring = Ring(DhtConfig(), seed=10)
    ring.add(40)
    ring.run(3)
    keys = [b"rec-%d" % i for i in range(60)]
    for i, key in enumerate(keys):
        m = ring.members[sorted(ring.members)[i % 40]]
        ring.do(m, lambda n, t, k=key: n.put(k, k + b"!", 3600, t, refresh=False))
    before = set(ring.members)
    for i in range(20):
        if i % 4 == 0:
            ring.add_near(key_address(keys[i], i % 8))
        else:
            ring.add(1)
        ring.run(2)
    ring.run(10)
    joiners = set(ring.members) - before
    took_over = 0
    for key in keys:
        for i in range(8):
            pos = key_address(key, i)
            desired = set(ranked(ring, pos)[:3])
            assert desired <= holders(ring, pos), f"{key!r} position {i} missing on a holder"
            took_over += bool(desired & joiners)
    assert took_over > 50
    handed = sum(m.node.stats.positions_handed_over for m in ring.members.values())
    assert handed > 0
    # Old holders let go of what they certainly need not hold: every holder is among the three
    # closest nodes it knows of, so extra copies stay near the position and few.
    for key in keys:
        for i in range(8):
            pos = key_address(key, i)
            for a in holders(ring, pos):
                assert a in ring.members[a].node.replicator.view.desired(pos)
    extra = sum(len(holders(ring, key_address(k, i))) - 3 for k in keys for i in range(8))
    assert extra <= len(keys) * 8
    reader = ring.members[sorted(joiners)[0]]
    for key in keys:
        assert values_of(ring.do(reader, lambda n, t, k=key: n.get(k, t))) == [key + b"!"]


def test_gets_succeed_under_churn() -> None:
    """60 nodes of which one dies and one joins every 2 s on average (a mean session of two
    minutes), deaths noticed after 3 s; owners refresh their 120 s records. Every get during five
    minutes returns the right value."""
    ring = Ring(DhtConfig(), seed=11, detect_s=3.0, loss=0.01)
    ring.add(60)
    ring.run(3)
    owners: dict[bytes, Address] = {}
    for i in range(30):
        m = ring.members[sorted(ring.members)[i]]
        key = b"name-%d" % i
        assert isinstance(ring.do(m, lambda n, t, k=key: n.create(k, k, 120, t)), Created)
        owners[key] = m.address

    end = ring.now + 300

    def churn() -> None:
        ring.kill(ring.rng.choice(sorted(set(ring.members) - set(owners.values()))))
        ring.add(1)
        if ring.now < end:
            ring.at(ring.now + ring.rng.expovariate(0.5), churn)

    gets: list[tuple[Member, OpId, bytes]] = []

    def get() -> None:
        key = b"name-%d" % ring.rng.randrange(30)
        m = ring.random_member()
        gets.append((m, ring.start(m, lambda n, t: n.get(key, t)), key))
        if ring.now < end:
            ring.at(ring.now + 0.5, get)

    ring.at(ring.now + 1, churn)
    ring.at(ring.now + 1, get)
    ring.run_until(end + 10)
    answered = [(m.results[op], key) for m, op, key in gets if op in m.results]
    assert len(answered) >= 590
    ok = sum(isinstance(r, Values) and values_of(r) == [key] for r, key in answered)
    assert ok / len(answered) >= 0.99

    # Quiet now: the bookkeeping of pushes and questions drains, it does not pile up. Waited for with a
    # deadline, not a fixed 10 s: the last deaths may leave a view that skips a few nodes for a few
    # seconds more (seen at seed 11 once this branch changed the random draws), and its holders keep
    # handing over meanwhile.
    def drained() -> bool:
        for m in ring.members.values():
            rep = m.node.replicator
            if len(rep._batches) + len(rep._pending) + len(rep._roles) >= 10 or len(m.node._ops) > 1:
                return False  # more than a little in flight, or more than a refresh
        return True

    deadline = ring.now + 60
    while not drained() and ring.now < deadline:
        ring.run(1)
    assert drained()
