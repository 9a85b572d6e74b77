"""Pure. What the replicator (:mod:`dht.replication`) has in flight: pushes of positions to their
holders, and the store messages that carry them until acknowledged."""

from __future__ import annotations

from dataclasses import dataclass

from overlay import Address


@dataclass(slots=True)
class PendingPush:
    """A push of one position to one target, possibly split over several batches."""

    batches: int
    digest: int
    failed: bool = False


@dataclass(slots=True)
class PushBatch:
    """One store message of pushes awaiting its acknowledgement, resent every ``push_timeout_s``
    (longer each time) up to ``push_attempts`` sends. ``positions`` maps each position it carries to
    the digest pushed; empty for a read repair, which records nothing once it landed."""

    target: Address
    routed: bool
    """True: sent to ``target`` as a position (to whoever is closest); False: to that exact node."""
    positions: dict[Address, int]
    payload: bytes
    resend_at: float
    attempts: int = 1
