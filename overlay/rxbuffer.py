"""Pure. How large a node's UDP receive buffer should be: a few milliseconds of what the node reads.

Why. The socket's receive buffer is the tunnel's queue whenever this node is the slower end of a
transfer: whatever waits in it delays every packet inside the tunnel, and what does not fit is dropped,
which TCP inside the tunnel reads as congestion. A buffer of fixed *bytes* cannot be right at every
rate. 128 KiB (256 KiB as the kernel counts) held ~4 ms at 0.4-0.5 Gbit/s, but at 3-4 Gbit/s over a
65535-byte underlay it held four 64 KiB datagrams, well under a millisecond: one burst of TCP's
super-frames overflowed it, and one TCP stream lost 12 % of its segments (BBR: 190,000 retransmitted
segments in 6 s; CUBIC halved its window at each loss and stayed at 2 Gbit/s). A large fixed buffer,
on the other hand, lets a slow receiver build a queue of tens of milliseconds (4 MiB at 0.4 Gbit/s:
19-93 ms of RTT inside the tunnel, docs/dataplane.md, phase 4).

So the buffer is sized in *time*: :data:`QUEUE_S` of the node's recent peak read rate, between a floor
(the old fixed size, for a quiet node) and a ceiling. It absorbs a burst at any rate, and a queue that
stands in it still drains within about ``QUEUE_S`` (the target CoDel uses). The rate is measured from the
bytes the driver read, over windows of at least :data:`WINDOW_S`; its peak decays with a half-life of
:data:`HALF_LIFE_S` once traffic slows, so the buffer shrinks back. A new size is proposed only when it
differs by a quarter from the current one (or reaches the floor or the ceiling): one ``setsockopt`` per
change of regime, not per window.
"""

from __future__ import annotations

QUEUE_S = 0.005
"""Seconds of the peak read rate the buffer holds."""
FLOOR = 128 << 10
"""The least size asked for (the kernel doubles what it is given, for its bookkeeping)."""
CEILING = 4 << 20
"""The most asked for: 4 MiB, 6 ms at 5 Gbit/s. The driver sets it with ``SO_RCVBUFFORCE`` where it may
(a stock kernel caps ``SO_RCVBUF`` at ``net.core.rmem_max``, 208 KiB)."""
WINDOW_S = 0.125
"""The shortest time over which a rate is measured (an eighth of a second: exact in binary)."""
HALF_LIFE_S = 2.0
"""How fast the remembered peak rate fades when traffic slows."""
HYSTERESIS = 0.25
"""The relative change below which the size is left alone."""


class ReceiveBufferSizer:
    """Proposes receive-buffer sizes from a running count of bytes read (see the module's docstring)."""

    __slots__ = ("_at", "_bytes", "ceiling", "floor", "peak_rate", "queue_s", "size")

    def __init__(self, *, queue_s: float = QUEUE_S, floor: int = FLOOR, ceiling: int = CEILING) -> None:
        if not 0 < floor <= ceiling:
            raise ValueError(f"receive buffer floor {floor} and ceiling {ceiling}: need 0 < floor <= ceiling")
        if queue_s <= 0:
            raise ValueError(f"receive buffer queue_s {queue_s}: must be positive")
        self.queue_s = queue_s
        self.floor = floor
        self.ceiling = ceiling
        self.size = floor
        """The size last proposed (the socket starts at the floor)."""
        self.peak_rate = 0.0
        """Bytes per second: the highest recent window's rate, decaying."""
        self._at: float | None = None
        self._bytes = 0

    def due(self, now: float) -> bool:
        """Whether a window has passed since the last measurement (cheap: one comparison)."""
        return self._at is None or now - self._at >= WINDOW_S

    def update(self, now: float, total_bytes: int) -> int | None:
        """Take the running count ``total_bytes`` of bytes read at ``now``; the size to set, or None
        when the buffer is right as it is (or no window has passed yet)."""
        at = self._at
        if at is None or total_bytes < self._bytes:  # the first reading, or a counter that restarted
            self._at, self._bytes = now, total_bytes
            return None
        elapsed = now - at
        if elapsed < WINDOW_S:
            return None
        rate = (total_bytes - self._bytes) / elapsed
        self._at, self._bytes = now, total_bytes
        self.peak_rate = max(rate, self.peak_rate * 0.5 ** (elapsed / HALF_LIFE_S))
        wanted = min(self.ceiling, max(self.floor, int(self.peak_rate * self.queue_s)))
        if wanted == self.size or (
            abs(wanted - self.size) < HYSTERESIS * self.size and wanted not in (self.floor, self.ceiling)
        ):
            return None
        self.size = wanted
        return wanted
