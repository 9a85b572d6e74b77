"""Pure. The DHT's wire format: msgpack arrays ``[version, type, ...]``, decoded under hard size limits.

Every message is one overlay payload of ``Service.DHT``. Requests go to a key position (routed to the
node closest to it) and carry a random 64-bit request id that the reply echoes; pushes between
neighbours go to an exact address and are acknowledged by batch id.

    WRITE       [1, 1, req_id, index, key, record]          reserve / create / put / delete at position
    WRITE_REPLY [1, 2, req_id, index, status, seq, owner]    outcome; seq and owner explain stale/conflict
    GET         [1, 3, req_id, index, key]
    GET_REPLY   [1, 4, req_id, index, key, part, parts, ready, [held, ...]]
    STORE       [1, 5, batch_id, sync_id, part, parts, [[key, index, [held, ...]], ...]]
    STORE_ACK   [1, 6, batch_id, [refused position number, ...]]
    SYNC        [1, 7, sync_id]                              "send me what I should now hold"
    ROLE        [1, 8, req_id, key, index, digest]           "do you count me among its holders?"
    ROLE_REPLY  [1, 9, req_id, verdict]
    DIGEST      [1, 10, req_id, [[position, digest], ...]]   "I hold these versions; which of them do you?"
    DIGEST_REPLY [1, 11, req_id, [position number, ...]]     the ones held in the same version

    record = [kind, value, owner, ttl, seq, signature]       (the key travels once per message)
    held   = record + [remaining seconds]

Untrusted bytes only ever raise :class:`DecodeError`: the length is checked before msgpack allocates
anything, msgpack itself is bounded (no strings, maps or extensions; bins and arrays capped), and every
field is type- and range-checked before a message object exists. Signatures are not checked here: that
costs a public-key operation and is done by the store, once per record it would keep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

import msgpack

from .config import DhtConfig
from .record import MAX_SEQ, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Kind, Record

VERSION = 1
MAX_ID = (1 << 64) - 1
"""Request, batch and sync ids are unsigned 64-bit random numbers: a stale reply to an earlier
operation (or an earlier life of this node) matches a live one with probability 2**-64."""

MAX_PARTS = 256
"""A reply split into more parts than this is refused; 256 parts of 4 kB exceed any key's content."""


T = TypeVar("T")

ENTRY_OVERHEAD = 150
"""Encoded bytes of a held record besides its value, rounded up: owner (34) and signature (66) with
their headers, kind, ttl, seq and remaining (at most 24) and the array header."""

POSITION_OVERHEAD = 16
"""Encoded bytes of a position besides its key and entries: index and array headers."""


class DecodeError(ValueError):
    """Bytes that are not a valid DHT message. The only exception decoding raises."""


class Status(IntEnum):
    """A replica's answer to a write."""

    OK = 0
    OK_HELD = 1
    """Accepted; this owner already held a created record of this value here (a renewal)."""
    CONFLICT_RESERVED = 2
    """Another owner holds a live reservation of the key."""
    CONFLICT_CREATED = 3
    """Another owner holds the key (a created record)."""
    CONFLICT_PUT = 4
    """The key holds put values, so it cannot be created (or the reverse); kinds do not mix."""
    STALE = 5
    """A newer statement of this owner about this value is here; ``seq`` says which."""
    NOT_READY = 6
    """The replica is still receiving records from its new neighbours; ask again shortly."""
    KEY_FULL = 7
    STORE_FULL = 8
    FORGED = 9
    INVALID = 10
    """Out of this replica's limits (key, value or TTL size) or a position index it does not know."""

    @property
    def accepted(self) -> bool:
        return self in (Status.OK, Status.OK_HELD)


@dataclass(frozen=True, slots=True)
class Held:
    """A record as a node holds it: with the seconds of life it has left there."""

    record: Record
    remaining: float


@dataclass(frozen=True, slots=True)
class PositionRecords:
    """Everything one node holds at one position of one key."""

    key: bytes
    index: int
    entries: tuple[Held, ...]


@dataclass(frozen=True, slots=True)
class Write:
    req_id: int
    index: int
    record: Record


@dataclass(frozen=True, slots=True)
class WriteReply:
    req_id: int
    index: int
    status: Status
    seq: int = 0
    owner: bytes = b""


@dataclass(frozen=True, slots=True)
class Get:
    req_id: int
    index: int
    key: bytes


