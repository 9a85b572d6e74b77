"""The wire format: round trips, limits checked before allocation, and fuzzing (only DecodeError)."""

from __future__ import annotations

import contextlib
import math
from random import Random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht import DecodeError, DhtConfig, Kind, Record
from dht.codec import (
    MAX_ID,
    Digest,
    DigestReply,
    Get,
    GetReply,
    Held,
    Message,
    PositionRecords,
    Role,
    RoleReply,
    Status,
    Store,
    StoreAck,
    Sync,
    Verdict,
    Write,
    WriteReply,
    decode,
    encode,
    pack_positions,
    split_entries,
)
from tests.dht.helpers import identity, rec

CONFIG = DhtConfig()
SIGNER = identity(7)

ids = st.integers(0, MAX_ID)
indices = st.integers(0, CONFIG.replicas - 1)
keys = st.binary(min_size=1, max_size=CONFIG.max_key_bytes)


@st.composite
def records(draw: st.DrawFn, key: bytes | None = None) -> Record:
    # Signatures are not checked by the codec; random bytes of the right size exercise it as well.
    return Record(
        kind=draw(st.sampled_from(Kind)),
        key=key if key is not None else draw(keys),
        value=draw(st.binary(max_size=CONFIG.max_value_bytes)),
        owner=draw(st.binary(min_size=32, max_size=32)),
        ttl=draw(st.integers(1, 2**32 - 1)),
        seq=draw(st.integers(0, 2**63 - 1)),
        signature=draw(st.binary(min_size=64, max_size=64)),
    )


remaining = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def helds(draw: st.DrawFn, key: bytes) -> Held:
    return Held(draw(records(key)), draw(remaining))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    key = draw(st.binary(min_size=1, max_size=40))
    small = st.lists(helds(key), max_size=2)
    choice = draw(st.integers(0, 10))
    if choice == 0:
        return Write(draw(ids), draw(indices), draw(records(key)))
    if choice == 1:
        owner = draw(st.sampled_from([b"", bytes(range(32))]))
        return WriteReply(
            draw(ids), draw(indices), draw(st.sampled_from(Status)), draw(st.integers(0, 2**63 - 1)), owner
        )
    if choice == 2:
        return Get(draw(ids), draw(indices), key)
    if choice == 3:
        parts = draw(st.integers(1, 256))
        part = draw(st.integers(0, parts - 1))
        return GetReply(draw(ids), draw(indices), key, part, parts, draw(st.booleans()), tuple(draw(small)))
    if choice == 4:
        positions = tuple(
            PositionRecords(key, draw(indices), tuple(draw(small))) for _ in range(draw(st.integers(0, 2)))
        )
        return Store(draw(ids), draw(ids), 0, 1, positions)
    if choice == 5:
        return StoreAck(draw(ids), tuple(draw(st.lists(st.integers(0, 100), max_size=5))))
    if choice == 6:
        return Sync(draw(ids))
    if choice == 7:
        return Role(draw(ids), key, draw(indices), draw(ids))
    if choice == 8:
        return RoleReply(draw(ids), draw(st.sampled_from(Verdict)))
    if choice == 9:
        pairs = st.tuples(st.binary(min_size=20, max_size=20), ids)
        return Digest(draw(ids), tuple(draw(st.lists(pairs, max_size=4))))
    return DigestReply(draw(ids), tuple(draw(st.lists(st.integers(0, 200), max_size=5))))


@settings(max_examples=400)
@given(messages())
def test_round_trip(message: Message) -> None:
    assert decode(encode(message), CONFIG) == message


def test_a_record_of_the_largest_size_fits_a_message() -> None:
    big = rec(SIGNER, Kind.PUT, b"k" * CONFIG.max_key_bytes, b"v" * CONFIG.max_value_bytes, seq=2**63 - 1)
    data = encode(Write(MAX_ID, 7, big))
    assert len(data) <= CONFIG.max_message_bytes
    assert decode(data, CONFIG) == Write(MAX_ID, 7, big)


def test_integer_remaining_is_read_as_float() -> None:
    r = rec(SIGNER, Kind.PUT)
    fields = [1, 4, 5, 0, b"k", 0, 1, True, [[int(r.kind), r.value, r.owner, r.ttl, r.seq, r.signature, 30]]]
    message = decode(msgpack.packb(fields, use_bin_type=True), CONFIG)
    assert isinstance(message, GetReply) and message.entries[0].remaining == 30.0


