"""I/O. Benchmark of a flash crowd: N nodes start within a short window, each joining through one of a
few bootstrap peers, as in ``ipop simulate``'s mass join. Prints one JSON object: join times (from a
node's start until it is linked to both ring neighbours), the time until the ring is consistent, the
messages and bytes the crowd cost until then, and how the bootstrap peers' full tables coped (links
evicted, refused, lost silently).

    PYTHONPATH=. python -m bench.sim_join [--nodes 2000] [--seed 1] [--bootstrap 5] [--window S]
                                         [--max-links 512] [--timeout 600]

``--window`` defaults to ``max(1, N / 1000)`` seconds, as ``ipop simulate`` does. A smaller
``--max-links`` (with a smaller crowd) shows the same congestion of the bootstrap peers quickly.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

from overlay import Cluster, Member

COUNTERS = ("links_evicted", "links_refused_full", "links_lost_silent")
"""Node counters summed over the overlay: how the bootstrap peers' tables coped with the crowd."""


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def flash_crowd(
    nodes: int, seed: int, bootstrap: int, window: float, max_links: int, timeout: float
) -> dict[str, Any]:
    wall0, cpu0 = time.monotonic(), time.process_time()
    cluster = Cluster(seed, trace=False, config={"max_links": max_links})
    seeds = [cluster.add_node()]
    cluster.set_bootstrap(seeds)
    seeds += [cluster.add_node() for _ in range(min(bootstrap, nodes) - 1)]
    cluster.scheduler.run_for(5.0)
    cluster.set_bootstrap(seeds)
    msgs0, bytes0 = cluster.traffic()
    start = cluster.now
    crowd: list[Member] = []
    count = nodes - len(seeds)

    def join() -> None:
        crowd.append(cluster.add_node())

    for i in range(count):
        cluster.scheduler.call_at(start + window * i / max(1, count), join)
    cluster.scheduler.run_for(window)
    converged = cluster.run_until_consistent(timeout)
    converge_s = None if converged is None else round(cluster.now - start, 1)
    msgs1, bytes1 = cluster.traffic()
    join_s = [m.joined_at - m.started for m in crowd if m.joined_at is not None]
    totals: Counter[str] = Counter()
    for member in cluster.live():
        totals.update({k: member.node.counters[k] for k in COUNTERS})
    return {
        "nodes": nodes,
        "seed": seed,
        "bootstrap_peers": len(seeds),
        "window_s": window,
        "max_links": max_links,
        "joined": len(join_s),
        "join_s_p50": _percentile(join_s, 0.5),
        "join_s_p99": _percentile(join_s, 0.99),
        "join_s_max": _percentile(join_s, 1.0),
        "converge_s": converge_s,
        "msgs_per_node": round((msgs1 - msgs0) / nodes, 1),
        "bytes_per_node": round((bytes1 - bytes0) / nodes),
        **{k: totals[k] for k in COUNTERS},
        "wall_s": round(time.monotonic() - wall0, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", type=int, default=5, help="bootstrap peers (default 5)")
    parser.add_argument("--window", type=float, default=None, help="seconds (default max(1, N/1000))")
    parser.add_argument("--max-links", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=600.0, help="simulated seconds to converge")
    args = parser.parse_args()
    if args.nodes < 2 or args.bootstrap < 1:
        parser.error("--nodes must be at least 2 and --bootstrap at least 1")
    window = args.window if args.window is not None else max(1.0, args.nodes / 1000)
    figures = flash_crowd(args.nodes, args.seed, args.bootstrap, window, args.max_links, args.timeout)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
