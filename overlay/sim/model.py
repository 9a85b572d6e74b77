"""Pure. The knobs and the meters of the simulated network: the latency model, traffic counters, and the
reasons for which a datagram can be dropped."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Drop(StrEnum):
    """Why a datagram did not arrive. String-valued: the members key the ``drops`` dictionaries of the
    counters (``drops["nat_in"]`` and ``drops[Drop.NAT_IN]`` are the same entry) and read well in
    ``ipop simulate`` output."""

    LOSS = "loss"
    """Random loss: the network's (internet only) or a host's access link (all its traffic)."""
    PARTITION = "partition"
    """Sender and receiver were in different groups of a ``Network.partition``."""
    NAT_OUT = "nat_out"
    """The sender's NAT box refused to translate the datagram (``outbound`` returned None)."""
    NAT_IN = "nat_in"
    """The destination's NAT box filtered the datagram (``inbound`` returned None)."""
    HAIRPIN = "hairpin"
    """A LAN host sent to its own NAT's public address and the box does not hairpin."""
    TTL = "ttl"
    """A datagram sent with TTL 1 or 2 passed the sender's own NAT and then expired in the core."""
    NO_ROUTE = "no_route"
    """No host and no NAT box holds the destination address (any more: a crashed host's address is
    gone with it, unless another port of that address is still bound)."""
    NO_LISTENER = "no_listener"
    """The destination address exists but nothing is bound to the port."""


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """One-way delays of the simulated network. Every datagram draws its own delay uniformly from
    ``[d - jitter, d + jitter]``, so datagrams overtake one another as they do on the internet."""

    base: float = 0.050
    """Internet one-way delay, seconds. 50 ms is a typical continental path (a 100 ms round trip)."""

    jitter: float = 0.005
    """Half-width of the uniform jitter on internet delays, seconds; 5 ms is ordinary queueing noise
    and is enough to reorder datagrams sent a few ms apart."""

    spread: float = 0.0
    """Extra delay between distant sites, seconds. Each site (a public host, a public LAN, or a NAT
    box with its LAN) gets a random point in the unit square, and a pair's delay grows by
    ``spread * distance / sqrt(2)``: 0 for neighbours, ``spread`` for opposite corners. Coordinates
    keep the triangle inequality roughly true, as on the internet, at two floats per site. 0 turns
    the spread off (every pair has the same mean delay)."""

    lan: float = 0.0003
    """One-way delay between hosts of the same LAN, and through a hairpinning NAT, seconds: 0.3 ms
    is a switched Ethernet segment plus two host stacks."""

    lan_jitter: float = 0.00005
    """Half-width of the uniform jitter on LAN delays, seconds."""

    def __post_init__(self) -> None:
        for name in ("base", "jitter", "spread", "lan", "lan_jitter"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"LatencyModel.{name} must be >= 0, not {value!r}")
        if self.jitter > self.base:
            raise ValueError("LatencyModel.jitter must not exceed base (a delay cannot be negative)")
        if self.lan_jitter > self.lan:
            raise ValueError("LatencyModel.lan_jitter must not exceed lan (a delay cannot be negative)")


class Counters:
    """Traffic counters of one host or of the whole network. Drops are charged to the *sender*: the
    receiver of a dropped datagram is often unknown (an unroutable or filtered address)."""

    __slots__ = ("drops", "duplicated", "received", "received_bytes", "sent", "sent_bytes")

    def __init__(self) -> None:
        self.sent = 0
        """Datagrams handed to the network (a broadcast counts once)."""
        self.sent_bytes = 0
        self.received = 0
        """Datagrams delivered to a core (each copy of a duplicate counts)."""
        self.received_bytes = 0
        self.duplicated = 0
        """Extra copies the network made of datagrams this host sent."""
        self.drops: dict[Drop, int] = {}
        """Dropped datagrams by reason."""

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def as_dict(self) -> dict[str, int]:
        """A flat, JSON-ready view: the counts and one ``drop_<reason>`` entry per reason seen."""
        flat = {
            "sent": self.sent,
            "sent_bytes": self.sent_bytes,
            "received": self.received,
            "received_bytes": self.received_bytes,
            "duplicated": self.duplicated,
        }
        for reason in Drop:
            if reason in self.drops:
                flat[f"drop_{reason.value}"] = self.drops[reason]
        return flat

    def __repr__(self) -> str:
        return f"Counters({self.as_dict()})"
