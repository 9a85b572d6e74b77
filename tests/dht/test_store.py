"""The replica store: acceptance rules, TTL by ``now``, signatures, limits and caps."""

from __future__ import annotations

import dataclasses

import pytest

from dht import DhtConfig, Kind
from dht.codec import Status
from dht.store import Store, precedes
from overlay import key_address
from tests.dht.helpers import identity, rec

ALICE, BOB, MALLORY = identity(1), identity(2), identity(3)
POS = key_address(b"k", 0)


def make(**limits: int) -> Store:
    return Store(DhtConfig(**limits))  # type: ignore[arg-type]


def values(store: Store, now: float) -> list[tuple[bytes, bytes, Kind]]:
    return sorted(
        (h.record.owner, h.record.value, h.record.kind) for h in store.read(POS, now, reservations=True)
    )


# -- signatures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Kind.RESERVE, Kind.CREATE, Kind.PUT, Kind.DELETE])
def test_forged_records_are_refused(kind: Kind) -> None:
    store = make()
    forged = dataclasses.replace(rec(MALLORY, kind), owner=ALICE.public_key)
    assert store.write(POS, 0, forged, 0.0).status is Status.FORGED
    assert store.count == 0


def test_forged_delete_leaves_the_value() -> None:
    store = make()
    assert store.write(POS, 0, rec(ALICE, Kind.PUT, seq=1), 0.0).status is Status.OK
    forged = dataclasses.replace(rec(MALLORY, Kind.DELETE, seq=9), owner=ALICE.public_key)
    assert store.write(POS, 0, forged, 1.0).status is Status.FORGED
    assert values(store, 2.0) == [(ALICE.public_key, b"v", Kind.PUT)]


def test_a_valid_delete_by_another_owner_does_not_touch_the_value() -> None:
    """Entries are per (owner, value): Mallory's own tombstone for b"v" is not Alice's."""
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.CREATE), 0.0)
    assert store.write(POS, 0, rec(MALLORY, Kind.DELETE, seq=99), 1.0).status is Status.OK
    assert (ALICE.public_key, b"v", Kind.CREATE) in values(store, 2.0)


# -- TTL ----------------------------------------------------------------------------------------


def test_records_expire_by_now() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.PUT, ttl=10), 100.0)
    assert len(store.read(POS, 109.9, reservations=False)) == 1
    assert store.read(POS, 110.0, reservations=False) == []
    assert store.count == 0


def test_remaining_from_another_replica_is_capped_by_the_signed_ttl() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.PUT, ttl=10), 0.0, remaining=1e6)
    assert store.read(POS, 0.0, reservations=False)[0].remaining == 10.0
    store.write(POS, 0, rec(BOB, Kind.PUT, ttl=10), 0.0, remaining=3.0)
    assert sorted(h.remaining for h in store.read(POS, 0.0, reservations=False)) == [3.0, 10.0]


def test_an_expired_transfer_is_not_kept() -> None:
    store = make()
    assert store.write(POS, 0, rec(ALICE, Kind.PUT), 0.0, remaining=0.0).status is Status.OK
    assert store.count == 0 and POS not in store


def test_retransmission_extends_expiry_but_never_beyond_the_ttl() -> None:
    store = make()
    r = rec(ALICE, Kind.PUT, ttl=10)
    store.write(POS, 0, r, 0.0)
    store.write(POS, 0, r, 5.0)
    assert store.read(POS, 5.0, reservations=False)[0].remaining == 10.0
    store.write(POS, 0, r, 6.0, remaining=1.0)  # a shorter copy never shortens it
    assert store.read(POS, 6.0, reservations=False)[0].remaining == 9.0


def test_sweep_removes_expired_entries_and_empty_positions() -> None:
    store = make()
    for i, who in enumerate((ALICE, BOB)):
        store.write(key_address(b"k", i), i, rec(who, Kind.PUT, ttl=5 + 10 * i), 0.0)
    assert store.sweep(6.0) == 1
    assert len(store) == 1 and store.count == 1


# -- claims: first writer wins ------------------------------------------------------------------


FIRST, SECOND = (ALICE, BOB) if precedes(rec(ALICE, Kind.RESERVE), rec(BOB, Kind.RESERVE)) else (BOB, ALICE)
"""The order in which positions rank the two owners' reservations of key b"k"."""


