"""Pure. Hole punching for link attempts: one ``nat.PunchSession`` per connect-to-me, on both of its ends.

Theory of operation. A connect-to-me carries a random token and the requester's candidate endpoints;
the answer carries the responder's. Both ends then punch under that token, each with its own
:class:`nat.PunchSession` (pre-punch with a low TTL to open its own NAT mapping first, probes paced like
ICE checks, peer-reflexive endpoints learned from what arrives):

* the **responder** starts when the connect-to-me arrives. Its pre-punch leaves at once; its full
  probes wait for the requester's first probe, which arrives through the mapping the pre-punch opened
  and is checked back at once. Only a responder behind a symmetric NAT (known, or guessed from a moved
  port while its mapping is not yet known) probes first, after about the time its answer takes to
  reach the requester (``hold_for``): the requester cannot reach it first. A probe that reaches the
  requester's NAT before the requester's own pre-punch can take its port (the NAT lab's conntrack
  clash).
* the **requester** starts when the answer arrives (it may pre-punch endpoints it already knew when it
  sent the connect-to-me: ``prepunch``). When its session succeeds (a reply to one of its probes came
  back, so the path works both ways) the connector sends the link handshake to that endpoint; when it
  fails, the connector relays.

Probes are ``nat``'s 31-byte punch datagrams, MAC'd under the realm key. A node answers a PROBE with a
REPLY only while it punches under the probe's token, so a node that merely shares a private address
with an advertised host candidate (another LAN's 192.168.1.2) stays silent and never fakes a path.
Probes and replies also count as triggered checks for the receiving session. A session that ended
keeps answering for ``ANSWER_LINGER_S``: the peer may still be waiting for its first reply.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nat import (
    DecodeError,
    MappingBehaviour,
    ProbeKind,
    PunchConfig,
    PunchEvent,
    PunchProbe,
    PunchSession,
    PunchState,
    decode_probe,
    encode_probe,
)

from .address import Address
from .events import Endpoint

if TYPE_CHECKING:
    from .node import OverlayNode

log = logging.getLogger(__name__)

PREPUNCH_TTL = 2
"""Enough to leave the host and its own NAT router, too little to reach a NAT across the core."""

MAX_PUNCHES = 64
"""Concurrent punch sessions (both roles): bounds what connect requests can make this node send."""

ANSWER_LINGER_S = 2.0
"""A finished session still answers its peer's probes this long (a few round trips with loss)."""

HOLD_PER_HOP_S = 0.08
"""Assumed one-way delay of one overlay hop when no link RTT is known (a continental internet path)."""

MAX_HOLD_S = 1.0
"""The responder never holds its probes longer: past this the requester's side is assumed open."""

MIN_HOLD_S = 0.03
"""Even one hop away the answer needs a moment; the lab's 25 ms skew test sits just under this."""

CAUSAL_HOLD_S = 1.0
"""A responder whose mapping is unknown but looks symmetric sends its own full probes only this long
after its answer unless a probe of the requester arrived first (see ``hold_for``)."""

NEVER = math.inf
"""The hold of a responder behind an endpoint-independent mapping or no NAT: it never probes first
(see ``hold_for``)."""

PunchResult = Callable[[int, PunchEvent, float], None]
"""The connector's callback for the requester's sessions: (attempt id, event, now)."""


class _Punch:
    __slots__ = (
        "advertised",
        "attempt",
        "peer",
        "quiet",
        "reply_via",
        "seq",
        "session",
        "token",
        "undecided",
        "until",
        "wake",
    )

    def __init__(self, token: int, peer: Address | None, session: PunchSession, attempt: int | None) -> None:
        self.token = token
        self.peer = peer
        self.session = session
        self.attempt = attempt
        self.seq = 0
        self.until = float("inf")
        self.wake = 0.0
        """When this session next needs the timer (cached: asking a session is not free)."""
        self.quiet = False
        """No more probes of our own (the attempt is over); probes of the peer are still answered."""
        self.advertised: frozenset[Endpoint] = frozenset()
        """A responder's: the candidates its latest answer carried (see ``responding``)."""
        self.reply_via: Address | None = None
        """A responder's: where its answers go first (the connect-to-me's ``reply_via``)."""
        self.undecided: int | None = None
        """A responder's that started while our mapping was unknown: the connect-to-me's hop count,
        kept to decide its hold once the mapping is known (see ``mapping_changed``)."""


