"""I/O. Where a simulated overlay node's memory goes: the ``ipop simulate`` scenario (seed nodes, mass join
over ``max(1, N/1000)`` s, convergence, 60 s warm-up) under ``tracemalloc``, with the growth grouped by
source line (or file) right after convergence and after the warm-up, per node. About three times
slower than the plain run; the figures in docs/simscale.md came from it.

    PYTHONPATH=. python -m bench.sim_memory [--nodes 300] [--group lineno|filename] [--top 30]
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

from ipop.simulate import WARMUP_S, _schedule_mass_join, _seed_overlay
from overlay import Cluster


def _report(
    label: str,
    snapshot: tracemalloc.Snapshot,
    base: tracemalloc.Snapshot,
    nodes: int,
    args: argparse.Namespace,
) -> None:
    stats = snapshot.compare_to(base, args.group)
    total = sum(st.size_diff for st in stats)
    current, peak = tracemalloc.get_traced_memory()
    print(
        f"{label}: {total // nodes} B/node traced growth"
        f" (process traced {current // nodes}, peak {peak // nodes})"
    )
    for st in stats[: args.top]:
        print(f"  {st.size_diff / nodes:9.0f} B/node {st.count_diff / nodes:7.1f} obj/node  {st.traceback}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--group", choices=("lineno", "filename"), default="lineno")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    n = args.nodes
    tracemalloc.start(1)
    base = tracemalloc.take_snapshot()
    cluster = Cluster(args.seed, trace=False)
    seeds = _seed_overlay(cluster, n)

    def join(_: int) -> None:
        cluster.add_node()

    window = _schedule_mass_join(cluster, n, n - len(seeds), join)
    cluster.scheduler.run_for(window)
    converged = cluster.run_until_consistent(600.0)
    print(f"converged after {converged} s of simulated time")
    gc.collect()
    _report("after convergence", tracemalloc.take_snapshot(), base, n, args)
    cluster.scheduler.run_for(WARMUP_S)
    gc.collect()
    _report(f"after {WARMUP_S:.0f} s warm-up", tracemalloc.take_snapshot(), base, n, args)


if __name__ == "__main__":
    main()
