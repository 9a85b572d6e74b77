"""The data plane's fast path through two real overlay cores on a deterministic wire with a path MTU:
path MTU discovery with probes (silent drops and local EMSGSIZE), the batch sealing of application
messages, their delivery by a call, and recovery when the path shrinks without a word."""

from __future__ import annotations

from random import Random

import pytest

from overlay import (
    APP_HEADER,
    ASSUMED_PAYLOAD,
    CONFIRM_INTERVAL_S,
    DATA_OVERHEAD,
    Address,
    Delivered,
    Endpoint,
    Identity,
    MayFragment,
    OverlayConfig,
    OverlayNode,
    PmtuConfig,
    PmtuState,
    Service,
)
from overlay.relay import TunnelPath
from overlay.wire import Ping

SECRET = b"data path test network secret 0123"
EA: Endpoint = ("192.0.2.1", 5800)
EB: Endpoint = ("192.0.2.2", 5800)


class Collector:
    """An AppReceiver: what the fast path delivered by a call."""

    def __init__(self) -> None:
        self.got: list[tuple[Address, bytes]] = []

    def app_message(self, src: Address, plaintext: bytes, now: float) -> None:
        self.got.append((src, plaintext[APP_HEADER:]))


class Pair:
    """Node a (first of a new overlay) and node b (bootstrapping through a) on an instant wire that
    carries datagrams up to ``mtu`` bytes of UDP payload; larger ones vanish (``local`` False: a
    router in the middle drops them) or are refused at once as EMSGSIZE (``local`` True: the sender's
    own interface). A refused datagram that the core asks to send again with fragmentation allowed
    arrives whole, as the kernel's IP fragments would reassemble (counted in ``fragmented``)."""

    def __init__(self, mtu: int, *, local: bool = False) -> None:
        rng = Random(11)
        self.mtu = mtu
        self.local = local
        self.now = 0.0
        self.a = self._node(Identity.generate(rng), (), EA)
        self.b = self._node(Identity.generate(rng), (EA,), EB)
        self.by_endpoint = {EA: self.a, EB: self.b}
        self.events: list[object] = []
        self.dropped = 0
        self.fragmented: list[int] = []
        self.refused: list[bytes] = []
        self.probes_only = False

    def _node(self, identity: Identity, bootstrap: tuple[Endpoint, ...], me: Endpoint) -> OverlayNode:
        config = OverlayConfig(realm="dp", secret=SECRET, bootstrap=bootstrap)
        return OverlayNode(
            identity,
            config,
            Random(identity.address & 0xFFFF),
            self.now,
            local_endpoints=(me,),
            cache_cipher_contexts=True,
            pmtu=PmtuConfig(),
        )

    def pump(self) -> None:
        """Deliver everything queued, until nothing moves."""
        moved = True
        while moved:
            moved = False
            for src, me in ((self.a, EA), (self.b, EB)):
                for data, addr, _ttl in src.datagrams_to_send(self.now):
                    moved = True
                    self.deliver(src, me, data, addr)
                while (event := src.next_event()) is not None:
                    self.events.append(event)

    def deliver(self, src: OverlayNode, me: Endpoint, data: bytes, addr: Endpoint) -> None:
        if isinstance(data, MayFragment):
            assert not self.probes_only, "only probes were expected here"
            if len(data) > self.mtu:
                self.fragmented.append(len(data))  # DF off: the sender's kernel or a router cuts it
        elif len(data) > self.mtu:
            if not self.local:
                self.dropped += 1
                return
            if not src.datapath.too_big(addr, data, self.now):
                self.refused.append(bytes(data))
                return
            self.fragmented.append(len(data))
        self.by_endpoint[addr].receive_datagram(data, me, self.now)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        self.pump()
        while True:
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if not timers or min(timers) > end:
                self.now = end
                return
            self.now = max(self.now, min(timers))
            for node in (self.a, self.b):
                timer = node.get_timer()
                if timer is not None and timer <= self.now:
                    node.handle_timer(self.now)
            self.pump()

    def linked(self) -> Pair:
        self.run(5.0)
        link = self.a.table.get(self.b.address)
        assert link is not None and link.sessions and link.endpoint == EB
        return self

    def send(self, count: int = 3) -> list[bytes]:
        """Full-size data from a to b on the fast path, as the data plane sends it."""
        limit = self.a.datapath.direct_limit(self.b.address, self.now)
        payloads = [bytes([i]) * limit for i in range(count)]
        sealed = self.a.datapath.seal_direct(self.b.address, Service.IPOP, payloads, self.now)
        assert sealed is not None
        endpoint, datagrams = sealed
        assert endpoint == EB
        for datagram in datagrams:
            self.deliver(self.a, EA, datagram, endpoint)
        return payloads


