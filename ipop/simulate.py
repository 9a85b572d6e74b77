"""I/O. ``ipop simulate``: build an overlay of N nodes in the discrete-event simulator, let them join,
and measure it.

The scenario (all times simulated):

1. a seed overlay of ``SEED_NODES`` bootstrap nodes forms (the first starts a new overlay, the others
   join through it);
2. *mass join*: every other node starts within ``join_window`` seconds (N / 1000, at least 1 s), each
   through one of the bootstrap nodes; ``converge_s`` is the time from the first of them to a consistent
   ring (every node's nearest left and right links are its true ring neighbours);
3. *steady state*: after a warm-up (far links fill, joining leaf links close), maintenance traffic is
   counted over a window, and the wall-clock speed of the simulation is measured over the same window;
4. *joins into a steady overlay*: ``JOINERS`` nodes join one after another; ``join_s`` is the time from
   a joiner's start until it is linked to both of its ring neighbours;
5. *routing*: ``ROUTE_PAIRS`` messages between random pairs of nodes, greedy, with hop counts; a message
   that does not arrive at its destination is a route failure; ``routability`` is the share that arrived.

With ``nat_blocked`` F > 0 the seed nodes stay public and every other node sits behind its own NAT box of
one of the NAT lab's types (``nat.assign_nat_types``): symmetric and port-restricted NATs in such numbers
that a share F of all pairs cannot link directly, full and address-restricted cones for the rest. The
result then says how the overlay coped: the share of pairs that cannot link directly, routability,
how many links are direct or tunnelled (through a relay, or routed), and how long punching took.

``sim_speed`` is simulated over wall-clock seconds in the steady window: what a user waits, and as noisy
as the machine is busy. ``sim_speed_cpu`` divides by the process's CPU time instead: what the simulator
itself costs, much less sensitive to other load on the machine (docs/simscale.md).

Memory per node is the growth of the process's resident set while the overlay was built and ran,
divided by N: an upper bound (it includes the simulator's own bookkeeping), never an estimate.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Mapping
from random import Random
from typing import Any

from dht import DhtSim
from nat import assign_nat_types, blocked_pairs
from overlay import Cluster, Member

from .dhtsim import DhtScenario

SEED_NODES = 5
"""Bootstrap nodes of the simulated overlay (a deployment lists a few; joiners spread over them)."""

WARMUP_S = 60.0
"""Steady state begins this long after the ring converged: far links take a few ticks to fill and the
joiners' leaf links to the bootstrap nodes to close."""

STEADY_WINDOW_S = 60.0
"""Maintenance traffic and simulation speed are measured over this window."""

JOINERS = 20
JOIN_SPACING_S = 3.0
"""Sequential joiners, far enough apart that each joins a settled overlay."""

ROUTE_PAIRS = 10_000

CONVERGE_TIMEOUT_S = 600.0

DEFAULT_CREATE_TRIALS = 100
"""Create races of ``--dht`` unless ``--create-trials`` says otherwise: about a minute of wall time at
N = 1,000. The goal of issue 3 (no double winner in 1,000 trials) takes ``--create-trials 1000``."""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _check(
    nodes: int, dht: bool, session_median_s: float | None, nat_blocked: float, create_trials: int | None
) -> int:
    """Refuse what cannot be simulated; the number of create races to run."""
    if nodes < 2:
        raise ValueError("--nodes must be at least 2")
    if not 0.0 <= nat_blocked < 1.0:
        raise ValueError("--nat-blocked must be a share of node pairs in [0, 1)")
    if session_median_s is not None and not dht:
        raise ValueError("--session-median needs --dht (churn is measured by the DHT's workload)")
    if session_median_s is not None and not session_median_s > 0:
        raise ValueError("--session-median must be positive")
    trials = DEFAULT_CREATE_TRIALS if create_trials is None else create_trials
    if trials < 0:
        raise ValueError("--create-trials must not be negative")
    return trials


