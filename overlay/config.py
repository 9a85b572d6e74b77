"""Pure. The overlay's configuration: one frozen dataclass, every field documented, every default
explained. The ipop runtime fills it from the ``[overlay]`` section of the TOML file; the simulator
builds it directly."""

from __future__ import annotations

from dataclasses import dataclass

from .events import Endpoint


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    realm: str
    """Name of the overlay. Nodes of different realms never link, even with the same secret."""

    secret: bytes
    """The network secret. A handshake that does not prove knowledge of it gets no answer at all."""

    bootstrap: tuple[Endpoint, ...] = ()
    """Underlay endpoints of a few existing members. Empty: this node starts a new overlay."""

    near_per_side: int = 2
    """Links to the nearest nodes on each side of the ring. Two per side keeps the ring connected
    when any single neighbour fails, and lets greedy routing finish on a neighbour (Brunet's value)."""

    far_links: int = 0
    """Far links to draw from Symphony's harmonic distribution. 0 means automatic: round(log2 N),
    with N estimated from the density of ring neighbours; that gives O(log N) greedy routes."""

    max_far_links: int = 20
    """Upper bound on automatic far links; log2 of a million nodes is 20."""

    keepalive_s: float = 25.0
    """An idle link is probed after this long. It must stay under the 30 s after which Linux conntrack
    forgets an unreplied UDP flow (and many home routers any UDP mapping), so that NAT mappings of direct
    links stay open: 25 s is WireGuard's advice for its persistent keepalive, for the same reason. With
    the 5 % jitter of ``overlay.liveness`` and a lost ping repeated within a probe timeout the gap stays
    under 28 s. The far and shortcut links these keepalives serve are most of a node's links (about
    2 log2 N of them): each second saved between probes is maintenance traffic saved on every node
    (20 s before; docs/simscale.md, phase 8)."""

    keepalive_near_s: float = 5.0
    """Ring neighbours' links are probed after this much quiet: they decide which node holds a DHT
    position, so under churn their deaths must be noticed within seconds (about this plus seven
    probe timeouts: ``probe_retries``)."""

    probe_retries: int = 10
    """Unanswered probes before a link is declared dead. They share a fixed window of seven probe
    timeouts (a probe timeout is three round trips, at least 0.5 s; ``overlay.liveness``), so more of
    them do not make a dead peer noticed later, only a live one behind loss declared dead less often:
    with 20 % loss each way (36 % per round trip) 3 probes all went unanswered 4.7 % of the time
    (0.36**3; the NAT grid's lossy site lost links so), 10 probes 3.7e-5 of the time."""

    rekey_s: float = 300.0
    """A link re-runs its key exchange after this long, so a stolen session key exposes at most this
    much traffic. Idle links count too: keepalives are traffic."""

    hop_limit: int = 64
    """Routed messages are dropped after this many hops; greedy routes take about log2(N)/2 hops, so
    64 leaves a wide margin while stopping any loop quickly."""

    handshake_timeout_s: float = 10.0
    """A link attempt (handshake, hole punching included) that has not completed by then fails."""

    punch_timeout_s: float = 3.0
    """Hole punching that has not produced a direct path by then falls back to a relayed link through
    a common neighbour. Direct paths in the NAT lab formed within 0.2-54 ms; 3 s leaves room for
    20 % loss and retransmission."""

    shortcut_after_messages: int = 20
    """Messages to one destination within ``shortcut_window_s`` that trigger a direct shortcut link."""

    shortcut_window_s: float = 10.0
    """The window over which traffic to a destination is counted for shortcut decisions."""

    shortcut_idle_s: float = 120.0
    """A shortcut link that carried no application traffic for this long is closed."""

    bootstrap_retry_s: float = 1.0
    """First delay before retrying unreachable bootstrap peers; doubles up to ``bootstrap_retry_max_s``."""

    bootstrap_retry_max_s: float = 60.0
    """Longest delay between bootstrap attempts of a node that cannot reach any bootstrap peer."""

    max_links: int = 512
    """Links beyond this are refused: a bound on per-node state whatever peers do."""

    handshakes_per_second: float = 200.0
    """Responder-side rate limit on handshake work (X25519 and Ed25519 per attempt)."""

    def __post_init__(self) -> None:
        if not self.realm:
            raise ValueError("realm must not be empty")
        if len(self.secret) < 16:
            raise ValueError("secret must have at least 16 bytes")
        if self.near_per_side < 1:
            raise ValueError("near_per_side must be at least 1")
        if not 0 < self.keepalive_near_s <= self.keepalive_s:
            raise ValueError("keepalive_near_s must be positive and at most keepalive_s")
        if not 0 < self.keepalive_s < 30:
            raise ValueError("keepalive_s must be between 0 and 30 seconds (NAT mappings)")
        if self.probe_retries < 1:
            raise ValueError("probe_retries must be at least 1")
        if self.hop_limit < 4:
            raise ValueError("hop_limit must be at least 4")