def test_first_claim_wins_and_names_its_owner() -> None:
    store = make()
    assert store.write(POS, 0, rec(FIRST, Kind.RESERVE), 0.0).status is Status.OK
    out = store.write(POS, 0, rec(SECOND, Kind.RESERVE), 0.0)
    assert (out.status, out.owner) == (Status.CONFLICT_RESERVED, FIRST.public_key)
    out = store.write(POS, 0, rec(SECOND, Kind.CREATE), 0.0)
    assert (out.status, out.owner) == (Status.CONFLICT_RESERVED, FIRST.public_key)
    assert store.write(POS, 0, rec(FIRST, Kind.CREATE, seq=2), 0.0).status is Status.OK
    out = store.write(POS, 0, rec(SECOND, Kind.CREATE, seq=5), 0.0)
    assert (out.status, out.owner) == (Status.CONFLICT_CREATED, FIRST.public_key)


def test_racing_reservations_converge_on_one_racer_but_never_displace_a_created_record() -> None:
    first, second = FIRST, SECOND
    for order in ((first, second), (second, first)):
        store = make()
        for who in order:
            store.write(POS, 0, rec(who, Kind.RESERVE), 0.0)
        assert [o for o, _, _ in values(store, 0.0)] == [first.public_key]
    store = make()
    store.write(POS, 0, rec(second, Kind.CREATE), 0.0)
    out = store.write(POS, 0, rec(first, Kind.RESERVE), 0.0)
    assert (out.status, out.owner) == (Status.CONFLICT_CREATED, second.public_key)


def test_a_lapsed_claim_frees_the_key() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.CREATE, ttl=15), 0.0)
    assert store.write(POS, 0, rec(BOB, Kind.RESERVE), 14.0).status is Status.CONFLICT_CREATED
    assert store.write(POS, 0, rec(BOB, Kind.RESERVE), 15.0).status is Status.OK


def test_the_same_owner_renews_and_a_reservation_never_downgrades_its_record() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.CREATE, ttl=100, seq=1), 0.0)
    assert store.write(POS, 0, rec(ALICE, Kind.RESERVE, ttl=15, seq=2), 50.0).status is Status.OK_HELD
    assert store.read(POS, 50.0, reservations=True)[0].record.kind is Kind.CREATE
    assert store.write(POS, 0, rec(ALICE, Kind.CREATE, ttl=100, seq=3), 60.0).status is Status.OK_HELD
    assert store.read(POS, 60.0, reservations=False)[0].remaining == 100.0


def test_older_or_conflicting_statements_of_the_same_owner_are_stale() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.CREATE, seq=5), 0.0)
    out = store.write(POS, 0, rec(ALICE, Kind.CREATE, seq=4), 0.0)
    assert (out.status, out.seq) == (Status.STALE, 5)
    assert store.write(POS, 0, rec(ALICE, Kind.CREATE, b"k", b"other", seq=5), 0.0).status is Status.STALE


def test_kinds_do_not_mix() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.PUT), 0.0)
    out = store.write(POS, 0, rec(BOB, Kind.RESERVE), 0.0)
    assert (out.status, out.owner) == (Status.CONFLICT_PUT, ALICE.public_key)
    assert store.write(POS, 0, rec(ALICE, Kind.CREATE, seq=2), 0.0).status is Status.CONFLICT_PUT
    other = key_address(b"c", 0)
    store.write(other, 0, rec(ALICE, Kind.CREATE, b"c"), 0.0)
    assert store.write(other, 0, rec(BOB, Kind.PUT, b"c"), 0.0).status is Status.CONFLICT_CREATED


# -- puts and deletes ---------------------------------------------------------------------------


def test_put_holds_several_values_and_renews_one() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.PUT, value=b"a", seq=1, ttl=10), 0.0)
    store.write(POS, 0, rec(BOB, Kind.PUT, value=b"b", seq=1, ttl=10), 0.0)
    store.write(POS, 0, rec(ALICE, Kind.PUT, value=b"a", seq=2, ttl=10), 8.0)
    assert [v for _, v, _ in values(store, 12.0)] == [b"a"]


