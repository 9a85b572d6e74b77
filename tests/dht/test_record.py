"""Signed records: what the signature covers, and that nothing else verifies."""

from __future__ import annotations

import dataclasses

import pytest

from dht import Kind, record_valid
from tests.dht.helpers import identity, rec


def test_a_signed_record_verifies() -> None:
    assert record_valid(rec(identity(1), Kind.PUT))


@pytest.mark.parametrize(
    "change",
    [
        {"kind": Kind.CREATE},
        {"key": b"K"},
        {"value": b"w"},
        {"ttl": 61},
        {"seq": 2},
        {"owner": identity(2).public_key},
        {"signature": bytes(64)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_field_is_covered_by_the_signature(change: dict[str, object]) -> None:
    good = rec(identity(1), Kind.PUT)
    assert not record_valid(dataclasses.replace(good, **change))  # type: ignore[arg-type]


def test_key_and_value_boundary_cannot_be_shifted() -> None:
    """(key=b"ab", value=b"c") and (key=b"a", value=b"bc") must sign different messages."""
    who = identity(1)
    a = rec(who, Kind.PUT, b"ab", b"c")
    assert not record_valid(dataclasses.replace(a, key=b"a", value=b"bc"))


def test_malformed_keys_and_signatures_do_not_raise() -> None:
    good = rec(identity(1), Kind.PUT)
    assert not record_valid(dataclasses.replace(good, owner=b"short"))
    assert not record_valid(dataclasses.replace(good, signature=b"\x00" * 10))


def test_signing_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        rec(identity(1), Kind.PUT, seq=-1)
    with pytest.raises(ValueError):
        rec(identity(1), Kind.PUT, ttl=2**32)
