"""I/O. The C heap of a running node: keep its top instead of giving it back after every frame.

Why. The data plane holds a few buffers of 64 KiB at a time (a super-frame read from the TAP, the
message built from it, the sealed datagram) and frees them a moment later. glibc's malloc serves such
sizes from the heap's top, and by default it returns the top to the kernel as soon as 128 KiB of it
are free (``M_TRIM_THRESHOLD``). So every frame shrank the heap and the next one grew it again, and
each page of it was faulted in anew. The sending node of one TCP stream over a 65535-byte underlay
took 84,851 page faults in 6 s (two per frame; the receiving node none). With the heap's top kept
(8 MiB may stay free, and it grows 4 MiB at a time) the faults fell to 679, and ipop moved 3.99
Gbit/s instead of 3.65 (four runs each of ``bench/dataplane.py --json --underlay-mtu 65535``,
alternated with the tree before; +8 % per CPU second; docs/dataplane.md, phase 8). The cost is at
most 12 MiB of memory the node keeps instead of returning.

The settings are those of the ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` environment
variables, applied with ``mallopt`` when the node starts. Other C libraries (musl) lack these knobs
or ignore them: then nothing changes and the node runs as before.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
"""glibc's ``mallopt`` parameter numbers (malloc.h)."""

TRIM_THRESHOLD = 8 << 20
"""Free bytes the heap's top may hold before malloc gives them back."""
TOP_PAD = 4 << 20
"""Extra bytes taken whenever the heap grows."""


def keep_heap_top(trim_threshold: int = TRIM_THRESHOLD, top_pad: int = TOP_PAD) -> bool:
    """Tell malloc to keep the heap's top (see the module's docstring); whether it agreed."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: the heap is left as it is")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, trim_threshold)) and bool(mallopt(M_TOP_PAD, top_pad))
