"""One DhtNode against a capturing router double: the seam's contract, readiness after a
neighbourhood change, the answers to "do you count me?", and misuse of the API."""

from __future__ import annotations

from random import Random

import pytest

from dht import DhtConfig, DhtNode, Failed, Kind, OpCompleted, Reason, sign_record
from dht.codec import (
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
)
from overlay import (
    RING,
    Address,
    Delivered,
    NeighboursChanged,
    Service,
    clockwise,
    key_address,
    ring_distance,
)
from tests.dht.helpers import identity

CONFIG = DhtConfig()


class CapturingRouter:
    """A test double of the overlay's Router seam that records what the node sends."""

    def __init__(self, address: Address) -> None:
        self._address = address
        self.sent: list[tuple[Address, Message, bool]] = []

    @property
    def address(self) -> Address:
        return self._address

    def send(
        self,
        dest: Address,
        service: int,
        payload: bytes,
        now: float,
        *,
        exact: bool = True,
        detour: bool = False,
    ) -> None:
        assert service == Service.DHT
        self.sent.append((dest, decode(payload, CONFIG), exact))

    def ring_neighbours(self) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
        return (), ()

    def take(self) -> list[tuple[Address, Message, bool]]:
        sent, self.sent = self.sent, []
        return sent


def make_node(seed: int = 1, **config: float) -> tuple[DhtNode, CapturingRouter]:
    who = identity(seed)
    router = CapturingRouter(who.address)
    return DhtNode(router, who, DhtConfig(**config), Random(seed)), router  # type: ignore[arg-type]


def deliver(node: DhtNode, src: int, message: Message, now: float, *, dest: int | None = None) -> None:
    event = Delivered(
        Address(src), Address(dest or node.address), Service.DHT, encode(message), 3, dest is not None
    )
    node.handle_delivered(event, now)


WRITER = identity(99)


def write(key: bytes = b"k", seq: int = 1) -> Write:
    return Write(7, 0, sign_record(WRITER, Kind.PUT, key, b"v", ttl=60, seq=seq))


def test_router_and_identity_must_agree() -> None:
    with pytest.raises(ValueError):
        DhtNode(CapturingRouter(Address(1)), identity(1), CONFIG, Random(1))


@pytest.mark.parametrize(
    ("key", "value", "ttl"),
    [
        (b"", b"v", 60),
        (b"k" * 257, b"v", 60),
        (b"k", b"v" * 1025, 60),
        (b"k", b"v", 0),
        (b"k", b"v", 86_401),
        (b"k", b"v", 1.5),
        (b"k", b"v", True),
        ("k", b"v", 60),
    ],
)
def test_misuse_raises_at_once(key: bytes, value: bytes, ttl: int) -> None:
    node, router = make_node()
    with pytest.raises(ValueError):
        node.put(key, value, ttl, 0.0)
    assert router.sent == [] and node.next_event() is None


def test_an_operation_asks_every_position_routed() -> None:
    node, router = make_node()
    node.get(b"k", 0.0)
    sent = router.take()
    assert sorted(dest for dest, _, _ in sent) == sorted(key_address(b"k", i) for i in range(8))
    assert all(not exact for _, _, exact in sent)


def test_untrusted_bytes_never_raise_and_are_counted() -> None:
    node, router = make_node()
    for payload in (b"", b"\xc1", b"\x93\x01\x01", bytes(5000)):
        node.handle_delivered(Delivered(Address(5), node.address, Service.DHT, payload, 1, True), 0.0)
    node.handle_delivered(Delivered(Address(5), node.address, Service.TUNNEL, b"\xc1", 1, True), 0.0)
    assert node.stats.decode_errors == 4
    deliver(node, 5, WriteReply(12345, 0, Status.OK), 0.0)
    assert node.stats.stray_replies == 1
    assert router.sent == []


