"""Pure. The wire format and key schedule of secure overlay links: framing constants, the three
handshake message codecs, the realm key, the handshake MAC, the transcript hash and session keys.

Every overlay datagram starts with ``MAGIC`` and a type byte. STUN messages start with 0x00 or 0x01,
so one UDP socket can carry both and tell them apart by the first byte. Types 5 and 6 belong to the nat
layer (punch probes and LAN beacons) and are not defined here.

Layouts (integers big-endian; ``mac`` = HMAC-SHA256(netkey, everything before it)[:16])::

    HS_INIT  A1 01 | suite u8 | sender_index u32 | eph_i 32 | id_i 32 | mac 16                 = 87
    HS_RESP  A1 02 | sender_index u32 | receiver_index u32 | eph_r 32 | id_r 32               (body 74)
                   | AEAD(k_r2i, nonce 0, sign_r("ipop-resp" + th), aad=body) 80 | mac 16     = 170
    HS_FIN   A1 03 | receiver_index u32 | AEAD(k_i2r, nonce 0, sign_i("ipop-fin" + th), aad=6) = 86
    DATA     A1 04 | receiver_index u32 | counter u64 | AEAD(key, nonce counter, data, aad=14)

Keys: ``netkey = HKDF-SHA256(secret, salt="ipop/realm/v1", info=realm)``, so two realms never share a
key even with one secret; ``th = SHA256("ipop-hs-v1" + HS_INIT + HS_RESP body)``;
``k_i2r || k_r2i = HKDF-SHA256(X25519 shared secret, salt=netkey, info="ipop link keys v1" + th)``.
The nonce is four zero bytes and the 64-bit counter, so a (key, nonce) pair never repeats as long as
a counter is never reused under one key, which :class:`overlay.linksession.Session` guarantees.

The codecs check lengths and fixed bytes and raise only :class:`LinkDecodeError`; verifying the MAC is
the caller's first step (:func:`mac_ok`), because that is the check that needs the realm key.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = 0xA1
"""First byte of every overlay datagram: ipop wire version 1. Never 0x00/0x01, STUN's first bytes."""

HS_INIT = 1
HS_RESP = 2
HS_FIN = 3
PACKET_DATA = 4

SUITE_AES_256_GCM = 1
"""AES-256-GCM: the default, the fastest AEAD on CPUs with AES-NI."""
SUITE_CHACHA20_POLY1305 = 2
"""ChaCha20-Poly1305: fast and constant-time without AES hardware. Either suite's cipher object holds
an OpenSSL context of about 2.3-2.5 KB (measured in fresh processes), hence lazy contexts."""
SUITES = frozenset({SUITE_AES_256_GCM, SUITE_CHACHA20_POLY1305})

KEY_BYTES = 32
MAC_BYTES = 16
"""A truncated HMAC-SHA256: 128 bits stop an off-path forger, and it only gates cheap work."""
TAG_BYTES = 16
EPHEMERAL_BYTES = 32
IDENTITY_BYTES = 32
SIGNATURE_BYTES = 64
SEALED_SIGNATURE_BYTES = SIGNATURE_BYTES + TAG_BYTES

INIT_BYTES = 2 + 1 + 4 + EPHEMERAL_BYTES + IDENTITY_BYTES + MAC_BYTES
RESP_BODY_BYTES = 2 + 4 + 4 + EPHEMERAL_BYTES + IDENTITY_BYTES
RESP_BYTES = RESP_BODY_BYTES + SEALED_SIGNATURE_BYTES + MAC_BYTES
FIN_HEADER_BYTES = 2 + 4
FIN_BYTES = FIN_HEADER_BYTES + SEALED_SIGNATURE_BYTES
DATA_HEADER_BYTES = 2 + 4 + 8
DATA_OVERHEAD = DATA_HEADER_BYTES + TAG_BYTES
"""Bytes a DATA datagram adds to its plaintext (header and tag); the overlay MTU budget needs it."""

MAX_COUNTER = 2**64 - 2
"""The last counter a session may seal with. The layer above rekeys long before (see
``Session.needs_rekey``); refusing past this point makes nonce reuse impossible even if it does not."""

REALM_SALT = b"ipop/realm/v1"
TRANSCRIPT_LABEL = b"ipop-hs-v1"
KEYS_LABEL = b"ipop link keys v1"
RESP_SIGNATURE_LABEL = b"ipop-resp"
FIN_SIGNATURE_LABEL = b"ipop-fin"

NONCE = struct.Struct("!4xQ")
"""Four zero bytes and the counter: a 96-bit AEAD nonce that is unique per key."""
NONCE_ZERO = NONCE.pack(0)
"""The nonce of the one handshake message each direction's key seals (HS_RESP or HS_FIN)."""
DATA_HEADER = struct.Struct("!BBIQ")
_INIT = struct.Struct("!BBBI32s32s")
_RESP_BODY = struct.Struct("!BBII32s32s")
_FIN_HEADER = struct.Struct("!BBI")

Aead = AESGCM | ChaCha20Poly1305


