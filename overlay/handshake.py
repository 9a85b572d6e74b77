"""Pure. The cryptographic steps of the link handshake, the results that
:meth:`overlay.linksec.LinkSecurity.receive` returns, and the responder's rate limiter.

Each step is a function of its inputs (keys, received bytes, randomness drawn by the caller), so the
bookkeeping in :mod:`overlay.linksec` and the cryptography here can be read and tested apart. Steps that
fail on received bytes raise only :class:`LinkDecodeError`, whose ``reason`` is the drop counter's key.

The handshake is a SIGMA-style signed Diffie-Hellman: each side signs the transcript hash, which covers
both ephemeral keys and both identity keys, so a signature proves possession of the identity key *for
this exchange with this peer* and cannot be replayed into another one; each signature travels sealed
under its direction's fresh key, which proves knowledge of the X25519 shared secret at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .address import Address
from .identity import Identity, verify_signature
from .linksession import Session, SessionState
from .linkwire import (
    FIN_HEADER_BYTES,
    FIN_SIGNATURE_LABEL,
    NONCE_ZERO,
    RESP_BODY_BYTES,
    RESP_SIGNATURE_LABEL,
    HsFin,
    HsInit,
    HsResp,
    LinkDecodeError,
    encode_fin,
    encode_init,
    encode_resp,
    fin_header,
    new_aead,
    resp_body,
    session_keys,
    transcript_hash,
)

_ALL_ZERO = bytes(32)


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``packet`` back to where the datagram came from (a handshake answer or a confirmation)."""

    packet: bytes


@dataclass(frozen=True, slots=True)
class Established:
    """A key exchange completed. ``reply`` is to be sent back: HS_FIN on the initiator side (also kept
    as ``session.fin_packet`` for re-sending), the empty confirming DATA on the responder side.
    ``early`` (responder side) are the plaintexts of DATA that arrived before HS_FIN, in arrival
    order: deliver them as if they had arrived now."""

    session: Session
    reply: bytes | None
    early: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Plaintext:
    """Authenticated DATA on ``session``. Empty ``data`` is a keepalive or confirmation."""

    session: Session
    data: bytes


@dataclass(frozen=True, slots=True)
class Dropped:
    """The datagram was dropped without an answer; ``reason`` is also counted in ``counters``."""

    reason: str


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The handshake ``index`` was answered by an authentic node that is not the expected peer; the
    handshake is over (``peer_address`` is who answered)."""

    index: int
    reason: str
    peer_address: Address


Received = Reply | Established | Plaintext | Dropped | HandshakeFailed


@dataclass(frozen=True, slots=True)
class InitiatorHandshake:
    """A handshake this node started: re-send ``packet`` until a session with ``index`` is
    established or ``created_at + handshake_timeout_s`` has passed."""

    index: int
    packet: bytes
    created_at: float
    expected_peer: Address | None
    suite: int
    ephemeral: X25519PrivateKey = field(repr=False, compare=False)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def take(self, now: float) -> bool:
        last = self._last
        if last is None:
            self._last = now
        elif now > last:
            self._tokens = min(self.burst, self._tokens + (now - last) * self.rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _shared_secret(private: X25519PrivateKey, peer_ephemeral: bytes) -> bytes:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_ephemeral))
    except ValueError:
        # OpenSSL refuses small-order points (an all-zero result); cryptography raises ValueError.
        raise LinkDecodeError("low_order") from None
    if shared == _ALL_ZERO:
        raise LinkDecodeError("low_order")
    return shared


def make_init(
    netkey: bytes,
    identity: Identity,
    *,
    suite: int,
    index: int,
    ephemeral_private: bytes,
    now: float,
    expected_peer: Address | None,
) -> InitiatorHandshake:
    private = X25519PrivateKey.from_private_bytes(ephemeral_private)
    msg = HsInit(suite, index, private.public_key().public_bytes_raw(), identity.public_key)
    return InitiatorHandshake(index, encode_init(msg, netkey), now, expected_peer, suite, private)


def respond(
    netkey: bytes,
    identity: Identity,
    *,
    init_packet: bytes,
    init: HsInit,
    index: int,
    ephemeral_private: bytes,
    now: float,
    cache_contexts: bool = True,
) -> tuple[bytes, Session]:
    """HS_RESP for an HS_INIT whose MAC was verified, and the PENDING session it creates."""
    private = X25519PrivateKey.from_private_bytes(ephemeral_private)
    shared = _shared_secret(private, init.ephemeral)
    msg = HsResp(index, init.sender_index, private.public_key().public_bytes_raw(), identity.public_key, b"")
    body = resp_body(msg)
    th = transcript_hash(init_packet, body)
    k_i2r, k_r2i = session_keys(netkey, shared, th)
    signature = identity.sign(RESP_SIGNATURE_LABEL + th)
    sealed = new_aead(init.suite, k_r2i).encrypt(NONCE_ZERO, signature, body)
    packet = encode_resp(
        HsResp(msg.sender_index, msg.receiver_index, msg.ephemeral, msg.identity, sealed), netkey
    )
    session = Session(
        state=SessionState.PENDING,
        index=index,
        peer_index=init.sender_index,
        peer_public_key=init.identity,
        initiator=False,
        suite=init.suite,
        send_key=k_r2i,
        recv_key=k_i2r,
        now=now,
        transcript=th,
        cache_contexts=cache_contexts,
    )
    return packet, session


def complete(
    netkey: bytes,
    identity: Identity,
    *,
    handshake: InitiatorHandshake,
    resp_packet: bytes,
    resp: HsResp,
    now: float,
    cache_contexts: bool = True,
) -> Session:
    """The initiator's UNCONFIRMED session (with its HS_FIN) from an HS_RESP whose MAC was verified;
    raises :class:`LinkDecodeError` unless the responder proved its key and identity."""
    shared = _shared_secret(handshake.ephemeral, resp.ephemeral)
    th = transcript_hash(handshake.packet, resp_packet[:RESP_BODY_BYTES])
    k_i2r, k_r2i = session_keys(netkey, shared, th)
    try:
        signature = new_aead(handshake.suite, k_r2i).decrypt(
            NONCE_ZERO, resp.sealed, resp_packet[:RESP_BODY_BYTES]
        )
    except InvalidTag:
        raise LinkDecodeError("bad_aead") from None
    if not verify_signature(resp.identity, signature, RESP_SIGNATURE_LABEL + th):
        raise LinkDecodeError("bad_signature")
    header = fin_header(resp.sender_index)
    sealed = new_aead(handshake.suite, k_i2r).encrypt(
        NONCE_ZERO, identity.sign(FIN_SIGNATURE_LABEL + th), header
    )
    return Session(
        state=SessionState.UNCONFIRMED,
        index=handshake.index,
        peer_index=resp.sender_index,
        peer_public_key=resp.identity,
        initiator=True,
        suite=handshake.suite,
        send_key=k_i2r,
        recv_key=k_r2i,
        now=now,
        fin_packet=encode_fin(HsFin(resp.sender_index, sealed)),
        cache_contexts=cache_contexts,
    )


def verify_fin(session: Session, fin_packet: bytes, fin: HsFin) -> None:
    """Check HS_FIN for a PENDING responder session: sealed with k_i2r, and signed by the identity
    that HS_INIT claimed. Raises :class:`LinkDecodeError` otherwise."""
    signature = session.open_handshake(fin.sealed, fin_packet[:FIN_HEADER_BYTES])
    th = session.transcript
    if th is None or not verify_signature(session.peer_public_key, signature, FIN_SIGNATURE_LABEL + th):
        raise LinkDecodeError("bad_signature")
