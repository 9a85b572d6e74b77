"""I/O. What the resident set of a simulated overlay is made of: the ``ipop simulate`` scenario (seed nodes,
mass join over ``max(1, N/1000)`` s, convergence, warm-up and steady window) with, at each stage, the RSS
growth per node split into CPython's small-object allocator (pymalloc arenas: bytes in live blocks, in
free blocks of partly used pools, in unused pools) and glibc's heap (objects over 512 B: bytes in use
and free). ``tracemalloc`` (``bench.sim_memory``) says which lines hold the live objects; this says how
much of the RSS is not live objects at all but free space the allocators keep (docs/simscale.md,
phase 6). Linux and glibc only.

    PYTHONPATH=. python -m bench.sim_heap [--nodes 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import re
import sys

from ipop.simulate import STEADY_WINDOW_S, WARMUP_S, _rss_bytes, _schedule_mass_join, _seed_overlay
from overlay import Cluster


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def _pymalloc() -> dict[str, int]:
    """The totals of ``sys._debugmallocstats`` (it writes to the C stderr, hence the pipe)."""
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write)
    text = b""
    while chunk := os.read(read, 1 << 16):
        text += chunk
    os.close(read)
    figures: dict[str, int] = {}
    for key, pattern in (
        ("arenas", r"# arenas allocated current\s*=\s*([\d,]+)"),
        ("live", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
        ("free_blocks", r"# bytes in available blocks\s*=\s*([\d,]+)"),
        ("unused_pools", r"unused pools \* \d+ bytes\s*=\s*([\d,]+)"),
    ):
        found = re.search(pattern, text.decode())
        figures[key] = int(found.group(1).replace(",", "")) if found else 0
    return figures


def _stage(label: str, nodes: int, rss0: int, base: dict[str, int], libc: ctypes.CDLL) -> None:
    gc.collect()
    info = libc.mallinfo2()
    heap = _pymalloc()
    per = {k: (v - base.get(k, 0)) // nodes for k, v in heap.items() if k != "arenas"}
    print(
        f"{label}: RSS +{(_rss_bytes() - rss0) // nodes} B/node; pymalloc arenas {heap['arenas']}:"
        f" live blocks +{per['live']}, free blocks +{per['free_blocks']}, unused pools"
        f" +{per['unused_pools']} B/node; glibc in use +{(info.uordblks - base['glibc_used']) // nodes},"
        f" free +{(info.fordblks - base['glibc_free']) // nodes} B/node",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n = args.nodes
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    gc.collect()
    info = libc.mallinfo2()
    base = {**_pymalloc(), "glibc_used": info.uordblks, "glibc_free": info.fordblks}
    rss0 = _rss_bytes()
    cluster = Cluster(args.seed, trace=False)
    seeds = _seed_overlay(cluster, n)

    def join(_: int) -> None:
        cluster.add_node()

    window = _schedule_mass_join(cluster, n, n - len(seeds), join)
    cluster.scheduler.run_for(window)
    _stage(f"join window ({window:.0f} s)", n, rss0, base, libc)
    converged = cluster.run_until_consistent(600.0)
    _stage(f"converged ({converged} s)", n, rss0, base, libc)
    cluster.scheduler.run_for(WARMUP_S + STEADY_WINDOW_S)
    _stage("end of the steady window", n, rss0, base, libc)


if __name__ == "__main__":
    main()
