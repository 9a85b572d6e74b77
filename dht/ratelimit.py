"""Pure. Per-peer token buckets: how many requests each peer may make of this node.

A bucket holds up to ``burst`` tokens and gains ``rate`` per second; a request spends one. Buckets of
peers not heard from for a while are forgotten least-recently-used first beyond ``max_peers``, so the
table stays bounded however many addresses send to us. A forgotten peer starts again with a full
bucket, which costs at most one burst.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    def __init__(self, rate: float, burst: float, max_peers: int) -> None:
        if rate <= 0 or burst < 1 or max_peers < 1:
            raise ValueError("rate, burst and max_peers must be positive")
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._buckets: OrderedDict[int, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, peer: int, now: float) -> bool:
        """Spend one of ``peer``'s tokens; False when it has none left."""
        tokens, last = self._buckets.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[peer] = (tokens, now)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return allowed
