"""Small builders shared by the DHT tests."""

from __future__ import annotations

from random import Random

from dht import Kind, Record, sign_record
from overlay import Identity


def identity(seed: int) -> Identity:
    return Identity.generate(Random(seed))


def rec(
    who: Identity, kind: Kind, key: bytes = b"k", value: bytes = b"v", *, ttl: int = 60, seq: int = 1
) -> Record:
    return sign_record(who, kind, key, value, ttl=ttl, seq=seq)
