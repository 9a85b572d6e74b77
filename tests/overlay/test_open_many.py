"""``Session.open_many``: many DATA datagrams of one session opened in one call into a sink's rooms,
with the same checks as ``Session.open`` (replay window, authenticity, state), in order."""

from __future__ import annotations

from bench.dataplane_micro import sessions
from overlay import SUITE_AES_256_GCM, SUITE_CHACHA20_POLY1305, Address

PREFIX = b"\x01\x11"


class Sink:
    """Rooms one after another in one buffer, up to ``limit`` bytes each; records what it got."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.buf = bytearray(1 << 21)
        self.view = memoryview(self.buf)
        self.limit = limit
        self.at = 0
        self.got: list[bytes] = []
        self.unused_calls = 0

    def room(self, size: int) -> int:
        return self.at if size <= self.limit else -1

    def opened(self, src: Address, size: int, now: float) -> None:
        self.got.append(bytes(self.buf[self.at : self.at + size]))
        self.at += size

    def unused(self) -> None:
        self.unused_calls += 1


def test_open_many_opens_in_order_and_refuses_what_open_refuses() -> None:
    for suite in (SUITE_AES_256_GCM, SUITE_CHACHA20_POLY1305):
        a, b = sessions(suite)
        texts = [PREFIX + bytes([i]) * (100 + 3000 * (i % 3)) for i in range(6)]
        sealed = [a.seal(t, 1.0) for t in texts]
        other = a.seal(b"\x02\x05control", 1.0)  # not the sink's: returned, in order
        big = a.seal(PREFIX + bytes(8000), 1.0)  # no room in a small sink: returned as a new object
        tampered = bytearray(a.seal(PREFIX + b"x", 1.0))
        tampered[-1] ^= 1
        sink = Sink(limit=7000)
        batch = [sealed[0], memoryview(sealed[1]), other, bytes(tampered), sealed[2], sealed[1], big]
        failed, others = b.open_many(batch, 2.0, sink, PREFIX)
        assert sink.got == texts[:3]
        assert others == [b"\x02\x05control", PREFIX + bytes(8000)]
        assert failed == [bytes(tampered), sealed[1]]  # not authentic; a replay within the batch
        assert sink.unused_calls == 2  # the tampered one and the control message gave their rooms back
        assert b.confirmed and b.last_received == 2.0
        failed, _ = b.open_many(sealed[3:] + sealed[:1], 3.0, sink, PREFIX)
        assert sink.got == texts[:6] and failed == [sealed[0]]
        b.close()
        failed, others = b.open_many(sealed, 4.0, sink, PREFIX)
        assert failed == sealed and not others
