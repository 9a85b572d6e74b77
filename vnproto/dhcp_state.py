"""Pure. The DHCP server's per-client states and the transitions between them, in one place.

The theory of operation is at the top of ``dhcp_server``; this module is the table it refers to: the
states a client can be in, every (state, event) pair that may happen and where it may lead, and the
record kept per client. ``DhcpServer`` moves a client only through this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address

from .dhcp import HTYPE_ETHERNET, DhcpMessage
from .dhcp_actions import Lease
from .udp import UdpFrame


class State(Enum):
    ALLOCATING_OFFER = "allocating-offer"
    ALLOCATING_ACK = "allocating-ack"
    OFFERED = "offered"
    BOUND = "bound"


NONE = None
"""No entry for the client."""

TRANSITIONS: dict[tuple[State | None, str], frozenset[State | None]] = {
    (NONE, "discover"): frozenset({State.ALLOCATING_OFFER}),
    (NONE, "request"): frozenset({State.ALLOCATING_ACK, NONE}),
    (State.ALLOCATING_OFFER, "discover"): frozenset({State.ALLOCATING_OFFER}),
    (State.ALLOCATING_OFFER, "request"): frozenset({State.ALLOCATING_ACK, NONE}),
    (State.ALLOCATING_OFFER, "allocated"): frozenset({State.OFFERED}),
    (State.ALLOCATING_OFFER, "failed"): frozenset({NONE}),
    (State.ALLOCATING_ACK, "discover"): frozenset({State.ALLOCATING_OFFER}),
    (State.ALLOCATING_ACK, "request"): frozenset({State.ALLOCATING_ACK, NONE}),
    (State.ALLOCATING_ACK, "allocated"): frozenset({State.BOUND, NONE}),
    (State.ALLOCATING_ACK, "failed"): frozenset({NONE}),
    (State.OFFERED, "discover"): frozenset({State.OFFERED}),
    (State.OFFERED, "request"): frozenset({State.BOUND, State.ALLOCATING_ACK, NONE}),
    (State.OFFERED, "timeout"): frozenset({State.BOUND, NONE}),
    (State.BOUND, "discover"): frozenset({State.OFFERED}),
    (State.BOUND, "request"): frozenset({State.BOUND}),
    (State.BOUND, "expired"): frozenset({NONE}),
}
"""(state, event) -> the states the event may lead to. RELEASE and DECLINE remove the client from
any state; a pending allocation that times out simply disappears (the node's late answer is
released)."""


@dataclass(slots=True)
class ClientRecord:
    key: bytes
    state: State | None = None
    request: DhcpMessage | None = None
    """The latest message of the conversation: its xid, flags and options shape the reply."""
    via: UdpFrame | None = None
    """The frame that carried it: the reply's addressing depends on how it came."""
    wanted_ip: IPv4Address | None = None
    """ALLOCATING_ACK: the only address the allocator may grant for an ACK."""
    offer_ip: IPv4Address | None = None
    deadline: float = 0.0
    """ALLOCATING_*: when to forget the attempt. OFFERED: when the offer lapses."""
    lease: Lease | None = None
    hostname: str | None = None


@dataclass(slots=True)
class DhcpCounters:
    received: int = 0
    malformed: int = 0
    ignored: int = 0
    offers: int = 0
    acks: int = 0
    naks: int = 0
    by_state: dict[str, int] = field(default_factory=dict)


def client_key(msg: DhcpMessage) -> bytes:
    """The lease key: option 61 if present (RFC 2131 §4.2), else ``0x01`` (hardware type Ethernet)
    followed by chaddr, which is the client identifier most clients derive from their MAC anyway."""
    return msg.client_id or bytes((HTYPE_ETHERNET,)) + msg.client_mac