def test_a_node_is_not_ready_until_its_new_neighbours_synced() -> None:
    node, router = make_node()
    left, right = Address(node.address - 1000), Address(node.address + 1000)
    node.handle_neighbours(NeighboursChanged((left,), (right,)), 0.0)
    syncs = {dest: m.sync_id for dest, m, exact in router.take() if isinstance(m, Sync) and exact}
    assert set(syncs) == {left, right}
    deliver(node, 42, write(), 0.1)
    (reply,) = [m for _, m, _ in router.take() if isinstance(m, WriteReply)]
    assert reply.status is Status.NOT_READY and node.stats.not_ready == 1
    deliver(node, left, Store(0, syncs[left], 0, 1, ()), 0.2)
    deliver(node, 42, write(), 0.3)
    assert [m.status for _, m, _ in router.take() if isinstance(m, WriteReply)] == [Status.NOT_READY]
    deliver(node, Address(77), Store(0, syncs[right], 0, 1, ()), 0.3)  # not from the neighbour asked
    deliver(node, right, Store(0, syncs[right], 0, 1, ()), 0.4)
    deliver(node, 42, write(), 0.5)
    assert [m.status for _, m, _ in router.take() if isinstance(m, WriteReply)] == [Status.OK]


def test_a_silent_neighbour_delays_readiness_only_for_the_sync_timeout() -> None:
    node, router = make_node()
    node.handle_neighbours(NeighboursChanged((Address(node.address - 5),), ()), 10.0)
    assert node.get_timer() is not None and node.get_timer() <= 10.0 + CONFIG.sync_timeout_s  # type: ignore[operator]
    node.handle_timer(10.0 + CONFIG.sync_timeout_s)
    router.take()
    deliver(node, 42, write(), 12.5)
    assert [m.status for _, m, _ in router.take() if isinstance(m, WriteReply)] == [Status.OK]


def _key_near(address: int) -> bytes:
    for i in range(10_000):
        key = b"k%d" % i
        if ring_distance(address, key_address(key, 0)) < RING >> 8:
            return key
    raise AssertionError("no key near the node")


def _primary_with_known_holders(node: DhtNode) -> tuple[bytes, Address, list[Address]]:
    """A key whose position 0 is closest to ``node``, with neighbours placed so that the node knows
    its three holders exactly: itself, ``near[0]`` (beyond the position) and ``far[0]``."""
    key = _key_near(node.address)
    pos = key_address(key, 0)
    me = node.address
    d = ring_distance(me, pos)
    s = 1 if clockwise(me, pos) == d else -1
    near = [Address((me + s * 3 * d) % RING), Address((me + s * 5 * d) % RING)]
    far = [Address((me - s * 2 * d) % RING), Address((me - s * 4 * d) % RING)]
    left, right = (far, near) if s == 1 else (near, far)
    node.handle_neighbours(NeighboursChanged(tuple(left), tuple(right)), 0.0)
    node.handle_timer(CONFIG.sync_timeout_s)  # give up waiting for syncs: ready
    return key, pos, [near[0], far[0]]


