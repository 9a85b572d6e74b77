"""Pure. One phase of a DHT operation: a request to each of the R positions of a key, one answer
expected per position, and the schedule of resends to silent positions (see the theory of operation in
:mod:`dht.ops`, which runs phases). Kept apart from the operations so that the timing of requests, which
:mod:`dht.rtt` feeds, can be read and tested on its own."""

from __future__ import annotations

from enum import Enum

from .codec import Held
from .config import DhtConfig


class SlotState(Enum):
    OPEN = "open"
    DONE = "done"
    GONE = "gone"


class Slot:
    """One position's progress within a phase."""

    __slots__ = (
        "answered_at",
        "expected",
        "first_sent",
        "parts",
        "provisional",
        "resend_at",
        "resent",
        "sends",
        "state",
    )

    def __init__(self, now: float) -> None:
        self.state = SlotState.OPEN
        self.sends = 0
        self.first_sent = now
        self.resent = False
        """Sent more than once: its answer's time is no sample (Karn's rule)."""
        self.resend_at = now
        self.parts: dict[int, tuple[Held, ...]] = {}
        self.expected = 0
        self.provisional: list[Held] | None = None
        self.answered_at: float | None = None
        """When its complete answer arrived (gets): what the tail analysis of ``ipop.gettail`` reads."""


class Phase:
    """One request to every position, with its resend schedule."""

    def __init__(self, config: DhtConfig, req_id: int, now: float, timeout: float | None = None) -> None:
        self.config = config
        self.req_id = req_id
        self.timeout = config.request_timeout_s if timeout is None else timeout
        """Wait before the first resend to a silent position; each later one waits twice as long."""
        self.last_send_s = config.request_timeout_s * (2 ** (config.request_attempts - 1) - 1)
        """When the fixed schedule (1 s, then 2 s more) sent last. A shorter measured wait adds early
        resends but keeps sending until this late: a request lost to a dead link goes the same way
        when resent at once, and only a late resend finds the route repaired (with three sends all
        within 1.2 s, gets failed for want of answers 7 times in 1,210 at N = 300, S = 84, against
        once with the fixed schedule)."""
        self.slots = [Slot(now) for _ in range(config.replicas)]
        self.deadline = now + config.op_timeout_s

    def open_count(self) -> int:
        return sum(s.state is SlotState.OPEN for s in self.slots)

    def due(self, now: float) -> list[int]:
        """Positions to send to now; slots out of sends (or of time) are given up. A slot gets
        ``request_attempts`` sends, and more while the next one would still come no later than
        ``last_send_s`` after its first."""
        out = []
        c = self.config
        for index, slot in enumerate(self.slots):
            if slot.state is not SlotState.OPEN:
                continue
            if now >= self.deadline:
                slot.state = SlotState.GONE
            elif slot.resend_at <= now:
                if slot.sends >= c.request_attempts and now - slot.first_sent > self.last_send_s:
                    slot.state = SlotState.GONE
                    continue
                if slot.sends == 0:
                    slot.first_sent = now
                else:
                    slot.resent = True
                slot.sends += 1
                slot.resend_at = now + self.timeout * 2 ** (slot.sends - 1)
                if slot.sends >= c.request_attempts and slot.resend_at - slot.first_sent > self.last_send_s:
                    slot.resend_at = self.deadline  # the last send: listen for it until the end
                out.append(index)
        return out

    def answer_time(self, index: int, now: float) -> float | None:
        """Seconds from the position's only send to its answer, or None when it was sent again."""
        slot = self.slots[index]
        return None if slot.resent or slot.sends == 0 else now - slot.first_sent

    def retry_soon(self, index: int, now: float, delay: float) -> None:
        """Ask this position again after ``delay`` without spending one of its attempts."""
        slot = self.slots[index]
        slot.sends = min(slot.sends, self.config.request_attempts - 1)
        slot.resend_at = now + delay

    def next_deadline(self) -> float:
        times = [s.resend_at for s in self.slots if s.state is SlotState.OPEN]
        return min([*times, self.deadline]) if times else self.deadline