class Puncher:
    """Every punch session of one node, by token (see the module docstring)."""

    __slots__ = ("_active", "_armed", "node", "on_result")

    def __init__(self, node: OverlayNode, on_result: PunchResult) -> None:
        self.node = node
        self.on_result = on_result
        self._active: dict[int, _Punch] = {}
        self._armed: float | None = None

    def __len__(self) -> int:
        return len(self._active)

    def config(self) -> PunchConfig:
        ttl = PREPUNCH_TTL if self.node.connector.reflexive.behind_nat() else 0
        return PunchConfig(prepunch_ttl=ttl, timeout_s=self.node.config.punch_timeout_s)

    def hold_for(self, hops: int) -> float:
        """How long a responder holds its full probes (its pre-punch leaves at once, and a probe of
        the requester is answered and checked back at once, whatever the hold).

        Behind an endpoint-independent mapping or no NAT: for ever. The requester's probes reach us
        through the mapping our pre-punch opened (or straight), and their arrival triggers our own
        checks, so the order is causal (our pre-punch, our answer, the requester's pre-punch, its
        probes, our answers) and probing first wins nothing: a pair whose requester cannot reach us
        first (a symmetric requester) cannot punch through our filter anyway. It costs a lot on the
        other side: a probe that reaches the requester's router before its own pre-punch (because the
        answer is slow, or the requester dropped the attempt as a duplicate and never punches) is
        taken by a router whose stack accepts unsolicited input, which then moves *every* later flow
        of that host to a new port (Linux's NAT reuses a host's existing mapping), so one early probe
        breaks the host's other punches too. The NAT grid's clash pair showed that under load even a
        hold of ~1 s was not enough, and so does the simulator, whose NAT models that reuse.

        While our mapping is not yet known (a node that has just joined, seen by one peer) we guess
        from that peer's view: our own port kept means a Linux masquerade (endpoint-independent:
        never), a moved port a symmetric NAT not yet recognised, which waits ``CAUSAL_HOLD_S`` as a
        fallback (the requester's probes cannot reach it). Either hold is provisional: if the mapping
        turns out dependent, ``mapping_changed`` releases it.

        Behind a dependent mapping the requester cannot reach us first (our advertised port is not
        the one it must use), so we probe after the answer's one-way trip over ``hops`` overlay hops,
        each taken as 3/4 of the median RTT of our direct links (half an RTT, plus margin)."""
        reflexive = self.node.connector.reflexive
        if not reflexive.mapping_dependent():
            return NEVER if reflexive.likely_independent() else CAUSAL_HOLD_S
        rtts = sorted(link.srtt for link in self.node.table if link.direct and link.srtt is not None)
        per_hop = 0.75 * rtts[len(rtts) // 2] if rtts else HOLD_PER_HOP_S
        return min(MAX_HOLD_S, max(MIN_HOLD_S, max(1, hops) * per_hop))

    # -- sessions -------------------------------------------------------------------------------------

    def start(
        self,
        token: int,
        peer: Address | None,
        remote: Sequence[Endpoint],
        now: float,
        *,
        attempt: int | None = None,
        hold_s: float = 0.0,
    ) -> bool:
        """Punch towards ``remote`` under ``token``; ``attempt`` names the requester's link attempt
        (its result goes to the connector), None for the responder. False when refused (too many)."""
        node = self.node
        remote = self._usable(remote)
        punch = self._active.get(token)
        if punch is not None and punch.session.state is PunchState.PUNCHING:
            punch.session.add_remote(remote, now)
            punch.attempt = attempt if attempt is not None else punch.attempt
            self._flush(punch, now)
            return True
        if len(self._active) >= MAX_PUNCHES and token not in self._active:
            node.counters["punches_refused"] += 1
            return False
        session = PunchSession(remote, now, config=self.config(), hold_s=hold_s)
        punch = _Punch(token, peer, session, attempt)
        self._active[token] = punch
        node.counters["punches_started"] += 1
        self._flush(punch, now)
        return True

    def respond(self, token: int, peer: Address, remote: Sequence[Endpoint], now: float, hops: int) -> bool:
        """A responder's session for a connect-to-me that came over ``hops`` overlay hops: pre-punch
        now, full probes after ``hold_for``. False when refused (too many)."""
        if not self.start(token, peer, remote, now, hold_s=self.hold_for(hops)):
            return False
        punch = self._active[token]
        if punch.attempt is None and self.node.connector.reflexive.mapping() is MappingBehaviour.UNKNOWN:
            punch.undecided = hops
        return True

    def mapping_changed(self, now: float) -> None:
        """Our NAT's mapping behaviour is known now, or changed: responder sessions held while it was
        unknown probe after the hold it calls for (a dependent mapping's), or keep holding."""
        reflexive = self.node.connector.reflexive
        if reflexive.mapping() is MappingBehaviour.UNKNOWN:
            return
        for punch in list(self._active.values()):
            if punch.undecided is None:
                continue
            hops, punch.undecided = punch.undecided, None
            hold = self.hold_for(hops)
            if hold != NEVER and not punch.quiet and punch.session.state is PunchState.PUNCHING:
                self.node.counters["punch_holds_released"] += 1
                punch.session.release_hold(max(now, punch.session.started_at + hold))
                self._flush(punch, now)

    def prepunch(self, token: int, remote: Sequence[Endpoint], now: float) -> None:
        """Open our own NAT towards endpoints we know before asking the peer (one low-TTL probe each)."""
        if not self.node.connector.reflexive.behind_nat():
            return
        packet = encode_probe(PunchProbe(ProbeKind.PROBE, token, 0), self.node.security.netkey)
        for endpoint in self._usable(remote):
            self.node.transmit(packet, endpoint, now, ttl=PREPUNCH_TTL)

    def trickle(self, token: int, remote: Sequence[Endpoint], now: float) -> bool:
        """More candidates of the peer for a session still probing (pre-punched first); False if none."""
        punch = self._active.get(token)
        if punch is None or punch.quiet or punch.session.state is not PunchState.PUNCHING:
            return False
        punch.session.add_remote(self._usable(remote), now)
        self._flush(punch, now)
        return True

    def answered(self, token: int, candidates: Sequence[Endpoint], reply_via: Address | None) -> None:
        """A responder's session answered its connect-to-me with ``candidates``."""
        punch = self._active.get(token)
        if punch is not None and punch.attempt is None:
            punch.advertised, punch.reply_via = frozenset(candidates), reply_via

    def responding(self, candidates: Sequence[Endpoint]) -> list[tuple[int, Address, Address | None]]:
        """Responder sessions still probing whose answer lacks some of ``candidates``: (token, peer,
        reply_via) of each, which get the answer again (our NAT became known meanwhile)."""
        current = frozenset(candidates)
        out = []
        for p in self._active.values():
            stale = bool(p.advertised) and not current <= p.advertised
            if (
                stale
                and p.attempt is None
                and p.peer is not None
                and not p.quiet
                and p.session.state is PunchState.PUNCHING
            ):
                p.advertised = current
                out.append((p.token, p.peer, p.reply_via))
        return out

    def punching(self, peer: int) -> bool:
        """A session towards ``peer`` is still probing (its connect-to-me to us is under way)."""
        return any(p.peer == peer and p.session.state is PunchState.PUNCHING for p in self._active.values())

    def stop(self, token: int) -> None:
        self._active.pop(token, None)

    def stop_peer(self, peer: Address, now: float) -> None:
        """A link to ``peer`` exists: punches for its connect-to-me stop probing (and only answer
        for a while). Our own attempts' sessions end with the attempt (``finish``)."""
        for punch in self._active.values():
            if punch.peer == peer and punch.attempt is None and punch.until == float("inf"):
                punch.quiet = True
                punch.until = punch.wake = now + ANSWER_LINGER_S

    def finish(self, token: int, now: float) -> None:
        """The attempt that punched under ``token`` is over: stop probing, answer a while longer."""
        punch = self._active.get(token)
        if punch is not None:
            punch.attempt = None
            punch.quiet = True
            punch.until = punch.wake = min(punch.until, now + ANSWER_LINGER_S)

    def _usable(self, remote: Sequence[Endpoint]) -> list[Endpoint]:
        """The peer's candidates minus our own socket's endpoints (two sites with the same private
        addresses would otherwise have us probe ourselves)."""
        own = self.node.connector.reflexive.local
        return [ep for ep in remote if ep not in own]

    # -- datagrams ------------------------------------------------------------------------------------

    def receive(self, data: bytes, src: Endpoint, now: float) -> None:
        """A punch datagram from ``src``: answered, and fed to the session of its token."""
        node = self.node
        try:
            probe = decode_probe(data, node.security.netkey)
        except DecodeError:
            node.counters["rx_dropped_bad_probe"] += 1
            return
        punch = self._active.get(probe.token)
        if punch is None or probe.kind is ProbeKind.FILTER:
            node.counters["rx_probe_ignored"] += 1
            return
        session = punch.session
        if probe.kind is ProbeKind.PROBE:
            reply = PunchProbe(ProbeKind.REPLY, probe.token, probe.seq)
            node.transmit(encode_probe(reply, node.security.netkey), src, now)
            session.probe_received(src, now)
        else:
            session.reply_received(src, now)
        self._flush(punch, now)

    def round(self, now: float) -> None:
        """The timer: due probes of the sessions that are due, deadlines, the end of lingering answers."""
        if self._armed is None or now < self._armed:
            return  # a timer that an earlier wake-up already served
        self._armed = None
        for punch in [p for p in self._active.values() if p.wake <= now]:
            if now >= punch.until:
                del self._active[punch.token]
                continue
            session = punch.session
            timer = session.get_timer()
            if timer is not None and timer <= now:
                session.handle_timer(now)
            self._flush(punch, now, arm=False)
        self._arm()

    def _flush(self, punch: _Punch, now: float, arm: bool = True) -> None:
        session = punch.session
        due = session.probes_due(now)
        if due and not punch.quiet:
            netkey = self.node.security.netkey
            for endpoint, ttl in due:
                punch.seq += 1
                packet = encode_probe(PunchProbe(ProbeKind.PROBE, punch.token, punch.seq), netkey)
                self.node.transmit(packet, endpoint, now, ttl=ttl)
        while (event := session.next_event()) is not None:
            if punch.until == float("inf"):
                punch.until = now + ANSWER_LINGER_S
            if punch.attempt is not None:
                self.on_result(punch.attempt, event, now)
        timer = session.get_timer() if not punch.quiet else None
        punch.wake = punch.until if timer is None else min(timer, punch.until)
        if arm:
            self._arm()

    def _arm(self) -> None:
        wake = min((punch.wake for punch in self._active.values()), default=None)
        if wake is not None and (self._armed is None or wake < self._armed):
            self._armed = wake
            self.node.set_timer(wake, "punchback", None)