def test_without_a_direct_link_there_is_no_fast_path() -> None:
    pair = Pair(1500)
    stranger = Identity.generate(Random(3)).address
    assert pair.a.datapath.direct_limit(stranger, 0.0) == 0
    assert pair.a.datapath.seal_direct(stranger, Service.IPOP, [b"x"], 0.0) is None


def test_probes_find_a_path_mtu_below_ethernet_and_data_then_fits() -> None:
    pair = Pair(1400).linked()
    peer = pair.b.address
    assert pair.a.datapath.direct_limit(peer, pair.now) == ASSUMED_PAYLOAD - DATA_OVERHEAD - APP_HEADER
    pair.run(10.0)  # a round of probes, the unanswered ones three times, the midpoints
    path = pair.a.datapath.mtus.path(peer)  # type: ignore[union-attr]
    assert path is not None and path.state is PmtuState.COMPLETE
    assert 1400 - 16 <= path.mtu <= 1400
    limit = pair.a.datapath.direct_limit(peer, pair.now)
    assert limit == path.mtu - DATA_OVERHEAD - APP_HEADER
    collector = Collector()
    pair.b.datapath.receivers[Service.IPOP] = collector
    dropped = pair.dropped
    payloads = pair.send(4)
    assert pair.dropped == dropped  # every datagram fitted the path
    assert collector.got == [(pair.a.address, p) for p in payloads]
    assert not [e for e in pair.events if isinstance(e, Delivered) and e.service == Service.IPOP]
    status = pair.a.status(pair.now)["links"][0]["pmtu"]
    assert status["state"] == "complete" and status["mtu"] == path.mtu


def test_a_local_interface_refusal_bounds_the_search_at_once() -> None:
    pair = Pair(1300, local=True).linked()
    peer = pair.b.address
    pair.a.datapath.direct_limit(peer, pair.now)
    pair.run(0.5)  # no probe timed out yet: EMSGSIZE alone settled the upper bound
    path = pair.a.datapath.mtus.path(peer)  # type: ignore[union-attr]
    assert path is not None and path.high < 1400
    pair.run(10.0)
    assert path.state is PmtuState.COMPLETE and 1300 - 16 <= path.mtu <= 1300
    assert pair.a.counters["tx_too_big"] > 0


def _dht_messages(pair: Pair) -> list[bytes]:
    return [e.payload for e in pair.events if isinstance(e, Delivered) and e.service == Service.DHT]


@pytest.mark.parametrize("local", [False, True])
def test_a_message_larger_than_its_link_carries_goes_with_fragmentation_allowed(local: bool) -> None:
    """DF is on for every datagram, yet only the data plane's are sized to the path: a DHT message of
    3 kB was dropped by a router with a smaller MTU (or refused by the sender's interface), and so was
    every resend. Marked ``MayFragment``, it goes with DF off; the path MTU probes never do."""
    pair = Pair(1300, local=local).linked()
    peer = pair.b.address
    pair.a.datapath.direct_limit(peer, pair.now)  # data on the link: the path MTU search starts
    pair.probes_only = True
    pair.run(10.0)
    pair.probes_only = False
    path = pair.a.datapath.mtus.path(peer)  # type: ignore[union-attr]
    assert path is not None and path.state is PmtuState.COMPLETE and 1300 - 16 <= path.mtu <= 1300
    assert not pair.fragmented  # too big probes were lost or refused, none went through in pieces
    pair.events.clear()
    too_big = pair.a.counters["tx_too_big"]
    big = bytes(range(256)) * 12
    pair.a.send(peer, Service.DHT, big, pair.now)
    small = b"fits"
    pair.a.send(peer, Service.DHT, small, pair.now)
    pair.pump()
    assert _dht_messages(pair) == [big, small]
    assert len(pair.fragmented) == 1 and pair.fragmented[0] > 3072
    assert pair.a.counters["tx_fragmented"] == 1 and pair.a.counters["tx_too_big"] == too_big