def test_delete_then_no_resurrection_by_an_older_copy() -> None:
    store = make()
    old = rec(ALICE, Kind.PUT, seq=1)
    store.write(POS, 0, old, 0.0)
    assert store.write(POS, 0, rec(ALICE, Kind.DELETE, seq=2), 1.0).status is Status.OK
    assert store.read(POS, 1.0, reservations=False)[0].record.kind is Kind.DELETE
    out = store.write(POS, 0, old, 2.0, remaining=50.0)  # a stale hand-over or replay
    assert (out.status, out.seq) == (Status.STALE, 2)
    assert store.write(POS, 0, rec(ALICE, Kind.PUT, seq=3), 3.0).status is Status.OK
    assert values(store, 3.0) == [(ALICE.public_key, b"v", Kind.PUT)]
    assert store.count == 1


def test_delete_older_than_the_value_is_stale() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.PUT, seq=5), 0.0)
    assert store.write(POS, 0, rec(ALICE, Kind.DELETE, seq=5), 0.0).status is Status.STALE


def test_deleting_a_claim_frees_the_key_for_others() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.CREATE, seq=1), 0.0)
    store.write(POS, 0, rec(ALICE, Kind.DELETE, seq=2), 0.0)
    assert store.write(POS, 0, rec(BOB, Kind.RESERVE), 0.0).status is Status.OK


# -- limits -------------------------------------------------------------------------------------


def test_values_per_key_cap() -> None:
    store = make(max_values_per_key=3)
    for i in range(3):
        assert store.write(POS, 0, rec(ALICE, Kind.PUT, value=bytes([i])), 0.0).status is Status.OK
    assert store.write(POS, 0, rec(ALICE, Kind.PUT, value=b"x"), 0.0).status is Status.KEY_FULL
    assert store.write(POS, 0, rec(ALICE, Kind.PUT, value=bytes([1]), seq=2), 0.0).status is Status.OK


def test_a_full_store_refuses_with_a_clear_status_and_recovers_after_expiry() -> None:
    store = make(max_records=5)
    for i in range(5):
        store.write(key_address(bytes([i]), 0), 0, rec(ALICE, Kind.PUT, bytes([i]), ttl=10), 0.0)
    for kind in (Kind.RESERVE, Kind.PUT, Kind.DELETE):
        assert store.write(POS, 0, rec(BOB, kind), 1.0).status is Status.STORE_FULL
    assert store.count == 5
    # Renewing what is there still works, and a delete that replaces a value needs no new room.
    p0 = key_address(bytes([0]), 0)
    assert store.write(p0, 0, rec(ALICE, Kind.PUT, bytes([0]), ttl=10, seq=2), 1.0).status is Status.OK
    assert store.write(p0, 0, rec(ALICE, Kind.DELETE, bytes([0]), seq=3), 1.0).status is Status.OK
    store.sweep(11.0)
    assert store.write(POS, 0, rec(BOB, Kind.PUT), 11.0).status is Status.OK


@pytest.mark.parametrize(
    ("key", "value", "ttl", "index"),
    [
        (b"k" * 257, b"v", 60, 0),
        (b"k", b"v" * 1025, 60, 0),
        (b"k", b"v", 86_401, 0),
        (b"k", b"v", 60, 8),
    ],
)
def test_records_beyond_limits_are_invalid(key: bytes, value: bytes, ttl: int, index: int) -> None:
    store = make()
    r = rec(ALICE, Kind.PUT, key, value, ttl=ttl)
    assert store.write(key_address(key, 0), index, r, 0.0).status is Status.INVALID


def test_two_keys_at_one_position_refuse_the_newcomer() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.PUT, b"k"), 0.0)
    assert store.write(POS, 0, rec(ALICE, Kind.PUT, b"other"), 0.0).status is Status.INVALID


def test_digest_follows_statements_not_expiry() -> None:
    store = make()
    store.write(POS, 0, rec(ALICE, Kind.PUT, seq=1, ttl=100), 0.0)
    d1 = store.digest(POS, 0.0)
    assert store.digest(POS, 50.0) == d1
    store.write(POS, 0, rec(ALICE, Kind.PUT, seq=2, ttl=100), 50.0)
    assert store.digest(POS, 50.0) != d1
