"""Quorum logic: write verdicts, failure explanations, get confirmation, early completion, repairs;
and the per-peer rate limiter."""

from __future__ import annotations

import pytest

from dht import AlreadyOwned, Failed, Kind, Reason
from dht.codec import Held, Status
from dht.quorum import GetTally, write_decision, write_failure
from dht.ratelimit import RateLimiter
from tests.dht.helpers import identity, rec

ALICE, BOB = identity(1), identity(2)
R, M = 8, 5


@pytest.mark.parametrize(
    ("accepted", "open_", "verdict"),
    [(5, 0, True), (5, 3, True), (4, 1, None), (4, 0, False), (0, 5, None), (0, 4, False), (3, 2, None)],
)
def test_write_decision(accepted: int, open_: int, verdict: bool | None) -> None:
    assert write_decision(accepted, open_, M) is verdict


def test_write_failure_names_the_other_owner_first() -> None:
    refusals = [(Status.CONFLICT_RESERVED, BOB.public_key), (Status.CONFLICT_CREATED, ALICE.public_key)]
    assert write_failure(b"k", refusals, 2, R) == AlreadyOwned(b"k", ALICE.public_key)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (Status.CONFLICT_RESERVED, Reason.CONTENDED),
        (Status.KEY_FULL, Reason.KEY_FULL),
        (Status.STORE_FULL, Reason.STORE_FULL),
        (Status.FORGED, Reason.REFUSED),
    ],
)
def test_write_failure_reasons(status: Status, reason: Reason) -> None:
    result = write_failure(b"k", [(status, b"")] * 4, 4, R)
    assert isinstance(result, Failed) and result.reason is reason


def test_write_failure_without_refusals_is_no_quorum() -> None:
    result = write_failure(b"k", [], 3, R)
    assert isinstance(result, Failed) and result.reason is Reason.NO_QUORUM and "3 of 8" in result.detail


def held(
    who: object = ALICE, kind: Kind = Kind.PUT, seq: int = 1, remaining: float = 50.0, value: bytes = b"v"
) -> Held:
    return Held(rec(who, kind, value=value, seq=seq), remaining)  # type: ignore[arg-type]


def test_a_get_completes_after_the_fifth_consistent_answer() -> None:
    t = GetTally(b"k", R, M)
    for i in range(4):
        t.answer(i, [held()])
        assert not t.complete(R - 1 - i)
    t.answer(4, [held()])
    assert t.complete(3)
    assert [v.value for v in t.values()] == [b"v"]


def test_an_empty_key_completes_after_four_answers() -> None:
    t = GetTally(b"k", R, M)
    for i in range(3):
        t.answer(i, [])
    assert not t.complete(5)
    t.answer(3, [])
    assert t.complete(4) and t.values() == ()


def test_a_minority_value_stays_undecided_while_it_could_reach_a_majority() -> None:
    t = GetTally(b"k", R, M)
    for i in range(4):
        t.answer(i, [held()] if i < 2 else [])
    assert not t.complete(4)  # 2 holders + 4 open could still be 5
    t.answer(4, [])
    t.answer(5, [])
    assert t.complete(2)  # 2 + 2 < 5: rejected
    assert t.values() == ()


def test_ttl_is_what_a_majority_still_grants() -> None:
    t = GetTally(b"k", R, M)
    for i, left in enumerate([90.0, 10.0, 80.0, 70.0, 60.0, 50.0]):
        t.answer(i, [held(remaining=left)])
    (value,) = t.values()
    assert value.ttl == 50.0  # five positions grant at least 50 s


def test_a_newer_tombstone_hides_the_value_and_repairs_old_copies() -> None:
    t = GetTally(b"k", R, M)
    for i in range(5):
        t.answer(i, [held(seq=1)])
    for i in range(5, 8):
        t.answer(i, [held(kind=Kind.DELETE, seq=2)])
    assert t.values() == ()
    repairs = t.repairs()
    assert [i for i, _ in repairs] == [0, 1, 2, 3, 4]
    assert all(h.record.kind is Kind.DELETE for _, h in repairs)


def test_repairs_bring_missing_and_older_copies_up_to_date() -> None:
    t = GetTally(b"k", R, M)
    for i in range(5):
        t.answer(i, [held(seq=3)])
    t.answer(5, [held(seq=2)])
    t.answer(6, [])
    repairs = t.repairs()
    assert [i for i, _ in repairs] == [5, 6]
    assert all(h.record.seq == 3 for _, h in repairs)


def test_reservations_and_other_keys_are_not_values() -> None:
    t = GetTally(b"k", R, M)
    for i in range(8):
        t.answer(i, [held(kind=Kind.RESERVE), Held(rec(ALICE, Kind.PUT, key=b"other"), 5.0)])
    assert t.values() == () and t.repairs() == []


def test_two_values_of_two_owners() -> None:
    t = GetTally(b"k", R, M)
    for i in range(8):
        t.answer(i, [held(ALICE, value=b"a"), held(BOB, value=b"b")])
    assert [(v.value, v.owner) for v in t.values()] == [(b"a", ALICE.public_key), (b"b", BOB.public_key)]


def test_too_few_answers_cannot_say_absent() -> None:
    t = GetTally(b"k", R, M)
    for i in range(3):
        t.answer(i, [])
    assert not t.enough_answers()
    t.answer(3, [])
    assert t.enough_answers()


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=10.0, burst=5.0, max_peers=2)
    assert [limiter.allow(1, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow(1, 0.1) and not limiter.allow(1, 0.1)
    assert limiter.allow(2, 0.1)
    limiter.allow(3, 0.1)
    assert len(limiter) == 2  # the least recently seen peer (1) was forgotten
    assert [limiter.allow(1, 0.1) for _ in range(5)] == [True] * 5
