"""I/O. Awaitable DHT operations: ``await client.get(key)`` on top of the sans-IO :class:`DhtNode`.

The node runtime owns the ``DhtNode`` and its event loop plumbing: it feeds the node datagrams and
timers, and drains ``node.next_event()``, handing every event to :meth:`DhtClient.dispatch`. The
client starts an operation on the node, parks an ``asyncio`` future under the operation id, and asks
the runtime (``wake``) to flush what the node now wants to send and to re-arm its timer. The
``OpCompleted`` event resolves the future. No sockets here, and no task of its own: the client
borrows the caller's task and the runtime's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .events import DhtEvent, OpCompleted, OpId, OpResult
from .node import DhtNode


class DhtClient:
    def __init__(self, node: DhtNode, clock: Callable[[], float], wake: Callable[[], None]) -> None:
        """``clock``: the runtime's ``now`` (the same clock it gives the node); ``wake``: makes the
        runtime flush the node's messages and re-arm its timer soon (it must not call back into the
        node synchronously from within an operation's start)."""
        self.node = node
        self._clock = clock
        self._wake = wake
        self._futures: dict[OpId, asyncio.Future[OpResult]] = {}

    @property
    def pending(self) -> int:
        return len(self._futures)

    async def create(self, key: bytes, value: bytes, ttl: int, *, refresh: bool = True) -> OpResult:
        return await self._run(lambda now: self.node.create(key, value, ttl, now, refresh=refresh))

    async def put(self, key: bytes, value: bytes, ttl: int, *, refresh: bool = True) -> OpResult:
        return await self._run(lambda now: self.node.put(key, value, ttl, now, refresh=refresh))

    async def get(self, key: bytes) -> OpResult:
        return await self._run(lambda now: self.node.get(key, now))

    async def delete(self, key: bytes, value: bytes) -> OpResult:
        return await self._run(lambda now: self.node.delete(key, value, now))

    async def _run(self, start: Callable[[float], OpId]) -> OpResult:
        future: asyncio.Future[OpResult] = asyncio.get_running_loop().create_future()
        op_id = start(self._clock())  # raises at once on a bad key, value or ttl
        self._futures[op_id] = future
        self._wake()
        try:
            return await future
        finally:
            self._futures.pop(op_id, None)

    def dispatch(self, event: DhtEvent) -> bool:
        """Resolve the future an ``OpCompleted`` belongs to. Returns False for other events (the
        runtime handles ``OwnershipLost``); an operation whose awaiter went away is ignored."""
        if not isinstance(event, OpCompleted):
            return False
        future = self._futures.pop(event.op_id, None)
        if future is not None and not future.done():
            future.set_result(event.result)
        return True

    def close(self) -> None:
        """Cancel every awaiting caller (shutdown)."""
        futures, self._futures = self._futures, {}
        for future in futures.values():
            future.cancel()
