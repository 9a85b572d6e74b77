"""Pure. The punch-probe datagram (overlay datagram type 5) and its codec.

A hole-punching attempt needs a small packet that both peers recognise and that nobody else can forge
into a link: it carries the attempt's token (agreed through the overlay's signalling) and an HMAC under a
key of the realm, so a stray or hostile packet never counts as a path. Layout, 31 bytes::

    A1 05 | kind u8 | token u64 | seq u32 | mac 16        mac = HMAC-SHA256(key, first 15 bytes)[:16]

``kind`` is PROBE (a punch attempt; answered at once with a REPLY to its source, echoing ``seq``),
REPLY, or FILTER (the one packet a helper sends for a peer-assisted filtering test; ``token`` carries the
test's nonce). The overlay may equally use its handshake INIT as a probe; then this codec is unused for
punching but still serves the filtering test.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .common import MAC_BYTES, DecodeError, mac, mac_ok

VERSION_BYTE = 0xA1
"""Every overlay datagram starts with it (ipop wire v1); STUN's first byte is 0x00 or 0x01."""
TYPE_PUNCH = 0x05
"""The overlay's datagram type reserved for punch probes (1-4 are the link handshake and data)."""

_BODY = struct.Struct("!BBBQI")
PROBE_BYTES = _BODY.size + MAC_BYTES
MAX_TOKEN = 2**64 - 1
MAX_SEQ = 2**32 - 1


class ProbeKind(IntEnum):
    PROBE = 1
    REPLY = 2
    FILTER = 3


@dataclass(frozen=True, slots=True)
class PunchProbe:
    kind: ProbeKind
    token: int
    seq: int


def encode_probe(probe: PunchProbe, key: bytes) -> bytes:
    if not 0 <= probe.token <= MAX_TOKEN or not 0 <= probe.seq <= MAX_SEQ:
        raise ValueError("token is a u64 and seq a u32")
    body = _BODY.pack(VERSION_BYTE, TYPE_PUNCH, probe.kind, probe.token, probe.seq)
    return body + mac(key, body)


def is_probe(datagram: bytes) -> bool:
    """Cheap demultiplexing test (type byte and length only; :func:`decode_probe` checks the MAC)."""
    return len(datagram) == PROBE_BYTES and datagram[0] == VERSION_BYTE and datagram[1] == TYPE_PUNCH


def decode_probe(datagram: bytes, key: bytes) -> PunchProbe:
    """Decode and authenticate; raises :class:`DecodeError` only."""
    if not is_probe(datagram):
        raise DecodeError(f"not a punch probe ({len(datagram)} bytes)")
    body, tag = datagram[: _BODY.size], datagram[_BODY.size :]
    if not mac_ok(key, body, tag):
        raise DecodeError("punch probe MAC mismatch")
    _, _, kind, token, seq = _BODY.unpack(body)
    try:
        return PunchProbe(ProbeKind(kind), token, seq)
    except ValueError:
        raise DecodeError(f"unknown punch probe kind {kind}") from None