def test_a_refused_datagram_is_sent_again_fragmented_unless_it_is_a_probe() -> None:
    """The interface's MTU shrinks below the link's confirmed size: a message that fitted the link is
    refused with EMSGSIZE, and sent again at once with fragmentation allowed. A probe is known by its
    DATA header, not its size: a message of a refused probe's very size is no probe."""
    pair = Pair(1300, local=True).linked()
    peer = pair.b.address
    pair.a.datapath.direct_limit(peer, pair.now)
    pair.run(10.0)
    confirmed = pair.a.datapath.confirmed_size(peer)
    assert confirmed is not None and confirmed > 1250 and pair.refused
    pair.mtu = 1250
    pair.events.clear()
    message = bytes(confirmed - DATA_OVERHEAD - APP_HEADER)  # fits the link as measured
    pair.a.send(peer, Service.DHT, message, pair.now)
    pair.pump()
    assert _dht_messages(pair) == [message] and pair.fragmented == [confirmed]
    assert pair.a.counters["tx_fragmented"] == 1
    probe = pair.refused[0]
    assert not pair.a.datapath.too_big(EB, probe, pair.now)
    assert pair.a.datapath.too_big(EB, bytes(len(probe)), pair.now)


def test_a_path_that_shrinks_silently_is_found_again_by_confirmation_probes() -> None:
    pair = Pair(1500).linked()
    peer = pair.b.address
    pair.a.datapath.direct_limit(peer, pair.now)
    pair.run(30.0)
    path = pair.a.datapath.mtus.path(peer)  # type: ignore[union-attr]
    assert path is not None and path.state is PmtuState.COMPLETE and path.mtu > 1400
    pair.mtu = 1280  # a router in the middle now drops anything bigger, without a word
    start = pair.now
    while pair.now - start < 30.0 and path.mtu > 1280:
        pair.send(1)  # the data keeps coming, and vanishing
        pair.run(0.5)
    assert path.mtu <= 1280
    assert pair.now - start <= CONFIRM_INTERVAL_S + 3 * 1.0 + 3.0
    link = pair.a.table.get(peer)
    assert link is not None and link.sessions  # the link itself never went down


def test_a_new_endpoint_measures_the_new_path() -> None:
    pair = Pair(1500).linked()
    peer = pair.b.address
    pair.a.datapath.direct_limit(peer, pair.now)
    pair.run(30.0)  # silent drops: each step of the search above 1472 waits for three timeouts
    path = pair.a.datapath.mtus.path(peer)  # type: ignore[union-attr]
    assert path is not None and path.state is PmtuState.COMPLETE
    link = pair.a.table.get(peer)
    assert link is not None
    pair.a.datapath.endpoint_changed(link, pair.now)
    assert path.state in (PmtuState.BASE, PmtuState.SEARCHING)
    pair.run(30.0)
    assert path.state is PmtuState.COMPLETE and 1500 - 16 <= path.mtu <= 1500


def test_probes_and_acknowledgements_that_lie_are_ignored() -> None:
    pair = Pair(1500).linked()
    link = pair.b.table.get(pair.a.address)
    assert link is not None
    sent_before = pair.b.counters["tx_datagrams"]
    # a probe that claims a size other than its own is not acknowledged
    pair.b.datapath.on_probe(link, 0x04, b"\x04\x00\x00\x10\x00" + bytes(100), pair.now)
    assert pair.b.counters["tx_datagrams"] == sent_before
    pair.b.datapath.on_probe(link, 0x05, b"\x05\x00", pair.now)  # too short to name a size
    assert pair.b.counters["rx_malformed"] == 1


