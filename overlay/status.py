"""Pure. What ``ipop status`` shows of an overlay node: its place in the ring, its links, its counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .address import to_hex
from .table import LEAF, role_names

NO_STUN: dict[str, Any] = {"servers": [], "filtering_checks": []}
"""What ``StunQueries.status`` says without servers (a node without servers has no ``StunQueries``)."""

if TYPE_CHECKING:
    from .node import OverlayNode


def node_status(node: OverlayNode, now: float) -> dict[str, Any]:
    """Everything ``ipop status`` shows about the overlay, as JSON-ready data."""
    left, right = node.ring_neighbours()
    links = []
    for link in sorted(node.table, key=lambda lk: lk.peer):
        links.append(
            {
                "peer": to_hex(link.peer),
                "kinds": sorted(role_names(link.my_roles | link.peer_roles) - {"leaf"})
                or (["leaf"] if (link.my_roles | link.peer_roles) & LEAF else []),
                "my_roles": sorted(role_names(link.my_roles)),
                "peer_roles": sorted(role_names(link.peer_roles)),
                "path": link.path_text(),
                "endpoint": f"{link.endpoint[0]}:{link.endpoint[1]}" if link.endpoint else None,
                "rtt_ms": None if link.srtt is None else round(link.srtt * 1000, 2),
                "age_s": round(now - link.created, 1),
                "idle_s": round(now - link.last_rx, 1),
                "pmtu": node.datapath.mtu_status(link.peer),
            }
        )
    return {
        "address": to_hex(node.address),
        "state": node.maintenance.state,
        "state_detail": node.maintenance.state_detail,
        "n_estimate": node.maintenance.n_estimate(),
        "left": [to_hex(a) for a in left],
        "right": [to_hex(a) for a in right],
        "links": links,
        "nat": node.connector.nat_status(),
        "lan": node.lan.status(now),
        "stun": node.stun.status() if node.stun is not None else NO_STUN,
        "counters": dict(sorted(node.counters.items())),
        "security": dict(sorted(node.security.counters.items())),
    }
