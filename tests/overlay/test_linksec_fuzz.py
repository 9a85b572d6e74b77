"""The receive path never raises, whatever arrives: random bytes, framed random bytes, and valid
datagrams of every kind mutated (also re-MAC'd with the realm key, as a member could, so that the
checks past the MAC are reached), fed to nodes that hold every kind of live state. Every drop is
counted."""

from __future__ import annotations

from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import MAGIC, Dropped, Established, Identity, LinkSecurity, Plaintext, Received, Reply
from overlay.linkwire import MAC_BYTES, derive_netkey, mac

REALM = "lab"
SECRET = b"a network secret, 32 bytes long."
NETKEY = derive_netkey(REALM, SECRET)
NOT_DATAGRAM_DROPS = {"pending_evicted", "peer_mismatch"}


def node(seed: int) -> LinkSecurity:
    return LinkSecurity(
        Identity.generate(Random(seed)), REALM, SECRET, Random(seed + 1), handshakes_per_second=1e9
    )


def busy_pair() -> tuple[LinkSecurity, LinkSecurity, list[bytes]]:
    """Two nodes with a confirmed session each way, an unconfirmed one, a pending responder session
    and an open initiator handshake; and one valid datagram of every kind between them."""
    a, b = node(1), node(2)
    samples: list[bytes] = []
    for _ in range(2):
        hs = a.initiate(0.0)
        resp = b.receive(hs.packet, 0.0)
        assert isinstance(resp, Reply)
        at_a = a.receive(resp.packet, 0.0)
        assert isinstance(at_a, Established) and at_a.reply
        at_b = b.receive(at_a.reply, 0.0)
        assert isinstance(at_b, Established) and at_b.reply
        assert isinstance(a.receive(at_b.reply, 0.0), Plaintext)
        samples += [hs.packet, resp.packet, at_a.reply, at_b.reply]
        samples += [at_a.session.seal(bytes(n), 0.0) for n in (0, 1, 100)]
        samples += [at_b.session.seal(bytes(n), 0.0) for n in (0, 1, 100)]
    unconfirmed = b.initiate(0.0)  # b -> a, left UNCONFIRMED at b and PENDING at a
    resp = a.receive(unconfirmed.packet, 0.0)
    assert isinstance(resp, Reply)
    left = b.receive(resp.packet, 0.0)
    assert isinstance(left, Established) and left.reply
    samples += [unconfirmed.packet, resp.packet, left.reply, left.session.seal(b"early", 0.0)]
    samples.append(a.initiate(0.0).packet)  # open at a
    return a, b, samples


def mutate(packet: bytes, rng: Random) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.5 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif roll < 0.65 and data:
            del data[rng.randrange(len(data)) :]
        elif roll < 0.8:
            data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randint(1, 6))
        elif len(data) > 2:
            data[1] = rng.randrange(8)
    if rng.random() < 0.3 and len(data) > MAC_BYTES:
        data[-MAC_BYTES:] = mac(NETKEY, bytes(data[:-MAC_BYTES]))
    return bytes(data)


def _feed(nodes: tuple[LinkSecurity, LinkSecurity], data: bytes, now: float) -> list[Received]:
    results = []
    for n in nodes:
        results.append(n.receive(data, now))
        opened = n.open_data(data, now)
        assert opened is None or (isinstance(opened[1], bytes) and opened[0] in n.sessions())
    return results


def _drops_are_counted(nodes: tuple[LinkSecurity, ...], results: list[Received]) -> None:
    counted = sum(v for n in nodes for k, v in n.counters.items() if k not in NOT_DATAGRAM_DROPS)
    dropped_by_receive = sum(isinstance(r, Dropped) for r in results)
    assert counted >= dropped_by_receive  # open_data's drops are counted too


def test_a_hundred_thousand_mutated_datagrams_never_raise() -> None:
    a, b, samples = busy_pair()
    rng = Random(2024)
    results: list[Received] = []
    for i in range(100_000):
        roll = rng.random()
        if roll < 0.9:
            data = mutate(rng.choice(samples), rng)
        elif roll < 0.95:
            data = bytes([MAGIC, rng.randrange(8)]) + rng.randbytes(rng.randrange(200))
        else:
            data = rng.randbytes(rng.randrange(200))
        results += _feed((a, b), data, i * 1e-3)
        if i % 10_000 == 0:
            a.expire(i * 1e-3)
            b.expire(i * 1e-3)
    _drops_are_counted((a, b), results)
    kinds = {type(r) for r in results}
    assert kinds >= {Dropped, Reply, Plaintext}
    reasons = set(a.counters) | set(b.counters)
    assert reasons >= {"malformed", "bad_mac", "bad_aead", "unknown_index", "replay", "unknown_type"}


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    a, b, _ = _shared()
    _feed((a, b), data, 1.0)


@settings(max_examples=500)
@given(st.integers(0, 10), st.binary(max_size=300))
def test_framed_random_bytes_never_raise(kind: int, body: bytes) -> None:
    a, b, _ = _shared()
    _feed((a, b), bytes([MAGIC, kind]) + body, 1.0)


@settings(max_examples=500)
@given(st.randoms(use_true_random=False), st.integers(0, 1000))
def test_mutated_valid_datagrams_never_raise(rng: Random, pick: int) -> None:
    a, b, samples = _shared()
    _feed((a, b), mutate(samples[pick % len(samples)], rng), 1.0)


_SHARED: list[tuple[LinkSecurity, LinkSecurity, list[bytes]]] = []


def _shared() -> tuple[LinkSecurity, LinkSecurity, list[bytes]]:
    """One busy pair for all hypothesis examples: building one costs a dozen handshakes."""
    if not _SHARED:
        _SHARED.append(busy_pair())
    return _SHARED[0]
