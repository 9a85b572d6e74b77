"""A joiner's sync: its new neighbours push it the positions it should hold once, when it asks."""

from __future__ import annotations

from collections import Counter

import pytest

from dht import DhtConfig
from dht.codec import DecodeError, Store, Sync, decode
from overlay import Address, distance_key, key_address
from tests.dht.ring import Ring

KEYS = [b"rec-%d" % i for i in range(60)]

CONFIG = DhtConfig(resync_interval_s=3600.0)
"""No periodic resync during the tests: every push they see is one a change of view caused."""


def _ring(seed: int) -> Ring:
    ring = Ring(CONFIG, seed=seed)
    ring.settled_with_records(40, KEYS)
    return ring


def _should_hold(ring: Ring, address: Address) -> list[int]:
    """The positions of which ``address`` is among the three closest live nodes."""
    positions = [key_address(k, i) for k in KEYS for i in range(8)]
    return [p for p in positions if address in sorted(ring.members, key=lambda a: distance_key(p, a))[:3]]


@pytest.mark.parametrize("lose_syncs", [False, True])
def test_a_joiner_gets_every_position_it_should_hold(lose_syncs: bool) -> None:
    """Joiners that become closest to a key's position receive every position they are now a holder
    of and are ready within ``sync_timeout_s`` — also when their sync requests are lost, in which case
    their neighbours push on their own once the wait for the request ends."""
    ring = _ring(seed=21)

    def drop(src: Address, dst: Address, payload: bytes) -> bool:
        try:
            return isinstance(decode(payload, CONFIG), Sync)
        except DecodeError:
            return False

    if lose_syncs:
        ring.drop = drop
    for n, key in enumerate(KEYS[:5]):
        joiner = ring.add_near(key_address(key, n))
        started = ring.now
        ring.run_until(started + CONFIG.sync_timeout_s + 1.0)
        assert joiner.node.replicator.ready(ring.now)
        wanted = _should_hold(ring, joiner.address)
        assert len(wanted) >= 3
        missing = [p for p in wanted if p not in joiner.node.store]
        assert missing == [], f"joiner {n} lacks {len(missing)} of {len(wanted)} positions"


def test_a_joiner_whose_first_sync_requests_are_lost_asks_again_and_is_ready_by_the_answers() -> None:
    """The first sync request of every joiner to each neighbour is lost. Asking again after
    ``sync_resend_s`` makes it ready by the answers within a second; without, it waited out
    ``sync_timeout_s`` and became ready by giving up, at the moment its neighbours' own pushes (held
    for the request until then) were only leaving: gets in between found its positions empty."""
    ring = _ring(seed=23)
    asked: set[tuple[Address, Address]] = set()

    def lose_first_request(src: Address, dst: Address, payload: bytes) -> bool:
        try:
            message = decode(payload, CONFIG)
        except DecodeError:
            return False
        if not isinstance(message, Sync) or (src, dst) in asked:
            return False
        asked.add((src, dst))
        return True

    ring.drop = lose_first_request
    for n, key in enumerate(KEYS[:5]):
        joiner = ring.add_near(key_address(key, n))
        started = ring.now
        ring.run_until(started + 1.0)
        assert joiner.node.replicator.ready(ring.now), "ready by its neighbours' answers, not the timeout"
        wanted = _should_hold(ring, joiner.address)
        missing = [p for p in wanted if p not in joiner.node.store]
        assert len(wanted) >= 3 and missing == [], f"joiner {n} lacks {len(missing)} of {len(wanted)}"
        assert joiner.node.stats.sync_resends > 0
        ring.run(CONFIG.sync_timeout_s)


def test_pushes_to_a_joiner_are_not_duplicated_when_it_asks() -> None:
    """Each neighbour sends each position to a joiner once: in its answer to the joiner's sync request,
    not also in a push on sight of the new neighbour (which sent most positions twice)."""
    ring = _ring(seed=22)
    received: Counter[tuple[Address, Address, int]] = Counter()

    def spy(src: Address, dst: Address, payload: bytes) -> bool:
        try:
            message = decode(payload, CONFIG)
        except DecodeError:
            return False
        if isinstance(message, Store) and message.batch_id:
            for pr in message.positions:
                received[(src, dst, key_address(pr.key, pr.index))] += 1
        return False

    ring.drop = spy
    joiners = [ring.add_near(key_address(key, 3)) for key in KEYS[:4]]
    ring.run(CONFIG.sync_timeout_s + 1.0)
    to_joiners = {k: c for k, c in received.items() if k[1] in {j.address for j in joiners}}
    assert len(to_joiners) >= 12, "the joiners were sent their positions"
    twice = {k: c for k, c in to_joiners.items() if c > 1}
    assert twice == {}, f"{len(twice)} of {len(to_joiners)} (sender, joiner, position) sent more than once"
    for j in joiners:
        assert all(p in j.node.store for p in _should_hold(ring, j.address))