@dataclass(frozen=True, slots=True)
class GetReply:
    req_id: int
    index: int
    key: bytes
    part: int
    parts: int
    ready: bool
    entries: tuple[Held, ...]


@dataclass(frozen=True, slots=True)
class Store:
    """Records pushed to a neighbour (copies, hand-over, answers to :class:`Sync`) or to a position
    (routed hand-over, read repair). ``batch_id`` 0: no acknowledgement wanted (an empty answer to a
    :class:`Sync`)."""

    batch_id: int
    sync_id: int
    part: int
    parts: int
    positions: tuple[PositionRecords, ...]


@dataclass(frozen=True, slots=True)
class StoreAck:
    """Receipt of a :class:`Store`. ``refused``: positions (numbered as in the batch) whose records
    could not all be kept (a full store), so the sender must not count them as handed over."""

    batch_id: int
    refused: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Sync:
    sync_id: int


class Verdict(IntEnum):
    """The closest node's answer to :class:`Role`."""

    UNKNOWN = 0
    """It cannot tell (it does not know all holders of the position)."""
    NEEDED = 1
    """It counts the asker among the holders."""
    UNNEEDED = 2
    """It does not count the asker, and holds the same version: the asker may drop the position."""
    DIFFERS = 3
    """It does not count the asker, but holds another version: the asker must hand its version over
    first."""


@dataclass(frozen=True, slots=True)
class Role:
    """Sent, routed to a position, by a node that holds it but cannot tell from its neighbourhood
    whether it is still one of its holders; ``digest`` is :func:`~dht.store.digest_of` its records."""

    req_id: int
    key: bytes
    index: int
    digest: int


@dataclass(frozen=True, slots=True)
class RoleReply:
    req_id: int
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Digest:
    """Sent to a neighbour at a resync instead of the records themselves: the positions (20-byte ring
    addresses) we would push it, each with :func:`~dht.store.digest_of` our records there. The answer
    says which it holds in the same version; only the others are pushed."""

    req_id: int
    positions: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class DigestReply:
    req_id: int
    same: tuple[int, ...]
    """Positions (numbered as in the :class:`Digest`) that the answering node holds in that version."""


Message = (
    Write | WriteReply | Get | GetReply | Store | StoreAck | Sync | Role | RoleReply | Digest | DigestReply
)

(
    _WRITE,
    _WRITE_REPLY,
    _GET,
    _GET_REPLY,
    _STORE,
    _STORE_ACK,
    _SYNC,
    _ROLE,
    _ROLE_REPLY,
    _DIGEST,
    _DIGEST_REPLY,
) = range(1, 12)

POSITION_BYTES = 20
"""A ring address (160 bits) on the wire."""

DIGEST_ENTRY_BYTES = 34
"""Encoded bytes of one position in a :class:`Digest`, rounded up: the 20-byte address with its header
(22), the 64-bit digest (9) and the array header."""


def _record_fields(r: Record) -> list[Any]:
    return [int(r.kind), r.value, r.owner, r.ttl, r.seq, r.signature]


def _held(h: Held) -> list[Any]:
    return [*_record_fields(h.record), h.remaining]


def encode(message: Message) -> bytes:
    m = message
    fields: list[Any]
    if isinstance(m, Write):
        fields = [_WRITE, m.req_id, m.index, m.record.key, _record_fields(m.record)]
    elif isinstance(m, WriteReply):
        fields = [_WRITE_REPLY, m.req_id, m.index, int(m.status), m.seq, m.owner]
    elif isinstance(m, Get):
        fields = [_GET, m.req_id, m.index, m.key]
    elif isinstance(m, GetReply):
        fields = [_GET_REPLY, m.req_id, m.index, m.key, m.part, m.parts, m.ready]
        fields.append([_held(h) for h in m.entries])
    elif isinstance(m, Store):
        positions = [[p.key, p.index, [_held(h) for h in p.entries]] for p in m.positions]
        fields = [_STORE, m.batch_id, m.sync_id, m.part, m.parts, positions]
    elif isinstance(m, StoreAck):
        fields = [_STORE_ACK, m.batch_id, list(m.refused)]
    elif isinstance(m, Sync):
        fields = [_SYNC, m.sync_id]
    elif isinstance(m, Role):
        fields = [_ROLE, m.req_id, m.key, m.index, m.digest]
    elif isinstance(m, Digest):
        fields = [_DIGEST, m.req_id, [[p, d] for p, d in m.positions]]
    elif isinstance(m, DigestReply):
        fields = [_DIGEST_REPLY, m.req_id, list(m.same)]
    else:
        fields = [_ROLE_REPLY, m.req_id, int(m.verdict)]
    data: bytes = msgpack.packb([VERSION, *fields], use_bin_type=True)
    return data