def test_the_closest_node_tells_unsure_holders_whether_they_are_needed() -> None:
    node, router = make_node()
    key, pos, copies = _primary_with_known_holders(node)
    record = sign_record(WRITER, Kind.PUT, key, b"v", ttl=600, seq=1)
    assert node.store.write(pos, 0, record, 3.0).status is Status.OK
    digest = node.store.digest(pos, 3.0)
    router.take()
    stranger = Address((pos + RING // 2) % RING)

    def verdict(src: int, d: int) -> Verdict:
        deliver(node, src, Role(5, key, 0, d), 3.0, dest=pos)
        (reply,) = [m for _, m, _ in router.take() if isinstance(m, RoleReply)]
        return reply.verdict

    assert verdict(stranger, digest) is Verdict.UNNEEDED
    assert verdict(stranger, digest ^ 1) is Verdict.DIFFERS
    assert verdict(copies[0], digest) is Verdict.NEEDED
    assert verdict(copies[1], digest) is Verdict.NEEDED


def test_busy_when_too_many_operations_are_in_flight() -> None:
    node, _ = make_node(max_pending_ops=1)
    node.get(b"a", 0.0)
    busy = node.get(b"b", 0.0)
    event = node.next_event()
    assert isinstance(event, OpCompleted) and event.op_id == busy
    assert isinstance(event.result, Failed) and event.result.reason is Reason.BUSY


def test_a_position_beyond_the_neighbourhood_is_not_passed_on_to_neighbours() -> None:
    """A position outside the arc the neighbours span, where this node ranks among the three closest
    of the nodes it knows: the neighbours are not its holders, so nothing is pushed to them (under
    churn that spread positions along the ring); the node closest to it is asked instead, and its
    "unneeded" lets the position go."""
    node, router = make_node()
    me = node.address
    left = (Address((me - 1000) % RING), Address((me - 2000) % RING))
    right = (Address((me + 1000) % RING), Address((me + 2000) % RING))
    node.handle_neighbours(NeighboursChanged(left, right), 0.0)
    node.handle_timer(CONFIG.sync_timeout_s)
    router.take()
    key = next(
        k for i in range(10_000) if RING // 8 < clockwise(me, key_address(k := b"far%d" % i, 0)) < RING // 4
    )
    pos = key_address(key, 0)
    assert node.replicator.view.desired(pos) == [right[1], right[0], me]  # ranked, yet beyond the view
    assert not node.replicator.view.in_span(pos)
    record = sign_record(WRITER, Kind.PUT, key, b"v", ttl=600, seq=1)
    deliver(node, left[0], Store(9, 0, 0, 1, (PositionRecords(key, 0, (Held(record, 600),)),)), 3.0)
    sent = router.take()
    assert pos in node.store
    assert not [d for d, m, exact in sent if isinstance(m, Store) and exact], "pushed to a neighbour"
    (role,) = [(d, m, exact) for d, m, exact in sent if isinstance(m, Role)]
    assert role[0] == pos and not role[2]
    deliver(node, Address((pos + 5) % RING), RoleReply(role[1].req_id, Verdict.UNNEEDED), 3.1)
    assert pos not in node.store


def test_a_hand_over_from_a_non_neighbour_is_not_limited_like_a_flood_of_requests() -> None:
    """A node beyond our neighbourhood hands over 300 positions at once, each with a role question:
    all are answered (a shared bucket of ``peer_burst`` = 200 dropped a third). Its requests keep
    their own bucket, and a real flood of replication messages is still cut off."""
    node, router = make_node()
    stranger = 4242
    for i in range(300):
        deliver(node, stranger, Role(i + 1, b"k%d" % i, 0, 0), 1.0, dest=key_address(b"k%d" % i, 0))
    assert sum(isinstance(m, RoleReply) for _, m, _ in router.take()) == 300
    assert node.stats.rate_limited == 0
    for _ in range(250):
        deliver(node, stranger, write(), 1.0)
    assert node.stats.rate_limited == node.stats.rate_limited_requests == 50
    for i in range(1000):
        deliver(node, stranger, Role(i + 1, b"k", 0, 0), 1.0, dest=key_address(b"k", 0))
    assert node.stats.rate_limited - 50 == 1000 - (CONFIG.peer_handover_burst - 300)


def test_a_read_repair_is_resent_until_the_position_acknowledges_it() -> None:
    """A get's read repair is a write: routed to the position, sent again every ``push_timeout_s``
    until acknowledged (the first send may go into a link whose peer died unnoticed), and no more
    once the holder's ack comes back."""
    node, router = make_node()
    record = sign_record(WRITER, Kind.PUT, b"k", b"v", ttl=600, seq=1)
    pos = key_address(b"k", 5)
    node.send_repair(b"k", 5, Held(record, 600), 0.0)
    ((dest, store, exact),) = router.take()
    assert dest == pos and not exact and isinstance(store, Store) and store.batch_id != 0
    assert store.positions == (PositionRecords(b"k", 5, (Held(record, 600),)),)
    timer = node.get_timer()
    assert timer is not None and timer <= CONFIG.push_timeout_s
    node.handle_timer(timer)
    assert [(d, m) for d, m, e in router.take() if isinstance(m, Store)] == [(pos, store)]  # unanswered
    deliver(node, Address((pos + 5) % RING), StoreAck(store.batch_id, ()), timer + 0.1)
    for t in (timer + 2 * CONFIG.push_timeout_s, timer + 10 * CONFIG.push_timeout_s):
        node.handle_timer(t)
    assert not [m for _d, m, _e in router.take() if isinstance(m, Store)], "resent after its ack"