def test_a_learnt_session_is_taken_by_the_fast_receive_and_the_rest_goes_the_ordinary_way() -> None:
    pair = Pair(1500).linked()
    collector = Collector()
    pair.b.datapath.receivers[Service.IPOP] = collector
    limit = pair.a.datapath.direct_limit(pair.b.address, pair.now)
    sealed = pair.a.datapath.seal_direct(
        pair.b.address, Service.IPOP, [b"one", b"two", b"x" * limit], pair.now
    )
    assert sealed is not None
    first, second, third = sealed[1]
    assert not pair.b.datapath.receive(first, EA, pair.now)  # unknown yet: the node's path ...
    pair.b.receive_datagram(first, EA, pair.now)  # ... which delivers it and teaches the data path
    assert pair.b.datapath.receive(second, EA, pair.now)
    assert not pair.b.datapath.receive(third, ("192.0.2.9", 5800), pair.now)  # another endpoint
    assert pair.b.datapath.receive(third, EA, pair.now)
    assert [payload for _, payload in collector.got] == [b"one", b"two", b"x" * limit]
    assert not pair.b.datapath.receive(second, EA, pair.now)  # a replay does not open
    pair.b.receive_datagram(second, EA, pair.now)
    assert pair.b.security.counters["replay"] == 1 and len(collector.got) == 3
    assert pair.b.datapath.rx_datagrams == 2
    link = pair.a.table.get(pair.b.address)
    assert link is not None
    pair.b.datagrams_to_send(pair.now)
    pair.a.send_control(link, Ping(7), pair.now)  # control traffic (and probes) of a learnt session too
    for data, _, _ in pair.a.datagrams_to_send(pair.now):
        assert pair.b.datapath.receive(data, EA, pair.now)
    assert pair.b.datagrams_to_send(pair.now)  # the Pong, and the probes' answers
    pair.b.drop_link(pair.b.table.get(pair.a.address), "test", pair.now)  # type: ignore[arg-type]
    assert not pair.b.datapath.receive(third, EA, pair.now)


def test_only_a_real_change_of_path_restarts_the_path_mtu_search() -> None:
    """``path_changed`` says whether the link moved; the node restarts the path MTU search only then. A
    packet through a tunnel on a direct link (the peer still tunnels) is no reason to: one node of the
    NAT grid restarted its search 60,000 times in ten seconds, each probe acknowledgement that came back
    another way setting off the next round, and lost its other links meanwhile."""
    pair = Pair(1500).linked()
    peer, me = pair.b.address, pair.a
    pair.a.datapath.direct_limit(peer, pair.now)  # data to send: the search starts
    pair.run(10.0)
    link = me.table.get(peer)
    assert link is not None and link.endpoint == EB
    assert not me.connector.path_changed(link, TunnelPath(peer, None), pair.now)
    assert link.endpoint == EB
    roamed = ("192.0.2.99", 5800)
    assert me.connector.path_changed(link, roamed, pair.now) and link.endpoint == roamed
    link.endpoint = None  # tunnelled: a direct packet proves one direction only
    assert not me.connector.path_changed(link, EB, pair.now)
    assert me.counters["rx_direct_on_tunnel"] == 1


