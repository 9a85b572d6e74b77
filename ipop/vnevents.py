"""Pure. The seam between the virtual network's core and its I/O shell: what the core asks for.

The core (:mod:`ipop.vnet_core`) writes frames to the TAP device and sends packets on the overlay
through :class:`Outputs` at once (these are the data plane: a call each, no objects in between), and
asks for the slow things — DHT operations and upstream DNS queries — with :class:`DhtRequest` and
:class:`ForwardQuery`, each carrying a token. The shell runs them and hands the outcome back with the
same token (``core.dht_done(token, result, now)``, ``core.dns_forwarded(token, reply, now)``).

:class:`DhtOps` keeps the continuation of every DHT request the core started, so that each part of the
core (allocation, names, membership, lookups) says what happens next right where it asks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dht import Failed, OpResult, Reason
from overlay import Address

OP_CREATE, OP_PUT, OP_GET, OP_DELETE = "create", "put", "get", "delete"
OPS = (OP_CREATE, OP_PUT, OP_GET, OP_DELETE)


@dataclass(frozen=True, slots=True)
class DhtRequest:
    """Run one DHT operation and answer with ``core.dht_done(token, result, now)``."""

    token: int
    op: str
    """``create``, ``put``, ``get`` or ``delete``."""
    key: bytes
    value: bytes = b""
    ttl: int = 0
    """Seconds, for create and put."""
    refresh: bool = True
    """For create and put: the DHT keeps the record alive until it is deleted."""


@dataclass(frozen=True, slots=True)
class ForwardQuery:
    """Ask the upstream resolvers ``query`` (a DNS query's bytes) and answer with
    ``core.dns_forwarded(token, reply_or_None, now)``."""

    token: int
    query: bytes


Request = DhtRequest | ForwardQuery


class Outputs(Protocol):
    """What the core does to the world; the shell implements it (a test, with lists)."""

    def write_tap(self, frame: bytes) -> None:
        """Give a frame to the local machine through the TAP device."""
        ...

    def send(self, dest: Address, service: int, payload: bytes) -> None:
        """Send ``payload`` to the node ``dest`` on the overlay (best effort)."""
        ...

    def request(self, request: Request) -> None:
        """Start a DHT operation or an upstream DNS query; the answer comes back later."""
        ...


Then = Callable[[OpResult, float], None]
"""What to do with a DHT operation's result, at time ``now``."""


class DhtOps:
    """DHT requests of the core with their continuations, by token."""

    def __init__(self, outputs: Outputs) -> None:
        self._outputs = outputs
        self._next = 0
        self._pending: dict[int, Then] = {}
        self.started = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def next_token(self) -> int:
        self._next += 1
        return self._next

    def start(
        self, op: str, key: bytes, then: Then, *, value: bytes = b"", ttl: int = 0, refresh: bool = True
    ) -> int:
        if op not in OPS:
            raise ValueError(f"unknown DHT operation {op!r}")
        token = self.next_token()
        self._pending[token] = then
        self.started += 1
        self._outputs.request(DhtRequest(token, op, key, value, ttl, refresh))
        return token

    def done(self, token: int, result: OpResult, now: float) -> None:
        """Run the continuation of ``token``. An unknown token is our own bug: it raises."""
        then = self._pending.pop(token, None)
        if then is None:
            raise KeyError(f"no DHT request with token {token}")
        if isinstance(result, Failed):
            self.failed += 1
        then(result, now)

    def cancel_all(self, now: float, why: str) -> None:
        """Fail every pending request (the shell is stopping, or the DHT went away)."""
        pending, self._pending = self._pending, {}
        for then in pending.values():
            then(Failed(Reason.NO_QUORUM, why), now)
