"""Pure. STUN Binding client transactions over UDP, retransmitted as RFC 8489 section 6.2.1 says.

Theory of operation. A :class:`StunTransaction` sends a Binding request at once and again after RTO,
2*RTO, 4*RTO, ... (RTO starts at 500 ms and doubles), ``max_requests`` times in all (Rc = 7); after the
last one it waits ``final_wait_factor`` * RTO (Rm = 16) for an answer, then gives up. A response is
matched by its transaction id alone, not by source address: an RFC 5780 CHANGE-REQUEST is answered from
a different address on purpose. The states and their transitions, in one place::

    WAITING --success response----------------------> SUCCEEDED
    WAITING --error response, or success response
              with unknown comprehension-required
              attributes (section 6.3.3)-------------> FAILED
    WAITING --timer after the last retransmission----> TIMED_OUT

A :class:`StunClient` multiplexes many transactions over one socket (the overlay's own, so that the
mapping it discovers is the one the overlay's peers use). It follows the sans-IO shape of the house:
``receive(data, src, now)``, ``datagrams_to_send(now)``, ``get_timer()``, ``handle_timer(now)`` and
``next_event()``. Transaction ids come from the injected ``rng``.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum
from random import Random

from .common import DecodeError, Endpoint
from .stun import (
    METHOD_BINDING,
    TRANSACTION_ID_BYTES,
    StunClass,
    StunMessage,
    binding_request,
    decode,
    is_stun,
)

log = logging.getLogger(__name__)

DEFAULT_RTO = 0.5
"""RFC 8489 section 6.2.1: the initial retransmission timeout SHOULD be 500 ms on a fixed line."""
DEFAULT_MAX_REQUESTS = 7
"""Rc: requests sent in all before giving up (RFC 8489 default)."""
DEFAULT_FINAL_WAIT_FACTOR = 16
"""Rm: after the last request, wait Rm * RTO (the initial RTO) for the answer (RFC 8489 default)."""
MAX_PENDING = 64
"""Concurrent transactions a client keeps; discovery needs a handful, and a bound keeps a confused
caller from growing the table without end."""


class TransactionState(Enum):
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed-out"


@dataclass(frozen=True, slots=True)
class StunResult:
    """The outcome of one Binding transaction (also the event a :class:`StunClient` emits)."""

    server: Endpoint
    transaction_id: bytes
    state: TransactionState
    mapped: Endpoint | None = None
    """Our endpoint as the server saw it (success only)."""
    source: Endpoint | None = None
    """Where the response came from (differs from ``server`` after a CHANGE-REQUEST)."""
    response_origin: Endpoint | None = None
    other_address: Endpoint | None = None
    error: tuple[int, str] | None = None
    rtt: float | None = None
    """Round-trip time, only when the request was not retransmitted (Karn's rule: an answer to a
    retransmitted request cannot be attributed to one send)."""
    change: int = 0
    """The CHANGE-REQUEST flags this transaction asked for."""


class StunTransaction:
    """One Binding request and its retransmissions. See the module docstring for the schedule."""

    def __init__(
        self,
        server: Endpoint,
        rng: Random,
        now: float,
        *,
        change: int = 0,
        software: str | None = None,
        rto: float = DEFAULT_RTO,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        final_wait_factor: float = DEFAULT_FINAL_WAIT_FACTOR,
    ) -> None:
        if rto <= 0 or max_requests < 1 or final_wait_factor <= 0:
            raise ValueError("rto and final_wait_factor must be positive, max_requests at least 1")
        self.server = server
        self.change = change
        self.transaction_id = rng.randbytes(TRANSACTION_ID_BYTES)
        self.state = TransactionState.WAITING
        self.result: StunResult | None = None
        self._request = binding_request(self.transaction_id, software=software, change=change)
        self._rto = rto
        self._initial_rto = rto
        self._max_requests = max_requests
        self._final_wait = final_wait_factor * rto
        self._sent = 0
        self._first_sent_at = now
        self._next_at: float | None = now  # first send is due at once

    @property
    def requests_sent(self) -> int:
        return self._sent

    def get_timer(self) -> float | None:
        return self._next_at if self.state is TransactionState.WAITING else None

    def handle_timer(self, now: float) -> None:
        """Past the deadline after the last request: time out. (Retransmissions are produced by
        :meth:`datagrams_to_send`; calling this early does nothing.)"""
        if self._next_at is None or now < self._next_at or self.state is not TransactionState.WAITING:
            return
        if self._sent >= self._max_requests:
            self._finish(
                StunResult(self.server, self.transaction_id, TransactionState.TIMED_OUT, change=self.change)
            )

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Endpoint]]:
        if self.state is not TransactionState.WAITING or self._next_at is None or now < self._next_at:
            return []
        if self._sent >= self._max_requests:
            return []
        if self._sent == 0:
            self._first_sent_at = now
        self._sent += 1
        if self._sent < self._max_requests:
            self._next_at = now + self._rto
            self._rto *= 2
        else:
            self._next_at = now + self._final_wait
        return [(self._request, self.server)]

    def receive(self, message: StunMessage, src: Endpoint, now: float) -> bool:
        """Offer a decoded message; True if it answered this transaction (it is then finished)."""
        if (
            self.state is not TransactionState.WAITING
            or message.transaction_id != self.transaction_id
            or message.method != METHOD_BINDING
            or message.cls not in (StunClass.SUCCESS, StunClass.ERROR)
        ):
            return False
        rtt = now - self._first_sent_at if self._sent == 1 else None
        if message.cls is StunClass.SUCCESS and not message.unknown_required and message.mapped_endpoint:
            state = TransactionState.SUCCEEDED
            error = None
        else:
            state = TransactionState.FAILED
            error = message.error or (
                (0, f"unknown attributes {list(message.unknown_required)}")
                if message.unknown_required
                else (0, "success response without a mapped address")
            )
        self._finish(
            StunResult(
                self.server,
                self.transaction_id,
                state,
                mapped=message.mapped_endpoint if state is TransactionState.SUCCEEDED else None,
                source=src,
                response_origin=message.response_origin,
                other_address=message.other_address,
                error=error,
                rtt=rtt,
                change=self.change,
            )
        )
        return True

    def _finish(self, result: StunResult) -> None:
        self.state = result.state
        self.result = result
        self._next_at = None
        log.debug("STUN %s to %s: %s", self.transaction_id.hex(), self.server, result.state.value)


class StunClient:
    """Binding transactions sharing one socket. ``receive`` takes any datagram and returns True if it
    was STUN (answered or not); malformed STUN is counted in ``decode_errors`` and dropped."""

    __slots__ = (
        "_events",
        "_final_wait_factor",
        "_max_requests",
        "_pending",
        "_rng",
        "_rto",
        "_software",
        "decode_errors",
        "unmatched",
    )

    def __init__(
        self,
        rng: Random,
        *,
        software: str | None = None,
        rto: float = DEFAULT_RTO,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        final_wait_factor: float = DEFAULT_FINAL_WAIT_FACTOR,
    ) -> None:
        self._rng = rng
        self._software = software
        self._rto = rto
        self._max_requests = max_requests
        self._final_wait_factor = final_wait_factor
        self._pending: dict[bytes, StunTransaction] = {}
        self._events: deque[StunResult] = deque()
        self.decode_errors = 0
        self.unmatched = 0

    def request(self, server: Endpoint, now: float, *, change: int = 0) -> bytes:
        """Start a Binding transaction to ``server``; returns its transaction id."""
        if len(self._pending) >= MAX_PENDING:
            raise RuntimeError(f"more than {MAX_PENDING} STUN transactions outstanding")
        txn = StunTransaction(
            server,
            self._rng,
            now,
            change=change,
            software=self._software,
            rto=self._rto,
            max_requests=self._max_requests,
            final_wait_factor=self._final_wait_factor,
        )
        self._pending[txn.transaction_id] = txn
        return txn.transaction_id

    def pending(self) -> int:
        return len(self._pending)

    def expects(self, data: bytes) -> bool:
        """Whether ``data`` is STUN with the id of one of our open transactions (two clients can share
        a socket: the datagram goes to the one that expects it)."""
        return is_stun(data) and bytes(data[8 : 8 + TRANSACTION_ID_BYTES]) in self._pending

    def receive(self, data: bytes, src: Endpoint, now: float) -> bool:
        if not is_stun(data):
            return False
        try:
            message = decode(data)
        except DecodeError as exc:
            self.decode_errors += 1
            log.debug("bad STUN datagram from %s: %s", src, exc)
            return True
        txn = self._pending.get(message.transaction_id)
        if txn is None or not txn.receive(message, src, now):
            self.unmatched += 1
            return True
        self._collect(txn)
        return True

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Endpoint]]:
        out: list[tuple[bytes, Endpoint]] = []
        for txn in self._pending.values():
            out.extend(txn.datagrams_to_send(now))
        return out

    def get_timer(self) -> float | None:
        timers = [t for t in (txn.get_timer() for txn in self._pending.values()) if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for txn in list(self._pending.values()):
            txn.handle_timer(now)
            if txn.state is not TransactionState.WAITING:
                self._collect(txn)

    def next_event(self) -> StunResult | None:
        return self._events.popleft() if self._events else None

    def _collect(self, txn: StunTransaction) -> None:
        self._pending.pop(txn.transaction_id, None)
        if txn.result is not None:
            self._events.append(txn.result)
