"""Pure. One secure-link session: the keys of one completed key exchange, the send counter, the replay
window, and the session's state machine.

States and transitions (the whole machine; :data:`_TRANSITIONS` is the same table as data)::

    responder:  HS_INIT accepted ──► PENDING ──HS_FIN verified──► CONFIRMED
    initiator:  HS_RESP verified ──► UNCONFIRMED ──authenticated DATA──► CONFIRMED
    any state ──close──► CLOSED

A PENDING session exists only inside :class:`overlay.linksec.LinkSecurity`: the responder knows the
keys but not yet whether the claimed initiator identity is genuine (only HS_FIN's signature proves
that), so it neither seals nor opens DATA (DATA that overtakes HS_FIN waits, sealed, in
:mod:`overlay.earlydata`). An UNCONFIRMED session may seal and open: the initiator
verified the responder's signature, but does not know whether its HS_FIN arrived, so it keeps
``fin_packet`` for the layer above to re-send until DATA from the responder authenticates on this
session. The responder answers every verified HS_FIN with an empty DATA datagram for exactly that
purpose; an empty plaintext is therefore a keepalive or confirmation, never an application message.

Memory: a simulator carries ~30 sessions for each of 10,000 nodes, so a session keeps its two 32-byte
keys and builds each AEAD object on first use (its OpenSSL context costs ~2.4 KB of memory for either
suite, measured against ~0.6 KB for the rest of a session). :meth:`Session.drop_cipher_contexts`
releases them for idle sessions; busy sessions keep theirs, so the data path never rebuilds an AEAD
per datagram. A session made with ``cache_contexts=False`` never keeps them: it rebuilds the AEAD for
each datagram (about 2 us), which suits a simulator of many nodes with sparse traffic each.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .address import Address, address_from_public_key
from .linkwire import (
    DATA_HEADER,
    DATA_HEADER_BYTES,
    DATA_OVERHEAD,
    MAGIC,
    MAX_COUNTER,
    NONCE,
    NONCE_ZERO,
    PACKET_DATA,
    TAG_BYTES,
    Aead,
    LinkDecodeError,
    new_aead,
)
from .replay import ReplayWindow

REKEY_AFTER_MESSAGES = 2**60
"""needs_rekey() turns true after this many datagrams (WireGuard's value): far below MAX_COUNTER, so
the datagrams sealed while a new handshake completes can never exhaust the counter."""

REKEY_AFTER_BLOCKS = 2**34
"""needs_rekey() turns true after this many 16-byte blocks (256 GiB) under one key. AES-GCM's
confidentiality advantage grows as blocks**2 / 2**129 (draft-irtf-cfrg-aead-limits), so 2**34 blocks
keep it below 2**-61; ChaCha20-Poly1305 is far from its limit there."""


class SessionState(Enum):
    PENDING = "pending"
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    CLOSED = "closed"


class _Event(Enum):
    FIN_VERIFIED = "fin_verified"
    DATA_AUTHENTICATED = "data_authenticated"
    CLOSE = "close"


_P, _U, _C, _X = SessionState.PENDING, SessionState.UNCONFIRMED, SessionState.CONFIRMED, SessionState.CLOSED
_TRANSITIONS: dict[tuple[SessionState, _Event], SessionState] = {
    (_P, _Event.FIN_VERIFIED): _C,
    (_U, _Event.DATA_AUTHENTICATED): _C,
    (_P, _Event.CLOSE): _X,
    (_U, _Event.CLOSE): _X,
    (_C, _Event.CLOSE): _X,
    (_X, _Event.CLOSE): _X,
}
# UNCONFIRMED and CONFIRMED sessions seal and open. The per-datagram checks test identity (``is``)
# rather than membership of a set: hashing an Enum member runs Python code (``Enum.__hash__``), a
# measurable share of sealing a small datagram.
_SLICE_BELOW = 4096
"""Datagrams up to this size are sliced (a copy) for the AEAD, larger ones viewed through a
memoryview: for small ones the copy is cheaper than the view objects (64 B: 1.1 us vs 1.3 us), for
large ones the view saves copying (60 kB: 17.4 us vs 19.4 us). Plaintexts above it are sealed into
one preallocated buffer where the library offers ``encrypt_into`` (cryptography 45 and later)."""

_ENCRYPT_INTO = hasattr(AESGCM, "encrypt_into") and hasattr(ChaCha20Poly1305, "encrypt_into")


class PlaintextSink(Protocol):
    """Where :meth:`Session.open_many` decrypts plaintexts: a buffer, and a slot in it per datagram."""

    @property
    def view(self) -> memoryview:
        """The sink's buffer."""
        ...

    def room(self, size: int) -> int:
        """Where in :attr:`view` to decrypt a plaintext of ``size`` bytes (-1: nowhere). Followed by
        exactly one call of :meth:`opened` or :meth:`unused`."""
        ...

    def opened(self, src: Address, size: int, now: float) -> None:
        """The plaintext in the room is authentic and the sink's, from the session's peer ``src``.
        Must not raise."""
        ...

    def unused(self) -> None:
        """The room was not used (the datagram did not open, or was not the sink's): its bytes may
        have been overwritten; restore them."""
        ...


class SessionExhausted(RuntimeError):
    """The session sealed ``MAX_COUNTER`` datagrams; the layer above should have rekeyed long ago."""


class Session:
    """Keys, counters and replay window of one key exchange with one peer."""

    __slots__ = (
        "_blocks",
        "_cache",
        "_counter",
        "_recv_aead",
        "_recv_key",
        "_send_aead",
        "_send_key",
        "_window",
        "created_at",
        "fin_packet",
        "index",
        "initiator",
        "last_received",
        "last_sent",
        "peer_address",
        "peer_index",
        "peer_public_key",
        "state",
        "suite",
        "transcript",
    )

    def __init__(
        self,
        *,
        state: SessionState,
        index: int,
        peer_index: int,
        peer_public_key: bytes,
        initiator: bool,
        suite: int,
        send_key: bytes,
        recv_key: bytes,
        now: float,
        fin_packet: bytes | None = None,
        transcript: bytes | None = None,
        cache_contexts: bool = True,
    ) -> None:
        if state not in (_P, _U):
            raise ValueError("a session starts PENDING (responder) or UNCONFIRMED (initiator)")
        self.state = state
        self.index = index
        """Our receiver index: DATA for this session arrives with it."""
        self.peer_index = peer_index
        """The peer's receiver index: DATA we seal carries it."""
        self.peer_public_key = peer_public_key
        self.peer_address: Address = address_from_public_key(peer_public_key)
        self.initiator = initiator
        self.suite = suite
        self.created_at = now
        self.last_received = now
        self.last_sent = now
        self.fin_packet = fin_packet
        """Initiator only, while UNCONFIRMED: the HS_FIN to re-send until the responder answers."""
        self.transcript = transcript
        """Responder only, while PENDING: the transcript hash that HS_FIN's signature must cover."""
        self._send_key = send_key
        self._recv_key = recv_key
        self._send_aead: Aead | None = None
        self._recv_aead: Aead | None = None
        self._cache = cache_contexts
        self._counter = 0
        self._blocks = 0
        self._window = ReplayWindow()

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return f"<Session {self.index:08x}->{self.peer_index:08x} {role} {self.state.value}>"

    @property
    def confirmed(self) -> bool:
        return self.state is _C

    @property
    def messages_sent(self) -> int:
        return self._counter

    @property
    def has_cipher_contexts(self) -> bool:
        return self._send_aead is not None or self._recv_aead is not None

    def _advance(self, event: _Event) -> None:
        try:
            self.state = _TRANSITIONS[self.state, event]
        except KeyError:
            raise RuntimeError(
                f"{self!r}: {event.value} is not allowed in state {self.state.value}"
            ) from None

    def seal(self, plaintext: bytes, now: float) -> bytes:
        """A whole DATA datagram carrying ``plaintext`` to the peer. Raises on a session that cannot
        send (PENDING or CLOSED) and :class:`SessionExhausted` past ``MAX_COUNTER``."""
        state = self.state
        if state is not _C and state is not _U:
            raise RuntimeError(f"{self!r} cannot seal in state {state.value}")
        counter = self._counter + 1
        if counter > MAX_COUNTER:
            raise SessionExhausted(f"{self!r} used every counter; rekey")
        self._counter = counter
        self._blocks += (len(plaintext) + 31) >> 4
        self.last_sent = now
        header = DATA_HEADER.pack(MAGIC, PACKET_DATA, self.peer_index, counter)
        aead = self._send_aead
        if aead is None:
            aead = new_aead(self.suite, self._send_key)
            if self._cache:
                self._send_aead = aead
        if _ENCRYPT_INTO and len(plaintext) > _SLICE_BELOW:
            # Ciphertext and tag written behind the header in one buffer: no copy of a 64 KiB
            # super-frame to join them (26 -> 15 us per 64 KiB here).
            out = bytearray(DATA_HEADER_BYTES + len(plaintext) + TAG_BYTES)
            out[:DATA_HEADER_BYTES] = header
            aead.encrypt_into(NONCE.pack(counter), plaintext, header, memoryview(out)[DATA_HEADER_BYTES:])
            return out  # type: ignore[return-value]  # bytes-like; callers only send it
        return header + aead.encrypt(NONCE.pack(counter), plaintext, header)

    def open(self, data: bytes | memoryview, counter: int, now: float) -> bytes:
        """The plaintext of a DATA datagram for this session whose header the caller parsed
        (``counter`` from it). Raises only :class:`LinkDecodeError`: replayed, too old, not
        authentic, or not acceptable in this state. The replay window moves only after the AEAD
        authenticated the datagram."""
        state = self.state
        if state is not _C and state is not _U:
            raise LinkDecodeError("pending" if state is _P else "closed")
        window = self._window
        if not window.could_be_fresh(counter):
            raise LinkDecodeError(window.why_stale(counter))
        aead = self._recv_aead or self._recv_context()
        body: bytes | memoryview = data
        if len(data) > _SLICE_BELOW:
            body = memoryview(data)
        try:
            plaintext = aead.decrypt(NONCE.pack(counter), body[DATA_HEADER_BYTES:], body[:DATA_HEADER_BYTES])
        except InvalidTag:
            raise LinkDecodeError("bad_aead") from None
        window.mark(counter)
        self.last_received = now
        if self.state is _U:
            self._advance(_Event.DATA_AUTHENTICATED)
            self.fin_packet = None
        return plaintext

    def open_many(
        self, datagrams: Sequence[bytes | memoryview], now: float, sink: PlaintextSink, prefix: bytes
    ) -> tuple[list[bytes | memoryview], list[bytes]]:
        """Open DATA datagrams of this session (the caller parsed their receiver index) in one call,
        each decrypted into the room ``sink`` gives it: the state, the AEAD and the sink are looked
        up once, not per datagram. Plaintexts that begin with ``prefix`` (two bytes) go to
        ``sink.opened``; the others (and any the sink has no room for) are returned, in order, as the
        second list. The first list holds the datagrams that did not open (replayed, too old, not
        authentic, or a session that cannot open), in order, for the caller's ordinary path, which
        counts and explains them. The replay window moves only for authenticated datagrams."""
        state = self.state
        if state is not _C and state is not _U:
            return list(datagrams), []
        failed: list[bytes | memoryview] = []
        others: list[bytes] = []
        window = self._window
        fresh, mark = window.could_be_fresh, window.mark
        aead = self._recv_aead or self._recv_context()
        decrypt_into = aead.decrypt_into
        view, room, opened, unused = sink.view, sink.room, sink.opened, sink.unused
        peer = self.peer_address
        first, second = prefix[0], prefix[1]
        pack = NONCE.pack
        count = 0
        for data in datagrams:
            counter = int.from_bytes(data[6:14], "big")
            size = len(data) - DATA_OVERHEAD
            if size < 0 or not fresh(counter):
                failed.append(data)
                continue
            at = room(size)
            whole = memoryview(data) if size > _SLICE_BELOW else data  # no copy of a large body
            header, body = whole[:DATA_HEADER_BYTES], whole[DATA_HEADER_BYTES:]
            try:
                if at < 0:  # no room for it: a new object, as open() makes
                    others.append(aead.decrypt(pack(counter), body, header))
                else:
                    decrypt_into(pack(counter), body, header, view[at : at + size])
            except InvalidTag:
                if at >= 0:
                    unused()
                failed.append(data)
                continue
            mark(counter)
            count += 1
            if at < 0:
                continue
            if size >= 2 and view[at] == first and view[at + 1] == second:
                opened(peer, size, now)
            else:
                others.append(bytes(view[at : at + size]))
                unused()
        if count:
            self.last_received = now
            if self.state is _U:
                self._advance(_Event.DATA_AUTHENTICATED)
                self.fin_packet = None
        return failed, others

    def open_handshake(self, sealed: bytes, aad: bytes) -> bytes:
        """Open the peer's handshake message sealed with its direction's key at nonce 0 (HS_FIN for a
        responder). Raises :class:`LinkDecodeError` when it is not authentic."""
        aead = self._recv_aead or self._recv_context()
        try:
            return aead.decrypt(NONCE_ZERO, sealed, aad)
        except InvalidTag:
            raise LinkDecodeError("bad_aead") from None

    def _recv_context(self) -> Aead:
        aead = new_aead(self.suite, self._recv_key)
        if self._cache:
            self._recv_aead = aead
        return aead

    def fin_verified(self) -> None:
        """The responder verified HS_FIN: the initiator proved its identity; PENDING -> CONFIRMED."""
        self._advance(_Event.FIN_VERIFIED)
        self.transcript = None

    def receive_loss(self) -> tuple[int, int]:
        """``(missing, span)`` of the peer's recent DATA counters (``ReplayWindow.missing``)."""
        return self._window.missing()

    def needs_rekey(self, now: float, rekey_s: float) -> bool:
        """True when the layer above should run a new handshake and move traffic to it: the session
        is ``rekey_s`` old, or its key protected enough data to approach an AEAD usage limit."""
        return (
            now - self.created_at >= rekey_s
            or self._counter >= REKEY_AFTER_MESSAGES
            or self._blocks >= REKEY_AFTER_BLOCKS
        )

    def drop_cipher_contexts(self) -> None:
        """Release the AEAD objects (the next seal or open rebuilds them): for idle sessions."""
        self._send_aead = None
        self._recv_aead = None

    def close(self) -> None:
        """Forget the keys; the session can neither seal nor open any more."""
        self._advance(_Event.CLOSE)
        self._send_aead = self._recv_aead = None
        self._send_key = self._recv_key = b""
        self.fin_packet = None
        self.transcript = None