class LinkDecodeError(ValueError):
    """A datagram that is not a valid link message. ``reason`` names the check that failed; it is the
    key under which the drop is counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HsInit:
    suite: int
    sender_index: int
    ephemeral: bytes
    identity: bytes


@dataclass(frozen=True, slots=True)
class HsResp:
    sender_index: int
    receiver_index: int
    ephemeral: bytes
    identity: bytes
    sealed: bytes
    """The responder's signature of the transcript, sealed with k_r2i (80 bytes)."""


@dataclass(frozen=True, slots=True)
class HsFin:
    receiver_index: int
    sealed: bytes
    """The initiator's signature of the transcript, sealed with k_i2r (80 bytes)."""


def derive_netkey(realm: str, secret: bytes) -> bytes:
    """The realm's key: only nodes that share both realm name and secret can compute it."""
    return HKDF(SHA256(), length=KEY_BYTES, salt=REALM_SALT, info=realm.encode()).derive(secret)


def mac(netkey: bytes, data: bytes) -> bytes:
    return hmac.digest(netkey, data, "sha256")[:MAC_BYTES]


def mac_ok(netkey: bytes, packet: bytes) -> bool:
    """True when the last ``MAC_BYTES`` of ``packet`` are the MAC of the rest (constant-time)."""
    return hmac.compare_digest(mac(netkey, packet[:-MAC_BYTES]), packet[-MAC_BYTES:])


def transcript_hash(init_packet: bytes, resp_body: bytes) -> bytes:
    """Binds everything both sides said: suite, indices, both ephemerals and both identities."""
    return hashlib.sha256(TRANSCRIPT_LABEL + init_packet + resp_body).digest()


def session_keys(netkey: bytes, shared: bytes, th: bytes) -> tuple[bytes, bytes]:
    """``(k_i2r, k_r2i)``: one key per direction, so the two counter spaces never share a key."""
    okm = HKDF(SHA256(), length=2 * KEY_BYTES, salt=netkey, info=KEYS_LABEL + th).derive(shared)
    return okm[:KEY_BYTES], okm[KEY_BYTES:]


def new_aead(suite: int, key: bytes) -> Aead:
    if suite == SUITE_AES_256_GCM:
        return AESGCM(key)
    if suite == SUITE_CHACHA20_POLY1305:
        return ChaCha20Poly1305(key)
    raise ValueError(f"unknown cipher suite {suite}")


def _check(data: bytes, size: int, kind: int) -> None:
    if len(data) != size or data[0] != MAGIC or data[1] != kind:
        raise LinkDecodeError("malformed")


def _require_keys(*keys: bytes) -> None:
    # struct's "32s" would silently pad or cut a wrong-sized key: misuse must fail loudly instead.
    if any(len(k) != 32 for k in keys):
        raise ValueError("ephemeral and identity keys have 32 bytes")


def encode_init(msg: HsInit, netkey: bytes) -> bytes:
    _require_keys(msg.ephemeral, msg.identity)
    body = _INIT.pack(MAGIC, HS_INIT, msg.suite, msg.sender_index, msg.ephemeral, msg.identity)
    return body + mac(netkey, body)


def decode_init(data: bytes) -> HsInit:
    """Parse an HS_INIT (the MAC is not checked here). The suite is returned as sent."""
    _check(data, INIT_BYTES, HS_INIT)
    _, _, suite, index, ephemeral, identity = _INIT.unpack_from(data)
    return HsInit(suite, index, ephemeral, identity)


def resp_body(msg: HsResp) -> bytes:
    """The part of an HS_RESP that the transcript hash and the sealed signature's AAD cover."""
    _require_keys(msg.ephemeral, msg.identity)
    return _RESP_BODY.pack(MAGIC, HS_RESP, msg.sender_index, msg.receiver_index, msg.ephemeral, msg.identity)


def encode_resp(msg: HsResp, netkey: bytes) -> bytes:
    if len(msg.sealed) != SEALED_SIGNATURE_BYTES:
        raise ValueError("the sealed signature has 80 bytes")
    signed = resp_body(msg) + msg.sealed
    return signed + mac(netkey, signed)


def decode_resp(data: bytes) -> HsResp:
    """Parse an HS_RESP (the MAC is not checked here)."""
    _check(data, RESP_BYTES, HS_RESP)
    _, _, sender, receiver, ephemeral, identity = _RESP_BODY.unpack_from(data)
    sealed = data[RESP_BODY_BYTES : RESP_BODY_BYTES + SEALED_SIGNATURE_BYTES]
    return HsResp(sender, receiver, ephemeral, identity, sealed)


def fin_header(receiver_index: int) -> bytes:
    return _FIN_HEADER.pack(MAGIC, HS_FIN, receiver_index)


def encode_fin(msg: HsFin) -> bytes:
    if len(msg.sealed) != SEALED_SIGNATURE_BYTES:
        raise ValueError("the sealed signature has 80 bytes")
    return fin_header(msg.receiver_index) + msg.sealed


def decode_fin(data: bytes) -> HsFin:
    _check(data, FIN_BYTES, HS_FIN)
    (_, _, receiver) = _FIN_HEADER.unpack_from(data)
    return HsFin(receiver, data[FIN_HEADER_BYTES:])
