"""The periodic resync by digest: neighbours that hold a position in our version get its digest only;
a copy lost without a trace is pushed again; lost digest answers fall back to full pushes."""

from __future__ import annotations

from collections import Counter

import pytest

from dht import DhtConfig
from dht.codec import MAX_ID, DecodeError, Digest, DigestReply, Store, decode, encode
from dht.digests import DigestExchange
from overlay import Address, distance_key
from tests.dht.ring import Ring

CONFIG = DhtConfig(resync_interval_s=20.0)
"""Resyncs every 15-20 s, so that a test sees several in a minute of simulated time."""

KEYS = [b"rec-%d" % i for i in range(40)]


def _ring(seed: int) -> Ring:
    ring = Ring(CONFIG, seed=seed)
    ring.settled_with_records(30, KEYS)
    return ring


def _holders(ring: Ring, pos: int) -> list[Address]:
    return sorted(ring.members, key=lambda a: distance_key(pos, a))[:3]


def _count(ring: Ring, lose_digest_replies: bool = False) -> Counter[str]:
    """Spy on the ring's messages: pushed positions (exact stores), digests, digest answers."""
    seen: Counter[str] = Counter()

    def spy(src: Address, dst: Address, payload: bytes) -> bool:
        try:
            message = decode(payload, CONFIG)
        except DecodeError:
            return False
        if isinstance(message, Store) and message.batch_id:
            seen["pushed"] += len(message.positions)
        elif isinstance(message, Digest):
            seen["digests"] += len(message.positions)
        elif isinstance(message, DigestReply):
            seen["answers"] += 1
            return lose_digest_replies
        return False

    ring.drop = spy
    return seen


def test_a_quiet_ring_resyncs_by_digest_alone() -> None:
    """Nothing changed: a minute of resyncs (three or four per node) sends every position's digest
    and not one record."""
    ring = _ring(seed=31)
    seen = _count(ring)
    ring.run(60)
    assert seen["digests"] >= 2 * len(KEYS) * 8, "each position's copies were checked"
    assert seen["answers"] > 0
    assert seen["pushed"] == 0


@pytest.mark.parametrize("lose_digest_replies", [False, True])
def test_a_copy_lost_without_a_trace_is_pushed_again_at_the_next_resync(lose_digest_replies: bool) -> None:
    """A copy's records vanish behind everyone's back (its primary still believes it holds them).
    The next resync restores every one of them, pushing only what was lost — or, when the digest
    answers are lost, everything the resync covers, after the wait for the answer."""
    ring = _ring(seed=32)
    victim = ring.members[sorted(ring.members)[7]]
    lost = [p for p in list(victim.node.store.positions()) if victim.address in _holders(ring, p)[1:]]
    assert len(lost) >= 3
    for pos in lost:
        victim.node.store.drop(pos)
    seen = _count(ring, lose_digest_replies)
    ring.run(CONFIG.resync_interval_s + 2 * CONFIG.push_timeout_s)
    assert [p for p in lost if p not in victim.node.store] == []
    if lose_digest_replies:
        assert seen["pushed"] >= len(KEYS) * 8, "unanswered digests fall back to full pushes"
    else:
        assert len(lost) <= seen["pushed"] <= 2 * len(lost), "only the lost positions travel in full"


def test_a_full_digest_message_fits_the_message_limit() -> None:
    ids = iter(range(1, 1000))
    exchange = DigestExchange(CONFIG, lambda: next(ids))
    n = exchange.per_message
    positions = [(Address((1 << 160) - 1 - i), MAX_ID) for i in range(n + 1)]
    messages = exchange.ask(Address(5), positions, 0.0)
    assert [len(m.positions) for m in messages] == [n, 1]
    assert len(encode(messages[0])) <= CONFIG.max_message_bytes
    assert decode(encode(messages[0]), CONFIG) == messages[0]
    assert exchange.in_flight(Address(5), positions[0][0])
    assert exchange.expired(CONFIG.push_timeout_s) == [
        (Address(5), [p for p, _ in positions[:n]]),
        (Address(5), [positions[n][0]]),
    ]
    assert not exchange.in_flight(Address(5), positions[0][0])
