"""Pure. Signed DHT records.

A record is one owner's statement about one value under one key: "reserve it" (phase one of
``create``), "it is mine alone" (``create``), "it is one of the values" (``put``), or "it is gone"
(``delete``, a tombstone). The owner signs it with its Ed25519 key; every replica verifies the signature
before it stores the record, and only the key that signed a value can sign its tombstone, which is what
makes delete owner-only without any access list.

The signature covers the kind, key, value, the lifetime the owner asked for (``ttl``) and a sequence
number (``seq``), but not how much of the lifetime is left: nodes' clocks are not synchronised, so the
remaining lifetime travels beside the record and each node turns it into a local expiry by its own
``now``. A replica never lets a record live longer than its signed ``ttl`` from the moment it arrives.
``seq`` orders one owner's statements about one value: a newer one replaces an older one, an older one
is refused as stale, so a replayed old record cannot undo a delete or a renewal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from overlay import Identity, verify_signature

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_SEQ = (1 << 63) - 1
"""Sequence numbers are signed 64-bit on the wire (msgpack int64), far beyond any owner's lifetime."""

_DOMAIN = b"ipop-dht-record-1\x00"
"""Prefix of every signed message, so that a record signature can never be mistaken for a signature
the same key made for another purpose (link handshakes sign with the same identity)."""


class Kind(IntEnum):
    """What a record says. The numbers are on the wire and in the signature."""

    RESERVE = 1
    CREATE = 2
    PUT = 3
    DELETE = 4

    @property
    def is_claim(self) -> bool:
        """A reservation or a created record: a claim to be the key's only owner."""
        return self in (Kind.RESERVE, Kind.CREATE)

    @property
    def is_value(self) -> bool:
        """A record a ``get`` returns."""
        return self in (Kind.CREATE, Kind.PUT)


@dataclass(frozen=True, slots=True)
class Record:
    """One signed owner statement. Construct with :func:`sign_record`; records off the wire are
    checked with :func:`record_valid` before anything trusts them."""

    kind: Kind
    key: bytes
    value: bytes
    owner: bytes
    """The owner's Ed25519 public key (32 bytes)."""
    ttl: int
    """Lifetime in seconds the owner asked for; also how long a tombstone is kept."""
    seq: int
    signature: bytes

    @property
    def ident(self) -> tuple[bytes, bytes]:
        """Which value this record speaks about: one owner's one value."""
        return self.owner, self.value

    def wire_size(self) -> int:
        """An upper bound of its encoded size, for packing messages without encoding twice."""
        return len(self.key) + len(self.value) + PUBLIC_KEY_BYTES + SIGNATURE_BYTES + 40


def signed_message(kind: Kind, key: bytes, value: bytes, ttl: int, seq: int) -> bytes:
    """The exact bytes an owner signs: fixed-width fields, then the key with its length, then the
    value, so that no two different records share a message."""
    return _DOMAIN + struct.pack(">BQIH", kind, seq, ttl, len(key)) + key + value


def sign_record(identity: Identity, kind: Kind, key: bytes, value: bytes, *, ttl: int, seq: int) -> Record:
    if not 0 <= seq <= MAX_SEQ or not 0 <= ttl < 2**32 or len(key) >= 2**16:
        raise ValueError("seq, ttl or key length out of range")
    signature = identity.sign(signed_message(kind, key, value, ttl, seq))
    return Record(kind, key, value, identity.public_key, ttl, seq, signature)


def record_valid(record: Record) -> bool:
    """True when the owner named in the record signed exactly this record."""
    message = signed_message(record.kind, record.key, record.value, record.ttl, record.seq)
    return verify_signature(record.owner, record.signature, message)