def _seed_overlay(cluster: Cluster, nodes: int) -> list[Member]:
    """Step 1: the bootstrap nodes, which every later node joins through."""
    seeds = [cluster.add_node()]
    cluster.set_bootstrap(seeds)
    seeds += [cluster.add_node() for _ in range(min(SEED_NODES, nodes) - 1)]
    cluster.scheduler.run_for(5.0)
    cluster.set_bootstrap(seeds)
    return seeds


def _schedule_mass_join(cluster: Cluster, nodes: int, mass: int, add: Callable[[int], None]) -> float:
    """Step 2: ``add(i)`` for each of the ``mass`` joiners, spread evenly over a window of one
    simulated second per thousand nodes (at least one) from now; returns the window, for the caller
    to run."""
    window = max(1.0, nodes / 1000)
    start = cluster.now
    for i in range(mass):
        cluster.scheduler.call_at(start + window * i / max(1, mass), add, i)
    return window


def run_simulation(
    *,
    nodes: int,
    seed: int,
    dht: bool = False,
    session_median_s: float | None = None,
    nat_blocked: float = 0.0,
    create_trials: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Mapping[str, Any]:
    """Run the scenario of the module docstring; the figures ``ipop simulate --json`` prints."""
    trials = _check(nodes, dht, session_median_s, nat_blocked, create_trials)
    say = progress or (lambda line: None)
    wall_start = time.monotonic()
    rss_start = _rss_bytes()
    cluster = Cluster(seed, trace=False)
    sim = DhtSim(cluster) if dht else None

    seeds = _seed_overlay(cluster, nodes)
    mass = nodes - len(seeds)
    nat_types = _nat_types(mass + JOINERS, len(seeds), nat_blocked, seed)
    start = cluster.now
    joiners: list[Member] = []
    window = _schedule_mass_join(
        cluster, nodes, mass, lambda i: joiners.append(cluster.add_node(nat=nat_types[i]))
    )
    cluster.scheduler.run_for(window)
    converge_s: float | None = None
    while cluster.now - start < CONVERGE_TIMEOUT_S:
        bad = len(cluster.inconsistent())
        say(f"mass join: t={cluster.now - start:.0f} s, {bad} of {nodes} nodes not yet in place")
        if bad == 0:
            converge_s = cluster.now - start
            break
        cluster.scheduler.run_for(1.0)
    mass_join = [m.joined_at - m.started for m in joiners if m.joined_at is not None]
    # The overlay built so far lives on: exempt it from the cyclic collector's full passes, which
    # otherwise walk every object of every node again and again (docs/simscale.md, phase 6).
    gc.freeze()

    say("steady state: warming up")
    cluster.scheduler.run_for(WARMUP_S)
    msgs0, bytes0 = cluster.traffic()
    wall0, cpu0 = time.monotonic(), time.process_time()
    cluster.scheduler.run_for(STEADY_WINDOW_S)
    steady_wall = time.monotonic() - wall0
    steady_cpu = time.process_time() - cpu0
    msgs1, bytes1 = cluster.traffic()
    per = len(cluster.members) * STEADY_WINDOW_S
    rss = _rss_bytes() - rss_start

    say("joins into the steady overlay")
    join_times = _late_joins(cluster, nat_types[mass:])

    say(f"routing {ROUTE_PAIRS} messages between random pairs")
    sample = cluster.sample_routes(ROUTE_PAIRS)
    hops = [float(h) for h in sample.hops] or [0.0]
    consistent = cluster.ring_consistent()
    extra = _nat_figures(cluster, nat_blocked) if nat_blocked else {}
    figures: dict[str, Any] = {}
    if sim is not None:
        rng = Random(seed * 1_000_003 + 17)
        stable = {m.node.address for m in seeds}
        figures = DhtScenario(
            sim, stable=stable, session_median_s=session_median_s, trials=trials, rng=rng, progress=say
        ).run()
    return {
        "nodes": nodes,
        "seed": seed,
        "ring_consistent": consistent,
        "hops_mean": round(statistics.fmean(hops), 3),
        "hops_p50": _percentile(hops, 0.5),
        "hops_p99": _percentile(hops, 0.99),
        "hops_max": max(hops),
        "route_failures": sample.failures + sample.wrong_owner,
        "routability": round(len(sample.hops) / max(1, ROUTE_PAIRS), 5),
        "join_s_p50": round(_percentile(join_times, 0.5), 3),
        "join_s_p99": round(_percentile(join_times, 0.99), 3),
        "mass_join_s_p50": round(_percentile(mass_join, 0.5), 3) if mass_join else None,
        "converge_s": None if converge_s is None else round(converge_s, 1),
        "maint_msgs_per_node_s": round((msgs1 - msgs0) / per, 3),
        "maint_bytes_per_node_s": round((bytes1 - bytes0) / per, 1),
        "links_per_node": round(sum(len(m.node.table) for m in cluster.live()) / len(cluster.members), 2),
        "mem_bytes_per_node": rss // nodes,
        "sim_speed": round(STEADY_WINDOW_S / steady_wall, 2) if steady_wall > 0 else None,
        "sim_speed_cpu": round(STEADY_WINDOW_S / steady_cpu, 2) if steady_cpu > 0 else None,
        **figures,
        "wall_s": round(time.monotonic() - wall_start, 1),
        **extra,
    }


def _late_joins(cluster: Cluster, nat_types: list[str | None]) -> list[float]:
    """Nodes joining one after another into the steady overlay; each one's time to join."""
    late: list[Member] = []
    for nat_type in nat_types:
        late.append(cluster.add_node(nat=nat_type))
        cluster.scheduler.run_for(JOIN_SPACING_S)
    cluster.scheduler.run_for(10.0)
    return [m.joined_at - m.started if m.joined_at is not None else float("inf") for m in late]


def _nat_types(count: int, public: int, blocked: float, seed: int) -> list[str | None]:
    """NAT types for ``count`` nodes such that, with ``public`` public seeds beside them, about
    ``blocked`` of all pairs cannot link directly (public seeds link with anyone)."""
    if not blocked:
        return [None] * count
    # Pairs among the NATed nodes must carry all the blocked pairs of the whole overlay.
    total = count + public
    share = min(1.0, blocked * total * (total - 1) / max(1, count * (count - 1)))
    return [str(t) for t in assign_nat_types(count, share, Random(seed))]


def _nat_figures(cluster: Cluster, blocked: float) -> dict[str, Any]:
    members = cluster.live()
    n = len(members)
    pairs = n * (n - 1) // 2
    links = [link for m in members for link in m.node.table]
    direct = sum(1 for link in links if link.direct)
    relayed = sum(1 for link in links if not link.direct and link.relay is not None)
    punch_s: list[float] = []
    outcomes: dict[str, int] = {}
    for m in members:
        punch_s.extend(m.node.connector.direct_times)
        for key, value in m.node.connector.outcomes.items():
            outcomes[key] = outcomes.get(key, 0) + value
    tried = outcomes.get("punch_succeeded", 0) + outcomes.get("punch_failed", 0)
    return {
        "nat_blocked": blocked,
        "nat_pairs_blocked": round(blocked_pairs([m.nat_type for m in members]) / max(1, pairs), 4),
        "links_direct_share": round(direct / max(1, len(links)), 4),
        "links_relayed": relayed,
        "links_routed": len(links) - direct - relayed,
        "punch_success_share": round(outcomes.get("punch_succeeded", 0) / max(1, tried), 4),
        "direct_link_s_p50": round(_percentile(punch_s, 0.5), 3) if punch_s else None,
        "direct_link_s_p99": round(_percentile(punch_s, 0.99), 3) if punch_s else None,
        "upgraded_to_direct": outcomes.get("upgraded_to_direct", 0),
    }
