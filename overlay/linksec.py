"""Pure. Secure links between overlay nodes: the sans-IO endpoint that runs handshakes and seals and
opens DATA for every session of one node.

Theory of operation. A node holds one :class:`LinkSecurity`. To link to a peer, the layer above calls
:meth:`LinkSecurity.initiate` and sends (and re-sends) the HS_INIT it returns; everything that arrives
with ``MAGIC`` goes to :meth:`LinkSecurity.receive` (or, for DATA on the hot path,
:meth:`LinkSecurity.open_data`), which never raises on any bytes and returns what to do::

    initiator                                  responder
    initiate() ─── HS_INIT (MAC'd) ──────────► check length, MAC, rate limit; X25519; sign
                                               -> Reply(HS_RESP), session PENDING
    receive() ◄─── HS_RESP (MAC'd, sealed sig) ┘
    verify responder's signature
    -> Established(session UNCONFIRMED, reply=HS_FIN)
               ─── HS_FIN (sealed signature) ─► verify initiator's signature
                                               -> Established(session CONFIRMED, reply=empty DATA)
    receive() ◄─── DATA ───────────────────────┘
    -> Plaintext(session now CONFIRMED, b"")

Only holders of the realm key can produce a valid MAC, and nothing without one gets an answer or
costs more than an HMAC: a node of another realm, or with the wrong secret, sees silence. Handshake
work (X25519 and Ed25519) is rate-limited by a token bucket that charges every HS_RESP, including the
cached copy sent again for a retransmitted HS_INIT, so a replayed HS_INIT cannot turn the responder into
an amplifier either. Responder state before HS_FIN is bounded (``max_pending``, oldest evicted).
DATA that overtakes HS_FIN is held, still sealed, and handed over in ``Established.early`` once HS_FIN
verifies (:mod:`overlay.earlydata`), so an initiator may send as soon as it has sent HS_FIN.

Randomness: the X25519 ephemeral keys and the session indices come from the ``rng`` given to the
constructor. A real node passes ``random.SystemRandom()``, whose ``randbytes`` reads ``os.urandom``;
the simulator passes a seeded ``random.Random`` so that a run, handshakes included, is byte-for-byte
reproducible. A seeded generator is of course not secret: it is for simulation only.

Session states and their transitions are listed in :mod:`overlay.linksession`; the wire format in
:mod:`overlay.linkwire`; the cryptographic steps in :mod:`overlay.handshake`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from random import Random
from typing import Protocol, TypeVar

from .address import ADDRESS_BITS, Address, short
from .earlydata import EarlyData
from .handshake import (
    Dropped,
    Established,
    HandshakeFailed,
    InitiatorHandshake,
    Plaintext,
    Received,
    Reply,
    TokenBucket,
    complete,
    make_init,
    respond,
    verify_fin,
)
from .identity import Identity
from .linksession import Session, SessionState
from .linkwire import (
    DATA_HEADER,
    DATA_OVERHEAD,
    EPHEMERAL_BYTES,
    FIN_BYTES,
    FIN_HEADER_BYTES,
    HS_FIN,
    HS_INIT,
    HS_RESP,
    INIT_BYTES,
    MAGIC,
    PACKET_DATA,
    RESP_BYTES,
    SUITES,
    LinkDecodeError,
    decode_fin,
    decode_init,
    decode_resp,
    derive_netkey,
    mac_ok,
)

__all__ = [
    "HS_FIN",
    "HS_INIT",
    "HS_RESP",
    "MAGIC",
    "PACKET_DATA",
    "Dropped",
    "Established",
    "HandshakeFailed",
    "InitiatorHandshake",
    "LinkSecurity",
    "Plaintext",
    "Received",
    "Reply",
    "Session",
]
"""Everything a user of secure links needs, importable from this module alone (the overlay's own
modules do so) as well as from the package."""

_log = logging.getLogger(__name__)
_SHORT = ADDRESS_BITS - 32
"""Log a peer as ``address >> _SHORT`` with ``%08x``: what ``short()`` prints, without formatting
eagerly on every handshake when the log level drops the message."""

HANDSHAKE_BURST = 10.0
"""Handshakes a responder answers at once before the rate applies: a node joining the overlay opens
links to its few ring neighbours and a handful of far peers within one round trip."""

MAX_PENDING = 256
"""Responder sessions waiting for HS_FIN (and cached HS_RESPs) kept at most; the oldest is evicted.
An honest HS_FIN arrives one round trip after HS_RESP, so at the default 200 handshakes a second
256 leaves room for round trips above a second; beyond that, memory stays bounded under a flood."""


class _Dated(Protocol):
    @property
    def created_at(self) -> float: ...


K = TypeVar("K")
V = TypeVar("V", bound=_Dated)


@dataclass(frozen=True, slots=True)
class _CachedReply:
    created_at: float
    packet: bytes


def _expire_oldest(table: dict[K, V], now: float, timeout: float) -> None:
    """Remove entries older than ``timeout``. Entries are inserted in time order, so the stale ones
    are at the front and the walk stops at the first fresh entry."""
    while table:
        key = next(iter(table))
        if now - table[key].created_at <= timeout:
            return
        del table[key]


class LinkSecurity:
    """Handshakes and sessions of one node (see the module's theory of operation)."""

    __slots__ = (
        "_bucket",
        "_early",
        "_handshakes",
        "_name",
        "_netkey",
        "_pending",
        "_replies",
        "_rng",
        "_sessions",
        "cache_cipher_contexts",
        "counters",
        "handshake_timeout_s",
        "identity",
        "max_pending",
        "suite",
    )

    def __init__(
        self,
        identity: Identity,
        realm: str,
        secret: bytes,
        rng: Random,
        *,
        suite: int = 1,
        handshakes_per_second: float = 200.0,
        handshake_timeout_s: float = 10.0,
        handshake_burst: float = HANDSHAKE_BURST,
        max_pending: int = MAX_PENDING,
        cache_cipher_contexts: bool = True,
    ) -> None:
        if suite not in SUITES:
            raise ValueError(f"unknown cipher suite {suite}; known: {sorted(SUITES)}")
        if not realm or not secret:
            raise ValueError("a realm name and a secret are required")
        if handshake_timeout_s <= 0 or max_pending < 1:
            raise ValueError("handshake_timeout_s must be positive and max_pending at least 1")
        self.identity = identity
        self.suite = suite
        self.handshake_timeout_s = handshake_timeout_s
        self.max_pending = max_pending
        self.cache_cipher_contexts = cache_cipher_contexts
        """False: sessions rebuild their AEAD per datagram instead of keeping ~2.4 KB contexts (for a
        simulator of thousands of nodes); True for real nodes, whose links carry traffic."""
        self.counters: Counter[str] = Counter()
        """Dropped datagrams by reason (``bad_mac``, ``malformed``, ``replay``, ``rate_limited``, ...)."""
        self._netkey = derive_netkey(realm, secret)
        self._rng = rng
        self._bucket = TokenBucket(handshakes_per_second, handshake_burst)
        self._name = short(identity.address)
        self._handshakes: dict[int, InitiatorHandshake] = {}
        self._pending: dict[int, Session] = {}
        self._early = EarlyData()
        self._replies: dict[bytes, _CachedReply] = {}
        self._sessions: dict[int, Session] = {}

    # -- the layer above's calls -------------------------------------------------------------------

    def initiate(self, now: float, expected_peer: Address | None = None) -> InitiatorHandshake:
        """Start a handshake; send ``.packet`` to the peer's endpoint and re-send it until a session
        with ``.index`` is established. With ``expected_peer``, an answer from any other node fails
        the handshake (:class:`HandshakeFailed`)."""
        index = self._new_index()
        handshake = make_init(
            self._netkey,
            self.identity,
            suite=self.suite,
            index=index,
            ephemeral_private=self._rng.randbytes(EPHEMERAL_BYTES),
            now=now,
            expected_peer=expected_peer,
        )
        self._handshakes[index] = handshake
        return handshake

    def receive(self, data: bytes, now: float) -> Received:
        """Handle one datagram that starts with ``MAGIC``. Never raises, whatever ``data`` is."""
        if len(data) < 2 or data[0] != MAGIC:
            return self._drop("malformed")
        kind = data[1]
        try:
            if kind == PACKET_DATA:
                session, plaintext = self._open(data, now)
                return Plaintext(session, plaintext)
            if kind == HS_INIT:
                return self._on_init(data, now)
            if kind == HS_RESP:
                return self._on_resp(data, now)
            if kind == HS_FIN:
                return self._on_fin(data, now)
        except LinkDecodeError as error:
            return self._drop(error.reason)
        return self._drop("unknown_type")

    def open_data(self, data: bytes, now: float) -> tuple[Session, bytes] | None:
        """The data plane's fast path for DATA datagrams: ``(session, plaintext)``, or None when the
        datagram was dropped (and counted). Never raises."""
        try:
            return self._open(data, now)
        except LinkDecodeError as error:
            self._drop(error.reason)
            return None

    def expire(self, now: float) -> None:
        """Forget handshakes, pending responder sessions and cached replies older than the handshake
        timeout. Call it from the node's timer; established sessions are the caller's to close."""
        timeout = self.handshake_timeout_s
        _expire_oldest(self._handshakes, now, timeout)
        _expire_oldest(self._pending, now, timeout)
        self._early.purge(self._pending)
        _expire_oldest(self._replies, now, timeout)

    def close_session(self, session: Session) -> None:
        """Forget ``session``: DATA for it is dropped from now on, and it can no longer seal."""
        for table in (self._sessions, self._pending):
            if table.get(session.index) is session:
                del table[session.index]
        if session.state is SessionState.PENDING:
            self._early.take(session.index)
        if session.state is not SessionState.CLOSED:
            peer = session.peer_address >> _SHORT
            _log.info("%s: link session %08x with %08x closed", self._name, session.index, peer)
        session.close()

    def session(self, index: int) -> Session | None:
        """The established (UNCONFIRMED or CONFIRMED) session with receiver index ``index``."""
        return self._sessions.get(index)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def handshake(self, index: int) -> InitiatorHandshake | None:
        """The initiator handshake ``index`` while it waits for HS_RESP."""
        return self._handshakes.get(index)

    @property
    def netkey(self) -> bytes:
        """The realm key, for the layer's other MAC'd datagrams (punch probes, LAN beacons), so that
        they, too, are answered only within the realm."""
        return self._netkey

    @property
    def early_data_bytes(self) -> int:
        """Bytes of DATA held for pending sessions until their HS_FIN (bounded; for status)."""
        return self._early.held_bytes

    @property
    def pending_count(self) -> int:
        """Responder sessions waiting for HS_FIN."""
        return len(self._pending)

    # -- receive paths -----------------------------------------------------------------------------

    def _drop(self, reason: str) -> Dropped:
        self.counters[reason] += 1
        _log.debug("%s: dropped a link datagram: %s", self._name, reason)
        return Dropped(reason)

    def _open(self, data: bytes, now: float) -> tuple[Session, bytes]:
        if len(data) < DATA_OVERHEAD:
            raise LinkDecodeError("malformed")
        magic, kind, index, counter = DATA_HEADER.unpack_from(data)
        if magic != MAGIC or kind != PACKET_DATA:
            raise LinkDecodeError("malformed")
        session = self._sessions.get(index)
        if session is None:
            if index in self._pending:
                self._early.hold(index, data)  # raises: held_for_fin or early_overflow
            raise LinkDecodeError("unknown_index")
        return session, session.open(data, counter, now)

    def _on_init(self, data: bytes, now: float) -> Received:
        if len(data) != INIT_BYTES:
            raise LinkDecodeError("malformed")
        if not mac_ok(self._netkey, data):
            raise LinkDecodeError("bad_mac")
        init = decode_init(data)
        if init.suite not in SUITES:
            raise LinkDecodeError("bad_suite")
        if init.identity == self.identity.public_key:
            raise LinkDecodeError("own_key")
        cached = self._replies.get(data)
        if cached is not None and now - cached.created_at > self.handshake_timeout_s:
            del self._replies[data]
            cached = None
        if not self._bucket.take(now):
            raise LinkDecodeError("rate_limited")
        if cached is not None:
            _log.debug("%s: HS_INIT retransmitted; the same HS_RESP again", self._name)
            return Reply(cached.packet)
        index = self._new_index()
        packet, session = respond(
            self._netkey,
            self.identity,
            init_packet=data,
            init=init,
            index=index,
            ephemeral_private=self._rng.randbytes(EPHEMERAL_BYTES),
            now=now,
            cache_contexts=self.cache_cipher_contexts,
        )
        self._pending[index] = session
        self._replies[data] = _CachedReply(now, packet)
        while len(self._pending) > self.max_pending:
            evicted = next(iter(self._pending))
            del self._pending[evicted]
            self._early.take(evicted)
            self.counters["pending_evicted"] += 1
        while len(self._replies) > self.max_pending:
            del self._replies[next(iter(self._replies))]
        _log.debug("%s: answered HS_INIT from %08x", self._name, session.peer_address >> _SHORT)
        return Reply(packet)

    def _on_resp(self, data: bytes, now: float) -> Received:
        if len(data) != RESP_BYTES:
            raise LinkDecodeError("malformed")
        if not mac_ok(self._netkey, data):
            raise LinkDecodeError("bad_mac")
        resp = decode_resp(data)
        handshake = self._handshakes.get(resp.receiver_index)
        if handshake is None:
            session = self._sessions.get(resp.receiver_index)
            if session is not None and session.fin_packet is not None:
                # Our HS_FIN was lost and the responder re-sent HS_RESP: send the same HS_FIN again.
                return Reply(session.fin_packet)
            raise LinkDecodeError("duplicate" if session is not None else "unknown_index")
        session = complete(
            self._netkey,
            self.identity,
            handshake=handshake,
            resp_packet=data,
            resp=resp,
            now=now,
            cache_contexts=self.cache_cipher_contexts,
        )
        del self._handshakes[handshake.index]
        if handshake.expected_peer is not None and session.peer_address != handshake.expected_peer:
            self.counters["peer_mismatch"] += 1
            _log.info(
                "%s: handshake %08x reached %08x instead of %08x",
                self._name,
                handshake.index,
                session.peer_address >> _SHORT,
                handshake.expected_peer >> _SHORT,
            )
            return HandshakeFailed(handshake.index, "peer_mismatch", session.peer_address)
        self._sessions[session.index] = session
        _log.info(
            "%s: link session %08x with %08x established (initiator)",
            self._name,
            session.index,
            session.peer_address >> _SHORT,
        )
        return Established(session, session.fin_packet)

    def _on_fin(self, data: bytes, now: float) -> Received:
        if len(data) != FIN_BYTES:
            raise LinkDecodeError("malformed")
        fin = decode_fin(data)
        session = self._pending.get(fin.receiver_index)
        if session is None:
            session = self._sessions.get(fin.receiver_index)
            if session is None or session.initiator:
                raise LinkDecodeError("unknown_index")
            # Our confirming DATA was lost and the initiator re-sent HS_FIN: confirm again, once the
            # HS_FIN proves to be the authentic one (sealed with the initiator's key at nonce 0).
            session.open_handshake(fin.sealed, data[:FIN_HEADER_BYTES])
            return Reply(session.seal(b"", now))
        try:
            verify_fin(session, data, fin)
        except LinkDecodeError as error:
            if error.reason == "bad_signature":
                # Authentic keys but not the claimed identity: this exchange can never complete.
                del self._pending[session.index]
                self._early.take(session.index)
            raise
        del self._pending[session.index]
        session.fin_verified()
        self._sessions[session.index] = session
        early = []
        for held in self._early.take(session.index):
            try:
                early.append(session.open(held, DATA_HEADER.unpack_from(held)[3], now))
            except LinkDecodeError as error:
                self._drop(error.reason)
        _log.info(
            "%s: link session %08x with %08x established (responder)",
            self._name,
            session.index,
            session.peer_address >> _SHORT,
        )
        return Established(session, session.seal(b"", now), tuple(early))

    def _new_index(self) -> int:
        """A random receiver index not used by any live handshake or session (0 is never used)."""
        while True:
            index = self._rng.getrandbits(32)
            taken = index in self._handshakes or index in self._pending or index in self._sessions
            if index and not taken:
                return index