@pytest.mark.parametrize(
    "fields",
    [
        [2, 7, 1],  # unknown version
        [True, 7, 1],  # a boolean is not the version
        [1, 99, 1],  # unknown type
        [1, 7],  # too short
        [1, 7, -1],  # negative id
        [1, 7, 2**64],  # id out of range (msgpack refuses it even)
        [1, 3, 1, 8, b"k"],  # position index beyond replicas
        [1, 3, 1, 0, b""],  # empty key
        [1, 3, 1, 0, b"k" * 257],  # key too long
        [1, 3, 1, 0, "k"],  # a string is not bytes
        [1, 3, 1.0, 0, b"k"],  # a float is not an id
        [1, 6, 1, [1, "x"]],
        [1, 5, 1, 0, 1, 1, [[b"k", 0]]],  # position without entries
        [1, 5, 1, 0, 2, 2, []],  # part beyond parts
        [1, 5, 1, 0, 0, 0, []],  # zero parts
        [1, 5, 1, 0, 0, 257, []],  # too many parts
        [1, 4, 1, 0, b"k", 0, 1, 1, []],  # ready must be a boolean
        [1, 2, 1, 0, 99, 0, b""],  # unknown status
        [1, 10, 1, [[b"p" * 19, 5]]],  # a position is 20 bytes
        [1, 10, 1, [[b"p" * 20]]],  # a digest entry without its digest
        [1, 10, 1, [[b"p" * 20, -1]]],  # a negative digest
        [1, 11, 1, [-1]],  # a negative position number
        [1, 2, 1, 0, 0, 0, b"x" * 33],  # owner too long
        [1, 9, 1, 4],  # unknown verdict
        [1, 8, 1, b"k", 0, -1],  # negative digest
    ],
)
def test_malformed_messages_raise_decode_error(fields: list[object]) -> None:
    try:
        data = msgpack.packb(fields, use_bin_type=True)
    except OverflowError:
        return
    with pytest.raises(DecodeError):
        decode(data, CONFIG)


def _held_fields(**change: object) -> list[object]:
    r = rec(SIGNER, Kind.PUT)
    f: dict[str, object] = {
        "kind": int(r.kind),
        "value": r.value,
        "owner": r.owner,
        "ttl": r.ttl,
        "seq": r.seq,
        "sig": r.signature,
        "remaining": 1.0,
    }
    f.update(change)
    return list(f.values())


@pytest.mark.parametrize(
    "change",
    [
        {"kind": 0},
        {"kind": 5},
        {"value": b"v" * 1025},
        {"owner": b"o" * 31},
        {"ttl": 0},
        {"ttl": 2**32},
        {"seq": -1},
        {"sig": b"s" * 63},
        {"remaining": -1.0},
        {"remaining": math.inf},
        {"remaining": math.nan},
        {"remaining": "1"},
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))!r:.12}",
)
def test_bad_record_fields_raise_decode_error(change: dict[str, object]) -> None:
    data = msgpack.packb([1, 4, 1, 0, b"k", 0, 1, True, [_held_fields(**change)]], use_bin_type=True)
    with pytest.raises(DecodeError):
        decode(data, CONFIG)


def test_length_is_checked_before_anything_is_parsed() -> None:
    oversized = b"\x92" + b"\x00" * CONFIG.max_message_bytes
    with pytest.raises(DecodeError, match="exceeds"):
        decode(oversized, CONFIG)


def test_declared_sizes_beyond_the_data_do_not_allocate() -> None:
    # An array header claiming 2**32-1 elements and a bin header claiming 4 GB, in a few bytes.
    for data in (b"\xdd\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\x93\x01\x07\xc6\x7f\xff\xff\xff"):
        with pytest.raises(DecodeError):
            decode(data, CONFIG)


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data, CONFIG)


@settings(max_examples=500)
@given(messages(), st.randoms(use_true_random=False))
def test_mutated_messages_raise_only_decode_error(message: Message, rnd: Random) -> None:
    data = bytearray(encode(message))
    for _ in range(rnd.randint(1, 6)):
        op = rnd.randrange(3)
        at = rnd.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(at, len(data) - 1)] = rnd.randrange(256)
        elif op == 1:
            data[at:at] = bytes([rnd.randrange(256)])
        elif data:
            del data[min(at, len(data) - 1)]
    with contextlib.suppress(DecodeError):
        decode(bytes(data), CONFIG)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, CONFIG.max_value_bytes), min_size=0, max_size=40), st.integers(1, 3))
def test_packing_keeps_every_message_within_the_limit(sizes: list[int], npos: int) -> None:
    key = b"k" * CONFIG.max_key_bytes
    r0 = rec(SIGNER, Kind.PUT, key)
    snaps = []
    for i in range(npos):
        entries = tuple(
            Held(Record(Kind.PUT, key, b"v" * n, r0.owner, 60, 2**63 - 1, r0.signature), 1e9 / 3)
            for n in sizes
        )
        snaps.append((i, PositionRecords(key, i, entries)))
    batches = pack_positions(snaps, CONFIG.max_message_bytes - 64)
    seen: list[Held] = []
    for batch in batches:
        message = Store(MAX_ID, MAX_ID, 255, 256, tuple(s for _, s in batch))
        assert len(encode(message)) <= CONFIG.max_message_bytes
        assert len({tag for tag, _ in batch}) == len(batch)
        seen.extend(h for _, s in batch for h in s.entries)
    assert len(seen) == npos * len(sizes)
    parts = split_entries(snaps[0][1].entries, CONFIG.max_message_bytes - len(key) - 64)
    assert parts and sum(len(p) for p in parts) == len(sizes)
    for part in parts:
        reply = GetReply(MAX_ID, 7, key, 255, 256, True, tuple(part))
        assert len(encode(reply)) <= CONFIG.max_message_bytes
