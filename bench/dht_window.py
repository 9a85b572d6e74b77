"""I/O. Benchmark of the DHT under churn over a fixed window: create races, lookups, records lost and
bytes per node, at N nodes with a median session of S seconds (issue 3's goals).

Builds an overlay of N simulated nodes with a DHT on each (a few bootstrap nodes, then everyone else
joining within ``max(1, N / 1000)`` s, until the ring is consistent), lets it settle, then runs the
scenario of :mod:`ipop.dhtsim` for ``--window`` simulated seconds (longer if the create races take
longer): every node owns a record and refreshes it; nodes die after exponential sessions of median S
and are replaced at once; five gets a second read random records; ``--trials`` races of 100 nodes
creating one key run four at a time. Prints one JSON object: the DHT's figures plus the wall time.

Unlike ``ipop simulate --dht`` it skips the overlay's own measurements (late joins, 10,000 routed
messages), so a run at N = 1,000 costs only the overlay's formation and the window.

    PYTHONPATH=. python -m bench.dht_window --nodes 1000 --session-median 84 --window 60 --trials 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from random import Random
from typing import Any

from dht import DhtSim
from ipop.dhtsim import GETS_PER_S, DhtScenario
from overlay import Address, Cluster

BOOTSTRAP = 5
"""Bootstrap nodes (as ``ipop simulate``); they never churn."""

SETTLE_S = 30.0
"""After the ring is consistent, far links fill and joining leaf links close before the window."""

CONVERGE_TIMEOUT_S = 600.0
"""A ring that is not consistent by then is reported as such and measured anyway."""

FIELDS = (
    "session_median_s",
    "dht_window_s",
    "churn_deaths",
    "create_trials",
    "create_double_winners",
    "create_success_rate",
    "create_latency_s_p50",
    "gets",
    "get_success_rate",
    "get_failures",
    "get_latency_s_p50",
    "get_latency_s_p99",
    "put_success_rate",
    "records_checked",
    "records_lost",
    "dht_msgs_per_node_s",
    "dht_bytes_per_node_s",
    "dht_replication_bytes_per_node_s",
    "dht_pushes_per_node_s",
    "dead_link_share",
    "get_tail_slow_s",
    "get_tail_slow_gets",
    "get_tail_first_routes_dead_share",
    "get_tail_causes",
    "get_tail_examples",
)
"""What the bench prints of the scenario's report (the rest is in ``ipop simulate --dht``)."""


def build(nodes: int, seed: int) -> tuple[DhtSim, set[Address], float | None]:
    """An overlay of ``nodes`` nodes with a DHT on each; the bootstrap nodes' addresses and the time
    the ring took to become consistent after the mass join (None: it did not)."""
    cluster = Cluster(seed, trace=False)
    sim = DhtSim(cluster)
    first = sim.add_node()
    cluster.set_bootstrap([first.member])
    seeds = [first, *(sim.add_node() for _ in range(min(BOOTSTRAP, nodes) - 1))]
    cluster.scheduler.run_for(5.0)
    cluster.set_bootstrap([s.member for s in seeds])
    rest = nodes - len(seeds)
    spread = max(1.0, nodes / 1000)

    def join() -> None:
        sim.add_node()

    for i in range(rest):
        cluster.scheduler.call_later(spread * i / max(1, rest), join)
    cluster.scheduler.run_for(spread)
    converge = cluster.run_until_consistent(CONVERGE_TIMEOUT_S)
    cluster.scheduler.run_for(SETTLE_S)
    return sim, {s.address for s in seeds}, converge


def run(
    *,
    nodes: int,
    session_median_s: float | None,
    window_s: float,
    trials: int,
    seed: int,
    gets_per_s: float = GETS_PER_S,
) -> dict[str, Any]:
    """Build the overlay and run the window; the JSON object the bench prints."""
    if nodes < BOOTSTRAP + 2:
        raise ValueError(f"--nodes must be at least {BOOTSTRAP + 2}")
    wall0 = time.monotonic()
    sim, stable, converge = build(nodes, seed)
    built = time.monotonic() - wall0
    scenario = DhtScenario(
        sim,
        stable=stable,
        session_median_s=session_median_s,
        trials=trials,
        rng=Random(seed * 1_000_003 + 17),
        window_s=window_s,
        gets_per_s=gets_per_s,
    )
    report = scenario.run()
    return {
        "nodes": nodes,
        "seed": seed,
        "converge_s": None if converge is None else round(converge, 1),
        **{name: report[name] for name in FIELDS},
        "wall_build_s": round(built, 1),
        "wall_s": round(time.monotonic() - wall0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dht_window", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="overlay size (default 1000)")
    parser.add_argument(
        "--session-median", type=float, default=84.0, metavar="S", help="median session, s (0: no churn)"
    )
    parser.add_argument("--window", type=float, default=60.0, metavar="S", help="window, simulated s")
    parser.add_argument("--trials", type=int, default=20, help="create races of 100 nodes (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--gets-per-s", type=float, default=GETS_PER_S, help="reads per simulated s (more: a steadier p99)"
    )
    args = parser.parse_args(argv)
    if args.window <= 0 or args.trials < 0 or args.session_median < 0 or args.gets_per_s <= 0:
        parser.error("--window and --gets-per-s must be positive, --trials and --session-median not negative")
    figures = run(
        nodes=args.nodes,
        session_median_s=args.session_median or None,
        window_s=args.window,
        trials=args.trials,
        seed=args.seed,
        gets_per_s=args.gets_per_s,
    )
    json.dump(figures, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
