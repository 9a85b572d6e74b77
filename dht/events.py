"""Pure. What the DHT core tells its user: operation results and events, all frozen and slotted.

``DhtNode.create/put/get/delete`` return an :data:`OpId` at once; the outcome arrives later as an
:class:`OpCompleted` from ``next_event()``, carrying exactly one of the result types below.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NewType

from .record import Kind

OpId = NewType("OpId", int)
"""Names one operation of one ``DhtNode``; counts up from 1."""


class Reason(StrEnum):
    """Why an operation failed."""

    NO_QUORUM = "no_quorum"
    """Fewer than a majority of the key's positions answered in time (loss, churn, partition)."""
    CONTENDED = "contended"
    """``create`` lost a race: other creators' reservations held enough positions that no one may win
    this round; the caller may try again later or pick another key."""
    CONFLICT = "conflict"
    """The key holds records of the other kind (``put`` values versus a created record)."""
    KEY_FULL = "key_full"
    """The key already holds ``max_values_per_key`` values at a majority of positions."""
    STORE_FULL = "store_full"
    """Replicas refused to store more records (``max_records``)."""
    REFUSED = "refused"
    """Replicas refused the record for another reason (their limits differ from ours)."""
    BUSY = "busy"
    """This node already runs ``max_pending_ops`` operations."""


@dataclass(frozen=True, slots=True)
class ValueInfo:
    """One live value of a key as a majority of its positions hold it."""

    value: bytes
    owner: bytes
    """The Ed25519 public key of the node that wrote it."""
    ttl: float
    """Seconds of life left: what a majority of the positions still grant."""
    kind: Kind
    """``Kind.CREATE`` for the value of a created key, ``Kind.PUT`` for one of several values."""


@dataclass(frozen=True, slots=True)
class Created:
    """A majority of positions hold this node's record and no other owner's: the key is ours."""

    key: bytes
    value: bytes
    ttl: int


@dataclass(frozen=True, slots=True)
class AlreadyOwned:
    """Another owner holds a live record under the key (``create``), or the key is a created one and
    cannot take put values (``put``)."""

    key: bytes
    owner: bytes


@dataclass(frozen=True, slots=True)
class Stored:
    """``put`` succeeded: a majority of positions hold the value."""

    key: bytes
    value: bytes
    ttl: int


@dataclass(frozen=True, slots=True)
class Deleted:
    """A majority of positions hold the owner's tombstone for the value."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Values:
    """``get``: every live value that a majority of the key's positions confirmed (possibly none)."""

    key: bytes
    values: tuple[ValueInfo, ...]


@dataclass(frozen=True, slots=True)
class Failed:
    reason: Reason
    detail: str


OpResult = Created | AlreadyOwned | Stored | Deleted | Values | Failed


@dataclass(frozen=True, slots=True)
class OpCompleted:
    op_id: OpId
    result: OpResult


@dataclass(frozen=True, slots=True)
class OwnershipLost:
    """A refresh of a record this node created found the key held by another owner: the lease had
    lapsed (e.g. this node was cut off for longer than the TTL). The node stops refreshing it; the
    ipop layer must stop using the address or name."""

    key: bytes
    value: bytes
    owner: bytes


DhtEvent = OpCompleted | OwnershipLost