class _Reader:
    """Field checks against one configuration's limits; each failure is a :class:`DecodeError`."""

    def __init__(self, config: DhtConfig) -> None:
        self.config = config

    @staticmethod
    def int_(x: object, lo: int, hi: int, what: str) -> int:
        if type(x) is not int or not lo <= x <= hi:
            raise DecodeError(f"{what}: expected an integer in {lo}..{hi}")
        return x

    @staticmethod
    def bytes_(x: object, lo: int, hi: int, what: str) -> bytes:
        if type(x) is not bytes or not lo <= len(x) <= hi:
            raise DecodeError(f"{what}: expected {lo}..{hi} bytes")
        return x

    @staticmethod
    def list_(x: object, n: int | None, what: str) -> list[Any]:
        if type(x) is not list or (n is not None and len(x) != n):
            raise DecodeError(f"{what}: expected an array" + (f" of {n}" if n is not None else ""))
        return x

    def key(self, x: object) -> bytes:
        return self.bytes_(x, 1, self.config.max_key_bytes, "key")

    def index(self, x: object) -> int:
        return self.int_(x, 0, self.config.replicas - 1, "position index")

    def ident(self, x: object, what: str) -> int:
        return self.int_(x, 0, MAX_ID, what)

    def record(self, key: bytes, x: object, n: int = 6) -> Record:
        f = self.list_(x, n, "record")
        kind_no = self.int_(f[0], min(Kind), max(Kind), "kind")
        value = self.bytes_(f[1], 0, self.config.max_value_bytes, "value")
        owner = self.bytes_(f[2], PUBLIC_KEY_BYTES, PUBLIC_KEY_BYTES, "owner")
        ttl = self.int_(f[3], 1, 2**32 - 1, "ttl")
        seq = self.int_(f[4], 0, MAX_SEQ, "seq")
        signature = self.bytes_(f[5], SIGNATURE_BYTES, SIGNATURE_BYTES, "signature")
        return Record(Kind(kind_no), key, value, owner, ttl, seq, signature)

    def held(self, key: bytes, x: object) -> Held:
        record = self.record(key, x, 7)
        remaining = x[6]  # type: ignore[index]  # record() checked it is a list of 7
        if type(remaining) is int:
            remaining = float(remaining)
        if type(remaining) is not float or not math.isfinite(remaining) or remaining < 0:
            raise DecodeError("remaining: expected a finite number of seconds >= 0")
        return Held(record, remaining)

    def helds(self, key: bytes, x: object) -> tuple[Held, ...]:
        return tuple(self.held(key, h) for h in self.list_(x, None, "entries"))

    def parts(self, part: object, parts: object) -> tuple[int, int]:
        total = self.int_(parts, 1, MAX_PARTS, "parts")
        return self.int_(part, 0, total - 1, "part"), total


