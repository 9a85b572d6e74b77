"""The asyncio glue: awaiting operation results through DhtClient, driven like a node runtime."""

from __future__ import annotations

import asyncio

import pytest

from dht import Created, DhtClient, DhtConfig, DhtEvent, OpCompleted, Stored, Values
from tests.dht.ring import Member, Ring


def client_on_ring() -> tuple[Ring, Member, DhtClient, asyncio.Event]:
    ring = Ring(DhtConfig(), seed=12)
    ring.add(20)
    ring.run(3)
    member = ring.members[sorted(ring.members)[0]]
    woken = asyncio.Event()
    client = DhtClient(member.node, clock=lambda: ring.now, wake=woken.set)

    def drain(m: Member, event: DhtEvent) -> None:
        if m is member:
            client.dispatch(event)

    ring.on_event = drain
    return ring, member, client, woken


async def drive(ring: Ring, member: Member, client: DhtClient, woken: asyncio.Event) -> None:
    """What the node runtime does: when woken, flush the node (re-arm its timer) and advance the
    network until no caller is waiting, yielding to the loop so that resolved callers run."""
    while True:
        await woken.wait()
        woken.clear()
        ring.poke(member)
        while client.pending:
            ring.run(0.05)
            await asyncio.sleep(0)  # a yield to the event loop, not a wait for time


async def test_operations_are_awaitable() -> None:
    ring, member, client, woken = client_on_ring()
    runtime = asyncio.create_task(drive(ring, member, client, woken))
    try:
        assert await client.create(b"k", b"v", 60) == Created(b"k", b"v", 60)
        got, stored, missing = await asyncio.gather(
            client.get(b"k"), client.put(b"g", b"x", 60, refresh=False), client.get(b"missing")
        )
        assert isinstance(got, Values) and [v.value for v in got.values] == [b"v"]
        assert stored == Stored(b"g", b"x", 60)
        assert missing == Values(b"missing", ())
        assert client.pending == 0
    finally:
        runtime.cancel()


async def test_misuse_raises_before_anything_is_sent() -> None:
    _ring, _member, client, woken = client_on_ring()
    with pytest.raises(ValueError):
        await client.put(b"", b"v", 60)
    assert client.pending == 0 and not woken.is_set()


async def test_close_cancels_waiting_callers() -> None:
    _ring, _member, client, _woken = client_on_ring()
    waiting = asyncio.create_task(client.get(b"k"))
    await asyncio.sleep(0)  # let it start and park its future
    assert client.pending == 1
    client.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert client.pending == 0


async def test_a_caller_that_goes_away_leaves_nothing_behind() -> None:
    ring, member, client, _woken = client_on_ring()
    waiting = asyncio.create_task(client.get(b"k"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert client.pending == 0
    ring.poke(member)
    ring.run(10)  # the operation completes in the core; its result is dropped quietly
    assert [type(e.result) for e in member.events if isinstance(e, OpCompleted)] == [Values]
    assert client.pending == 0
