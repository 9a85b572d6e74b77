"""Pure. How long to wait for a replica's answer before asking again, from the answer times this node
has measured (the smoothed round trip and its variation, as TCP's retransmission timer, RFC 6298).

Why not a fixed second. A routed request to a key's position crosses a few overlay hops of ~50 ms each
way, so most answers arrive within a few hundred milliseconds; a request lost to a dead link (a few per
cent of links under churn, until the overlay notices) is then waited for a full second, and its resend
two more, which made the slowest 1 % of gets take 3.3 s at N = 300, S = 84 s. Waiting
``srtt + 4 * rttvar`` instead resends as soon as an answer is overdue by the node's own measure. The
timer never exceeds the configured ``request_timeout_s`` (the old fixed wait, still the first guess
before any sample) and never drops below ``min_request_timeout_s``, so a run of fast answers cannot
turn every slightly slow one into a resend.

Only answers to a position's first send are samples (Karn's rule): the answer to a resent request may
belong to either send.
"""

from __future__ import annotations


class ResendTimer:
    ALPHA = 1 / 8
    BETA = 1 / 4

    def __init__(self, initial_s: float, floor_s: float) -> None:
        if not 0 < floor_s <= initial_s:
            raise ValueError("need 0 < floor_s <= initial_s")
        self.initial_s = initial_s
        self.floor_s = floor_s
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0

    def sample(self, rtt: float) -> None:
        """One measured answer time (seconds from the first send to the complete answer)."""
        if rtt < 0:
            return
        self.samples += 1
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
            return
        self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - rtt)
        self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * rtt

    def timeout(self) -> float:
        """The wait before the first resend; later resends wait twice as long each time."""
        if self.srtt is None:
            return self.initial_s
        return min(self.initial_s, max(self.floor_s, self.srtt + 4 * self.rttvar))