def decode(data: bytes, config: DhtConfig) -> Message:
    """Decode one message under ``config``'s limits; raises only :class:`DecodeError`."""
    if len(data) > config.max_message_bytes:
        raise DecodeError(f"message of {len(data)} bytes exceeds {config.max_message_bytes}")
    try:
        top = msgpack.unpackb(
            data,
            use_list=True,
            raw=False,
            max_bin_len=max(config.max_key_bytes, config.max_value_bytes, SIGNATURE_BYTES),
            max_str_len=0,
            max_array_len=config.max_message_bytes,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types for malformed input
        raise DecodeError(f"not msgpack: {exc.__class__.__name__}") from None
    r = _Reader(config)
    f = r.list_(top, None, "message")
    if len(f) < 3:
        raise DecodeError("message too short")
    if type(f[0]) is not int or f[0] != VERSION:
        raise DecodeError(f"unknown version {f[0]!r}")
    kind = f[1]
    if kind == _WRITE and len(f) == 6:
        key = r.key(f[4])
        return Write(r.ident(f[2], "req_id"), r.index(f[3]), r.record(key, f[5]))
    if kind == _WRITE_REPLY and len(f) == 7:
        status = Status(r.int_(f[4], min(Status), max(Status), "status"))
        owner = r.bytes_(f[6], 0, PUBLIC_KEY_BYTES, "owner")
        seq = r.int_(f[5], 0, MAX_SEQ, "seq")
        return WriteReply(r.ident(f[2], "req_id"), r.index(f[3]), status, seq, owner)
    if kind == _GET and len(f) == 5:
        return Get(r.ident(f[2], "req_id"), r.index(f[3]), r.key(f[4]))
    if kind == _GET_REPLY and len(f) == 9:
        key = r.key(f[4])
        part, parts = r.parts(f[5], f[6])
        if type(f[7]) is not bool:
            raise DecodeError("ready: expected a boolean")
        return GetReply(r.ident(f[2], "req_id"), r.index(f[3]), key, part, parts, f[7], r.helds(key, f[8]))
    if kind == _STORE and len(f) == 7:
        part, parts = r.parts(f[4], f[5])
        positions = []
        for p in r.list_(f[6], None, "positions"):
            fields = r.list_(p, 3, "position")
            key = r.key(fields[0])
            positions.append(PositionRecords(key, r.index(fields[1]), r.helds(key, fields[2])))
        return Store(r.ident(f[2], "batch_id"), r.ident(f[3], "sync_id"), part, parts, tuple(positions))
    if kind == _STORE_ACK and len(f) == 4:
        refused = tuple(r.int_(x, 0, MAX_ID, "refused") for x in r.list_(f[3], None, "refused"))
        return StoreAck(r.ident(f[2], "batch_id"), refused)
    if kind == _SYNC and len(f) == 3:
        return Sync(r.ident(f[2], "sync_id"))
    if kind == _ROLE and len(f) == 6:
        return Role(r.ident(f[2], "req_id"), r.key(f[3]), r.index(f[4]), r.int_(f[5], 0, MAX_ID, "digest"))
    if kind == _ROLE_REPLY and len(f) == 4:
        verdict = Verdict(r.int_(f[3], min(Verdict), max(Verdict), "verdict"))
        return RoleReply(r.ident(f[2], "req_id"), verdict)
    if kind == _DIGEST and len(f) == 4:
        pairs = []
        for x in r.list_(f[3], None, "positions"):
            pair = r.list_(x, 2, "position digest")
            position = r.bytes_(pair[0], POSITION_BYTES, POSITION_BYTES, "position")
            pairs.append((position, r.int_(pair[1], 0, MAX_ID, "digest")))
        return Digest(r.ident(f[2], "req_id"), tuple(pairs))
    if kind == _DIGEST_REPLY and len(f) == 4:
        same = tuple(r.int_(x, 0, MAX_ID, "position number") for x in r.list_(f[3], None, "same"))
        return DigestReply(r.ident(f[2], "req_id"), same)
    raise DecodeError(f"unknown message type {kind!r} with {len(f)} fields")


def entry_cost(held: Held) -> int:
    """An upper bound of one held record's encoded size (its key travels once per position)."""
    return len(held.record.value) + ENTRY_OVERHEAD


def split_entries(entries: Sequence[Held], budget: int) -> list[list[Held]]:
    """Consecutive runs of ``entries`` that each encode within ``budget`` bytes; always at least one
    (possibly empty) run, so that an empty answer is still an answer."""
    parts: list[list[Held]] = [[]]
    used = 0
    for held in entries:
        cost = entry_cost(held)
        if parts[-1] and used + cost > budget:
            parts.append([])
            used = 0
        parts[-1].append(held)
        used += cost
    return parts


def pack_positions(
    snaps: Sequence[tuple[T, PositionRecords]], budget: int
) -> list[list[tuple[T, PositionRecords]]]:
    """Group positions into messages of at most ``budget`` bytes of positions, splitting a position
    whose records do not fit one message; each group holds each position at most once."""
    batches: list[list[tuple[T, PositionRecords]]] = []
    current: list[tuple[T, PositionRecords]] = []
    used = 0
    for tag, snap in snaps:
        head = len(snap.key) + POSITION_OVERHEAD
        for piece in split_entries(snap.entries, budget - head):
            cost = head + sum(entry_cost(h) for h in piece)
            if current and used + cost > budget:
                batches.append(current)
                current, used = [], 0
            current.append((tag, PositionRecords(snap.key, snap.index, tuple(piece))))
            used += cost
    if current:
        batches.append(current)
    return batches
