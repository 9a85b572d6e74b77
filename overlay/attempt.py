"""Pure. One link attempt's record: its state (see ``connector`` for the transitions), its handshake,
its punch token, where it sends, and its deadlines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .address import Address
from .events import Endpoint
from .relay import TunnelPath
from .wire import Neighbour

if TYPE_CHECKING:
    from .linksec import InitiatorHandshake, Session

RETRANSMIT_S = 1.0
"""First retransmission of a handshake or connect-to-me message; doubles each time (TCP's initial RTO)."""

DIRECT_HANDSHAKE_S = 3.0
"""After a successful punch the handshake has this long on the direct path before the attempt falls back
to a tunnel: as long as the punch itself had, for the same loss."""

DIRECT_RETRANSMIT_S = 0.25
"""INIT retransmission on a path a punch just proved: about the punch's own probe pacing, so that 20 %
loss on each side (41 % of round trips arrive) still completes within a second or so."""

HANDSHAKE, CONNECT, PUNCH, TUNNEL, CONFIRM = "handshake", "connect", "punch", "tunnel", "confirm"


class Attempt:
    """One effort to link to a peer (``connector`` says how it moves between its states)."""

    __slots__ = (
        "advertised",
        "deadline",
        "exact",
        "handshake",
        "id",
        "neighbours",
        "next_send",
        "peer",
        "punch_started",
        "reply_via",
        "retries",
        "role",
        "session",
        "started",
        "state",
        "target",
        "targets",
        "token",
        "tunnel",
        "tunnel_at",
        "upgrade",
        "via",
    )

    def __init__(
        self, attempt_id: int, state: str, role: int, peer: Address | None, now: float, timeout: float
    ) -> None:
        self.id = attempt_id
        self.state = state
        self.role = role
        self.peer = peer
        self.handshake: InitiatorHandshake | None = None
        self.session: Session | None = None
        self.targets: list[Endpoint] = []
        self.token = 0
        self.started = now
        self.deadline = now + timeout
        self.punch_started: float | None = None
        self.tunnel_at: float | None = None
        self.next_send = now
        self.retries = 0
        self.neighbours: tuple[Neighbour, ...] = ()
        self.tunnel: TunnelPath | None = None
        self.target: Address | None = peer
        self.exact = True
        self.upgrade = False
        self.via: Address | None = None
        self.reply_via: Address | None = None
        self.advertised: frozenset[Endpoint] = frozenset()
        """The candidates our latest connect-to-me carried: the only endpoints the peer opens its NAT to."""


SETUP_TIMES_KEPT = 4096
"""Set-up times kept for the figures (the simulator's run reads them all); bounded for a long-lived node."""

SETUP_TIMES_SHOWN = 32
"""``ipop status`` lists the set-up times of this many latest direct links (enough for a median)."""


class SetupTimes:
    """Seconds from a punch's start to the direct link's handshake, the latest ``SETUP_TIMES_KEPT``.

    A list, not a bounded deque: an empty deque keeps a 64-slot block (~760 B on every node, and most
    nodes never punch), and a punch is rare enough that dropping the oldest by ``del`` costs nothing."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: list[float] = []

    def add(self, seconds: float) -> None:
        self._times.append(seconds)
        if len(self._times) > SETUP_TIMES_KEPT:
            del self._times[0]

    def __iter__(self) -> Iterator[float]:
        return iter(self._times)

    def latest(self) -> list[float]:
        """The ones ``ipop status`` shows, rounded to 0.1 ms."""
        return [round(t, 4) for t in self._times[-SETUP_TIMES_SHOWN:]]
