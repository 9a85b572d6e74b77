"""Pure. Far links: Symphony's harmonic long-distance links that make greedy routing take O(log N) hops.

A joined node keeps ``round(log2 N)`` far links (N estimated from the span of its near peers, or the
configured ``far_links``), each towards a ring position drawn from Symphony's harmonic distribution:
the distance is ``RING / N * (N / 2) ** u`` for a uniform ``u``, on a random side. The connect-to-me
for that position is answered by the node closest to it. At most ``FAR_IN_FLIGHT`` attempts run at
once; surplus far roles (the estimate of N fell) are dropped, and the link closes later if no other
role keeps it.

The state (``far_in_flight``) lives in the node's ``Maintenance``; these are its far-link passes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .address import RING, Address
from .table import FAR

if TYPE_CHECKING:
    from .maintenance import Maintenance

FAR_IN_FLIGHT = 2
"""Far-link attempts at once: enough to fill the table in a minute, gentle on a joining overlay."""


def far_target(m: Maintenance) -> int:
    """How many far links this node should keep."""
    config = m.node.config
    if config.far_links:
        return config.far_links
    n = m.n_estimate()
    if n <= 2 * config.near_per_side + 1:
        return 0
    return max(1, min(config.max_far_links, round(math.log2(n))))


def manage_far(m: Maintenance, now: float) -> None:
    """Start far-link attempts up to the target; drop the far role of links beyond it."""
    node = m.node
    if not m.joined:
        return
    mine = [link for link in node.table if link.my_roles & FAR]
    target = far_target(m)
    missing = target - len(mine) - len(m.far_in_flight)
    for _ in range(min(missing, FAR_IN_FLIGHT - len(m.far_in_flight))):
        n = max(m.n_estimate(), 2)
        distance = int(RING / n * (n / 2) ** node.rng.random())
        position = (node.address + distance if node.rng.random() < 0.5 else node.address - distance) % RING
        attempt = node.connector.connect_address(Address(position), FAR, now, exact=False)
        if attempt is not None:
            m.far_in_flight[attempt] = now
    for link in mine[target:]:
        m.drop_role(link, FAR, now)
