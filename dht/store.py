"""Pure. One node's replica store: the records it holds at each key position, and the rules that decide
whether a record is accepted.

Theory of operation. The store is indexed by *position* (``key_address(key, i)``), not by key: each of a
key's R positions is an independent replica that moves between nodes on its own as the ring changes
(Brunet's DHT stores the same way). At a position a key holds either

* one *claim* — a reservation or a created record of a single owner (``create``), or
* up to ``max_values_per_key`` *put values*, one per (owner, value),

never both: kinds do not mix, so a created key can never gain a second owner through ``put``. Beside
them sit *tombstones*: signed deletes, kept for the deleted record's lifetime so that a stale copy that
arrives later (a hand-over, a read repair, a replay) cannot bring the value back.

The acceptance rules, for a record of owner O about value v with sequence number s:

* every record: sizes and TTL within limits (else INVALID); signature valid (else FORGED, checked only
  when the identical record is not already here); no tombstone of (O, v) with seq >= s (else STALE);
* RESERVE / CREATE: no live put values (CONFLICT_PUT); no live claim of another owner (CONFLICT_*,
  naming that owner) — *first writer wins*, the heart of ``create``; a claim of O itself is replaced
  by a newer seq, except that a reservation never downgrades O's created record of the same value
  (answered OK_HELD: "you hold it already"). One exception among racers: a reservation displaces
  another owner's *reservation* (never a created record) that it :func:`precedes`, an order that
  is the same at every position, so that racing creators converge on one of them;
* PUT: no live claim; a newer seq replaces O's earlier statement about v; at most
  ``max_values_per_key`` values;
* DELETE: removes O's claim or put of v if older, and leaves a tombstone.

The same record twice (a retransmission) is accepted again and only ever extends its expiry up to its
signed TTL. Expiry is by ``now`` everywhere: a read never returns an expired entry, whether or not the
periodic sweep has removed it yet. The store refuses new entries beyond ``max_records`` (STORE_FULL).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from overlay import Address

from .codec import Held, PositionRecords, Status
from .config import DhtConfig
from .record import Kind, Record, record_valid

Ident = tuple[bytes, bytes]


def digest_of(records: Iterable[Record]) -> int:
    """A summary of a set of statements (not their expiry), to tell whether another node holds the
    same version of a position: the same on every node (it travels in :class:`~dht.codec.Role`),
    independent of order, 64 bits (a collision only delays a hand-over until the next change)."""
    total = 0
    for r in records:
        h = hashlib.blake2b(r.signature, digest_size=8).digest()  # a signature names its statement
        total ^= int.from_bytes(h, "big")
    return total


@dataclass(slots=True)
class Stored:
    record: Record
    expires: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """The store's answer to a write: a status, and for STALE/CONFLICT the seq or owner that explain it."""

    status: Status
    seq: int = 0
    owner: bytes = b""


@dataclass(slots=True)
class Position:
    """What this node holds at one position."""

    key: bytes
    index: int
    claim: Stored | None = None
    values: dict[Ident, Stored] = field(default_factory=dict)
    tombstones: dict[Ident, Stored] = field(default_factory=dict)

    def size(self) -> int:
        return (self.claim is not None) + len(self.values) + len(self.tombstones)

    def all(self) -> Iterator[Stored]:
        if self.claim is not None:
            yield self.claim
        yield from self.values.values()
        yield from self.tombstones.values()

    def expire(self, now: float) -> int:
        """Drop expired entries; returns how many."""
        before = self.size()
        if self.claim is not None and self.claim.expires <= now:
            self.claim = None
        for table in (self.values, self.tombstones):
            for ident in [i for i, s in table.items() if s.expires <= now]:
                del table[ident]
        return before - self.size()


def precedes(a: Record, b: Record) -> bool:
    """Whether reservation ``a`` takes precedence over ``b`` of another owner for the same key. The
    order is arbitrary but the same at every position, so that when many creators race, the
    positions converge on one of them instead of each picking whoever arrived first — and so split
    the race so that nobody wins it. It ranks reservations only: a created record is never displaced
    (that is what keeps two creators from both winning: see :mod:`dht.ops`)."""
    return _rank(a) < _rank(b)


