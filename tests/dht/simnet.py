"""Helpers for the DHT tests on the real overlay in the simulator: an overlay of N nodes with a DHT on
each, and running an operation to its result."""

from __future__ import annotations

from dht import DhtConfig, DhtSim, OpResult
from dht.sim import Call
from overlay import Address, Cluster

BOOTSTRAP = 3


def overlay_with_dht(nodes: int, seed: int, config: DhtConfig | None = None) -> DhtSim:
    """``nodes`` overlay nodes, each with a DHT, on a consistent ring that has settled for a while."""
    cluster = Cluster(seed, trace=False)
    sim = DhtSim(cluster, config)
    first = sim.add_node()
    cluster.set_bootstrap([first.member])
    seeds = [first, *(sim.add_node() for _ in range(BOOTSTRAP - 1))]
    cluster.scheduler.run_for(3.0)
    cluster.set_bootstrap([s.member for s in seeds])
    for i in range(nodes - BOOTSTRAP):
        cluster.scheduler.call_later(i * 0.02, sim.add_node)
    assert cluster.run_until_consistent(120.0) is not None, "the ring did not converge"
    cluster.scheduler.run_for(10.0)
    assert len(sim) == nodes
    return sim


def do(sim: DhtSim, address: Address, call: Call, timeout: float = 30.0) -> OpResult:
    """Start an operation on ``address`` and run the simulation until it has its result."""
    results: list[OpResult] = []
    sim.start(address, call, results.append)
    sim.cluster.scheduler.run_for(timeout, stop=lambda: bool(results))
    assert results, f"no result within {timeout} s"
    return results[0]


def stable_nodes(sim: DhtSim, exclude: set[Address] | frozenset[Address] = frozenset()) -> list[Address]:
    """Live joined nodes, sorted (a deterministic order to draw from)."""
    return sorted(sd.address for sd in sim if sd.member.joined_at is not None and sd.address not in exclude)
