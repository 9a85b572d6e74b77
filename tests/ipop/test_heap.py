"""ipop.heap: a node keeps its heap's top, so churning 64 KiB buffers faults no pages in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHURN = """
import resource, sys
sys.path.insert(0, {root!r})
from ipop.heap import keep_heap_top
if {keep}:
    assert keep_heap_top()
def frames(n):
    for _ in range(n):  # what one frame of the data plane allocates and frees: read, message, datagram
        a = bytearray(65563); b = bytes(a[10:]); c = bytearray(len(b) + 30)
        c[-1] = a[-1] ^ b[-1]
        del a, b, c
frames(100)  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
frames(2000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(keep: bool) -> int:
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", CHURN.format(root=root, keep=keep)], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_a_node_keeps_its_heap_top_and_frames_fault_no_pages_in() -> None:
    kept = faults(True)
    assert kept < 50, kept  # 2,000 frames: the top stays mapped
    assert faults(False) > 20 * max(kept, 10)  # glibc's default trims and re-grows it every frame