def _rank(r: Record) -> bytes:
    return hashlib.blake2b(r.owner + r.key, digest_size=16, person=b"ipop-dht-race").digest()


class Store:
    """The positions one node holds. ``count`` is the number of entries, the quantity capped."""

    def __init__(self, config: DhtConfig) -> None:
        self.config = config
        self._positions: dict[Address, Position] = {}
        self.count = 0

    def __len__(self) -> int:
        return len(self._positions)

    def __contains__(self, pos: Address) -> bool:
        return pos in self._positions

    def positions(self) -> list[Address]:
        return list(self._positions)

    def position(self, pos: Address) -> Position | None:
        return self._positions.get(pos)

    def live_size(self, pos: Address, now: float) -> int:
        """Live entries at ``pos`` (expired ones are removed on the way)."""
        entry = self._live(pos, now)
        return 0 if entry is None else entry.size()

    def drop(self, pos: Address) -> None:
        entry = self._positions.pop(pos, None)
        if entry is not None:
            self.count -= entry.size()

    def sweep(self, now: float) -> int:
        """Remove expired entries and empty positions everywhere; returns entries removed."""
        removed = 0
        for pos in list(self._positions):
            entry = self._positions[pos]
            removed += entry.expire(now)
            if entry.size() == 0:
                del self._positions[pos]
        self.count -= removed
        return removed

    def _live(self, pos: Address, now: float) -> Position | None:
        entry = self._positions.get(pos)
        if entry is not None:
            self.count -= entry.expire(now)
        return entry

    def read(self, pos: Address, now: float, *, reservations: bool) -> list[Held]:
        """Live entries at ``pos`` with their remaining lifetimes. A ``get`` is answered without
        reservations (they are not values); hand-overs carry them, since they guard a create race."""
        entry = self._live(pos, now)
        if entry is None:
            return []
        return [
            Held(s.record, s.expires - now)
            for s in entry.all()
            if reservations or s.record.kind is not Kind.RESERVE
        ]

    def snapshot(self, pos: Address, now: float) -> PositionRecords | None:
        entry = self._live(pos, now)
        if entry is None or entry.size() == 0:
            return None
        return PositionRecords(entry.key, entry.index, tuple(self.read(pos, now, reservations=True)))

    def digest(self, pos: Address, now: float) -> int:
        """:func:`digest_of` the live statements at ``pos``."""
        entry = self._live(pos, now)
        return digest_of(s.record for s in entry.all()) if entry is not None else digest_of(())

    def write(
        self, pos: Address, index: int, record: Record, now: float, remaining: float | None = None
    ) -> Outcome:
        """Apply one record at ``pos`` (which the caller derived from ``record.key`` and ``index``).
        ``remaining`` is the lifetime left when the record comes from another replica; a write from
        the owner itself lives its full ``ttl``."""
        c = self.config
        r = record
        if (
            not 1 <= len(r.key) <= c.max_key_bytes
            or len(r.value) > c.max_value_bytes
            or not c.min_ttl_s <= r.ttl <= c.max_ttl_s
            or not 0 <= index < c.replicas
        ):
            return Outcome(Status.INVALID)
        life = float(r.ttl) if remaining is None else min(float(r.ttl), remaining)
        entry = self._live(pos, now)
        if entry is not None and entry.key != r.key:
            return Outcome(Status.INVALID)  # two keys hashed to one position: refuse the newcomer
        if not self._identical_here(entry, r) and not record_valid(r):
            return Outcome(Status.FORGED)
        if life <= 0:
            return Outcome(Status.OK)  # it expired on the way; nothing to keep
        if entry is None:
            entry = Position(r.key, index)
        tomb = entry.tombstones.get(r.ident)
        if r.kind is not Kind.DELETE and tomb is not None and tomb.record.seq >= r.seq:
            return Outcome(Status.STALE, tomb.record.seq)
        if r.kind.is_claim:
            outcome = self._claim(entry, r, now + life)
        elif r.kind is Kind.PUT:
            outcome = self._put(entry, r, now + life)
        else:
            outcome = self._delete(entry, r, now + life)
        if outcome.status.accepted:
            if r.kind is not Kind.DELETE and tomb is not None:
                del entry.tombstones[r.ident]  # superseded by a newer statement
                self.count -= 1
            if entry.size():
                self._positions[pos] = entry
        return outcome

    @staticmethod
    def _identical_here(entry: Position | None, r: Record) -> bool:
        if entry is None:
            return False
        return any(s.record == r for s in entry.all())

    def _full(self) -> bool:
        return self.count >= self.config.max_records

    def _claim(self, entry: Position, r: Record, expires: float) -> Outcome:
        if entry.values:
            return Outcome(Status.CONFLICT_PUT, 0, next(iter(entry.values))[0])
        claim = entry.claim
        if claim is None:
            if self._full():
                return Outcome(Status.STORE_FULL)
            entry.claim = Stored(r, expires)
            self.count += 1
            return Outcome(Status.OK)
        held = claim.record
        if held.owner != r.owner:
            if held.kind is Kind.RESERVE and r.kind is Kind.RESERVE and precedes(r, held):
                entry.claim = Stored(r, expires)  # a race: every position prefers the same racer
                return Outcome(Status.OK)
            status = Status.CONFLICT_CREATED if held.kind is Kind.CREATE else Status.CONFLICT_RESERVED
            return Outcome(status, 0, held.owner)
        if r.seq < held.seq or (r.seq == held.seq and r != held):
            return Outcome(Status.STALE, held.seq)
        if r == held:
            claim.expires = max(claim.expires, expires)
            return Outcome(Status.OK)
        already = held.kind is Kind.CREATE and held.value == r.value
        if r.kind is Kind.RESERVE and already:
            return Outcome(Status.OK_HELD)  # never downgrade the owner's created record
        entry.claim = Stored(r, expires)
        return Outcome(Status.OK_HELD if already else Status.OK)

    def _put(self, entry: Position, r: Record, expires: float) -> Outcome:
        if entry.claim is not None:
            held = entry.claim.record
            status = Status.CONFLICT_CREATED if held.kind is Kind.CREATE else Status.CONFLICT_RESERVED
            return Outcome(status, 0, held.owner)
        current = entry.values.get(r.ident)
        if current is not None:
            if r.seq < current.record.seq or (r.seq == current.record.seq and r != current.record):
                return Outcome(Status.STALE, current.record.seq)
            if r == current.record:
                current.expires = max(current.expires, expires)
            else:
                entry.values[r.ident] = Stored(r, expires)
            return Outcome(Status.OK)
        if len(entry.values) >= self.config.max_values_per_key:
            return Outcome(Status.KEY_FULL)
        if self._full():
            return Outcome(Status.STORE_FULL)
        entry.values[r.ident] = Stored(r, expires)
        self.count += 1
        return Outcome(Status.OK)

    def _delete(self, entry: Position, r: Record, expires: float) -> Outcome:
        claim = entry.claim
        target = claim if claim is not None and claim.record.ident == r.ident else entry.values.get(r.ident)
        if target is not None and target.record.seq >= r.seq:
            return Outcome(Status.STALE, target.record.seq)
        tomb = entry.tombstones.get(r.ident)
        if tomb is not None:
            if r.seq < tomb.record.seq or (r.seq == tomb.record.seq and r != tomb.record):
                return Outcome(Status.STALE, tomb.record.seq)
            tomb.expires = max(tomb.expires, expires) if r == tomb.record else expires
            tomb.record = r
        elif target is None and self._full():
            return Outcome(Status.STORE_FULL)
        else:
            entry.tombstones[r.ident] = Stored(r, expires)
            self.count += 1
        if target is not None:
            if target is claim:
                entry.claim = None
            else:
                del entry.values[r.ident]
            self.count -= 1
        return Outcome(Status.OK)
