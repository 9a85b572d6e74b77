"""Pure. Overlay addresses and ring arithmetic.

An overlay address is a 160-bit integer on a ring of size 2**160. A node's address is the BLAKE2b-160
digest of its Ed25519 public key, so an address is self-certifying: the link handshake proves possession
of the key, and nobody can claim an address that is not the hash of a key they hold. DHT keys are hashed
onto the same ring with a different personalisation, so a key can never be made to collide with a
chosen node address by construction of the key alone.

Addresses are plain ``int`` values (a ``NewType``): routing compares millions of distances per simulated
second and integer arithmetic is the fastest thing Python has.
"""

from __future__ import annotations

import hashlib
from typing import NewType

Address = NewType("Address", int)

ADDRESS_BITS = 160
ADDRESS_BYTES = ADDRESS_BITS // 8
RING = 1 << ADDRESS_BITS
HALF_RING = RING >> 1
_MASK = RING - 1


def address_from_public_key(public_key: bytes) -> Address:
    """The node address that belongs to an Ed25519 public key (32 raw bytes)."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    digest = hashlib.blake2b(public_key, digest_size=ADDRESS_BYTES, person=b"ipop-node").digest()
    return Address(int.from_bytes(digest, "big"))


def key_address(key: bytes, replica: int = 0) -> Address:
    """Where replica ``replica`` of a DHT key lives on the ring."""
    digest = hashlib.blake2b(
        replica.to_bytes(2, "big") + key, digest_size=ADDRESS_BYTES, person=b"ipop-key"
    ).digest()
    return Address(int.from_bytes(digest, "big"))


def address_to_bytes(address: int) -> bytes:
    return address.to_bytes(ADDRESS_BYTES, "big")


def address_from_bytes(data: bytes) -> Address:
    """Decode 20 bytes; callers on an untrusted path check the length first (it raises otherwise)."""
    if len(data) != ADDRESS_BYTES:
        raise ValueError("an address has 20 bytes")
    return Address(int.from_bytes(data, "big"))


def clockwise(a: int, b: int) -> int:
    """Distance travelled clockwise (increasing addresses) from ``a`` to ``b``."""
    return (b - a) & _MASK


def ring_distance(a: int, b: int) -> int:
    """Shortest distance between ``a`` and ``b`` going either way round the ring."""
    d = (b - a) & _MASK
    return d if d <= HALF_RING else RING - d


def closer(target: int, a: int, b: int) -> bool:
    """True when ``a`` is strictly closer to ``target`` than ``b``, ties broken towards the smaller
    clockwise offset so that every node agrees on a single closest node."""
    da, db = ring_distance(target, a), ring_distance(target, b)
    if da != db:
        return da < db
    return clockwise(target, a) < clockwise(target, b)


def distance_key(target: int, a: int) -> tuple[int, int]:
    """Sort key that orders addresses by closeness to ``target`` exactly as :func:`closer` does."""
    return ring_distance(target, a), clockwise(target, a)


def short(address: int) -> str:
    """The first 8 hex digits, for logs and tables."""
    return f"{address >> (ADDRESS_BITS - 32):08x}"


def to_hex(address: int) -> str:
    return f"{address:040x}"


def from_hex(text: str) -> Address:
    value = int(text, 16)
    if not 0 <= value < RING or len(text) != 2 * ADDRESS_BYTES:
        raise ValueError(f"not a 160-bit address in 40 hex digits: {text!r}")
    return Address(value)