def test_views_of_one_gro_buffer_are_opened_in_place_and_nothing_keeps_the_buffer() -> None:
    """The driver hands the data path memoryviews of a UDP_GRO read (no copy per datagram); the
    payloads delivered must survive the buffer being overwritten by the next read."""
    pair = Pair(1500).linked()
    collector = Collector()
    pair.b.datapath.receivers[Service.IPOP] = collector
    payloads = [bytes([i]) * 600 for i in range(4)]
    sealed = pair.a.datapath.seal_direct(pair.b.address, Service.IPOP, payloads, pair.now)
    assert sealed is not None
    first, *rest = sealed[1]
    pair.b.receive_datagram(first, EA, pair.now)  # teaches the data path the session
    size = len(rest[0])
    assert all(len(d) == size for d in rest)
    buffer = bytearray(b"".join(rest))
    view = memoryview(buffer)
    parts = [view[i : i + size] for i in range(0, len(buffer), size)]
    tampered = bytearray(rest[0])
    tampered[-1] ^= 1
    assert not pair.b.datapath.receive(memoryview(tampered), EA, pair.now)  # not authentic: refused
    assert all(pair.b.datapath.receive(part, EA, pair.now) for part in parts)
    buffer[:] = bytes(len(buffer))  # the next read reuses the buffer
    assert [payload for _, payload in collector.got] == payloads


class Sink:
    """An AppSink with one buffer: records each message decrypted into it and every room given back."""

    def __init__(self) -> None:
        self.buf = bytearray(b"\xee" * 4096)
        self.view = memoryview(self.buf)
        self.at = 100
        self.got: list[tuple[Address, bytes]] = []
        self.unused_calls = 0

    def room(self, size: int) -> int:
        return self.at if self.at + size <= len(self.buf) else -1

    def opened(self, src: Address, size: int, now: float) -> None:
        self.got.append((src, bytes(self.buf[self.at + APP_HEADER : self.at + size])))

    def unused(self) -> None:
        self.unused_calls += 1
        self.buf[self.at :] = b"\xee" * (len(self.buf) - self.at)  # what the room covered, restored


def test_a_sink_gets_its_service_decrypted_in_place_and_everything_else_goes_as_before() -> None:
    pair = Pair(1500).linked()
    sink, collector = Sink(), Collector()
    pair.b.datapath.receivers[Service.IPOP] = collector
    pair.b.datapath.set_sink(Service.IPOP, sink)
    payloads = [bytes([i]) * 600 for i in range(3)] + [bytes(5000)]  # the last does not fit the sink
    sealed = pair.a.datapath.seal_direct(pair.b.address, Service.IPOP, payloads[:3], pair.now)
    big = pair.a.datapath.seal_direct(pair.b.address, Service.IPOP, payloads[3:], pair.now)
    other = pair.a.datapath.seal_direct(pair.b.address, Service.IPOP_CONTROL, [b"control"], pair.now)
    assert sealed is not None and big is not None and other is not None
    first, second, third = sealed[1]
    pair.b.receive_datagram(first, EA, pair.now)  # teaches the data path the session
    assert collector.got == [(pair.a.address, payloads[0])] and not sink.got
    tampered = bytearray(second)
    tampered[-1] ^= 1
    assert not pair.b.datapath.receive(bytes(tampered), EA, pair.now)  # not authentic
    assert sink.unused_calls == 1 and sink.buf == bytearray(b"\xee" * 4096)
    assert pair.b.datapath.receive(second, EA, pair.now)
    assert pair.b.datapath.receive(memoryview(third), EA, pair.now)
    assert sink.got == [(pair.a.address, payloads[1]), (pair.a.address, payloads[2])]
    assert pair.b.datapath.receive(big[1][0], EA, pair.now)  # no room: opened the ordinary way
    assert collector.got[-1] == (pair.a.address, payloads[3])
    pair.b.datapath.receive(other[1][0], EA, pair.now)  # another service: copied out, room given back
    assert sink.unused_calls == 2 and len(sink.got) == 2
    link = pair.a.table.get(pair.b.address)
    session = pair.a.sending_session(link) if link is not None else None
    assert session is not None
    sink.buf[sink.at : sink.at + 2] = bytes((1, Service.IPOP))  # what a stale room could hold
    b_link = pair.b.table.get(pair.a.address)
    assert b_link is not None
    app_at = b_link.last_app
    assert pair.b.datapath.receive(session.seal(b"", pair.now + 1), EA, pair.now + 1)  # a keepalive
    assert len(sink.got) == 2 and pair.b.datapath.rx_datagrams == 5
    assert b_link.last_rx == pair.now + 1 and b_link.last_app == app_at  # alive, but not in use
