"""Pure. The STUN Binding codec of RFC 8489 (with the RFC 5780 attributes a NAT-behaviour probe needs).

A node may ask standard STUN servers from its configuration where the internet sees its socket; the
answer travels in XOR-MAPPED-ADDRESS (or, from very old servers, MAPPED-ADDRESS). STUN and the overlay
share one UDP socket: every STUN message starts with two zero bits and carries the magic cookie at
bytes 4-7, while every overlay datagram starts with ``0xA1``, so :func:`is_stun` tells them apart from
the first bytes alone.

Layout (RFC 8489 section 5)::

    0                   1                   2                   3
    |0 0|     STUN message type     |         message length        |
    |                   magic cookie 0x2112A442                     |
    |                transaction id (96 bits)                       |
    attributes: type u16 | length u16 | value, padded to 4 bytes

What the decoder does with attributes follows section 14: comprehension-required attributes (type
below 0x8000) that it does not know are *reported* in ``unknown_required`` (a client treats such a
response as failed, a server answers 420); unknown comprehension-optional ones are skipped; everything
after MESSAGE-INTEGRITY except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT is ignored; FINGERPRINT must be
last and must match. Short-term/long-term credentials are not used by Binding discovery, so integrity
attributes are recognised but not verified. Any malformed input raises :class:`~nat.DecodeError` only.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from .common import DecodeError, Endpoint

MAGIC_COOKIE = 0x2112A442
HEADER_BYTES = 20
TRANSACTION_ID_BYTES = 12
FINGERPRINT_XOR = 0x5354554E
"""RFC 8489 section 14.7: the CRC-32 is XORed with "STUN" so that it differs from any other CRC-32 in
the packet (a FINGERPRINT over a message that itself carries a CRC must not collide with it)."""

MAX_MESSAGE_BYTES = 1500
"""STUN over UDP must fit a datagram without fragmentation (RFC 8489 section 6.1 suggests well under the
path MTU); a Binding response is under 100 bytes. Anything longer is refused before it is parsed."""

MAX_TEXT_BYTES = 763
"""SOFTWARE and the ERROR-CODE reason phrase are at most 763 bytes (128 characters of UTF-8)."""

METHOD_BINDING = 0x001

# Attribute types (RFC 8489 section 18.3, RFC 5780 section 7, RFC 3489 for the legacy pair).
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_CHANGE_REQUEST = 0x0003
ATTR_SOURCE_ADDRESS = 0x0004  # RFC 3489, ignored: recognised so old servers' answers are not refused
ATTR_CHANGED_ADDRESS = 0x0005  # RFC 3489, the old name of OTHER-ADDRESS
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_UNKNOWN_ATTRIBUTES = 0x000A
ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001C
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_RESPONSE_PORT = 0x0027
ATTR_PADDING = 0x0026
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
ATTR_RESPONSE_ORIGIN = 0x802B
ATTR_OTHER_ADDRESS = 0x802C

CHANGE_IP = 0x04
"""CHANGE-REQUEST flag A: answer from the other IP address (RFC 5780 section 7.2)."""
CHANGE_PORT = 0x02
"""CHANGE-REQUEST flag B: answer from the other port."""

_FAMILY_V4 = 0x01
_FAMILY_V6 = 0x02
_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")

_KNOWN_REQUIRED = frozenset(
    {
        ATTR_MAPPED_ADDRESS,
        ATTR_CHANGE_REQUEST,
        ATTR_SOURCE_ADDRESS,
        ATTR_CHANGED_ADDRESS,
        ATTR_MESSAGE_INTEGRITY,
        ATTR_ERROR_CODE,
        ATTR_UNKNOWN_ATTRIBUTES,
        ATTR_MESSAGE_INTEGRITY_SHA256,
        ATTR_XOR_MAPPED_ADDRESS,
        ATTR_RESPONSE_PORT,
        ATTR_PADDING,
    }
)


class StunClass(IntEnum):
    """The two class bits of the message type."""

    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


@dataclass(frozen=True, slots=True)
class StunMessage:
    """A decoded (or to-be-encoded) STUN message. Address attributes are endpoints in canonical text
    form; ``error`` is (code, reason phrase)."""

    cls: StunClass
    method: int
    transaction_id: bytes
    xor_mapped: Endpoint | None = None
    mapped: Endpoint | None = None
    response_origin: Endpoint | None = None
    other_address: Endpoint | None = None
    change_request: int | None = None
    software: str | None = None
    error: tuple[int, str] | None = None
    unknown_attributes: tuple[int, ...] = ()
    """The UNKNOWN-ATTRIBUTES attribute of a 420 error response: what the server did not understand."""
    unknown_required: tuple[int, ...] = ()
    """Comprehension-required attribute types present in the message that this decoder does not know."""
    fingerprint: bool = False
    """Decoded: a valid FINGERPRINT was present. Encoded: append one."""

    @property
    def mapped_endpoint(self) -> Endpoint | None:
        """Where the server saw the request come from: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS (servers
        older than RFC 5389 send only the latter)."""
        return self.xor_mapped if self.xor_mapped is not None else self.mapped


def message_type(cls: StunClass, method: int) -> int:
    """Interleave the 12 method bits and 2 class bits as section 5 draws them (M0-M3, C0, M4-M6, C1,
    M7-M11)."""
    if not 0 <= method <= 0xFFF:
        raise ValueError(f"STUN method out of range: {method:#x}")
    c = int(cls)
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0x1) << 4)
        | ((c & 0x2) << 7)
    )


def split_type(mtype: int) -> tuple[StunClass, int]:
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    c = ((mtype >> 4) & 0x1) | ((mtype >> 7) & 0x2)
    return StunClass(c), method


def is_stun(datagram: bytes) -> bool:
    """Cheap demultiplexing test for a shared socket: the two leading zero bits, the magic cookie, and a
    length field that matches the datagram. Overlay datagrams start with ``0xA1`` and never pass."""
    return (
        len(datagram) >= HEADER_BYTES
        and datagram[0] & 0xC0 == 0
        and datagram[4:8] == b"\x21\x12\xa4\x42"
        and (datagram[2] << 8 | datagram[3]) == len(datagram) - HEADER_BYTES
        and datagram[3] & 0x03 == 0
    )


# -- encoding ------------------------------------------------------------------------------------------


def _attr(atype: int, value: bytes) -> bytes:
    return _ATTR.pack(atype, len(value)) + value + b"\0" * (-len(value) % 4)


def _xor_key(transaction_id: bytes) -> bytes:
    return struct.pack("!I", MAGIC_COOKIE) + transaction_id


def _address_value(endpoint: Endpoint, xor_with: bytes | None) -> bytes:
    host, port = endpoint
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    packed = ipaddress.ip_address(host).packed
    family = _FAMILY_V4 if len(packed) == 4 else _FAMILY_V6
    if xor_with is not None:
        port ^= MAGIC_COOKIE >> 16
        packed = bytes(a ^ b for a, b in zip(packed, xor_with, strict=False))
    return struct.pack("!BBH", 0, family, port) + packed


def _text(value: str, what: str) -> bytes:
    raw = value.encode()
    if len(raw) > MAX_TEXT_BYTES:
        raise ValueError(f"{what} longer than {MAX_TEXT_BYTES} bytes")
    return raw


def encode(message: StunMessage) -> bytes:
    """Encode ``message``; attributes in a fixed order, FINGERPRINT last when asked for. Misuse (a
    transaction id that is not 12 bytes, an error code outside 300-699) raises ``ValueError``."""
    tid = message.transaction_id
    if len(tid) != TRANSACTION_ID_BYTES:
        raise ValueError("a STUN transaction id is 12 bytes")
    body = bytearray()
    if message.xor_mapped is not None:
        body += _attr(ATTR_XOR_MAPPED_ADDRESS, _address_value(message.xor_mapped, _xor_key(tid)))
    if message.mapped is not None:
        body += _attr(ATTR_MAPPED_ADDRESS, _address_value(message.mapped, None))
    if message.response_origin is not None:
        body += _attr(ATTR_RESPONSE_ORIGIN, _address_value(message.response_origin, None))
    if message.other_address is not None:
        body += _attr(ATTR_OTHER_ADDRESS, _address_value(message.other_address, None))
    if message.change_request is not None:
        body += _attr(ATTR_CHANGE_REQUEST, struct.pack("!I", message.change_request))
    if message.error is not None:
        code, reason = message.error
        if not 300 <= code <= 699:
            raise ValueError(f"STUN error code out of range: {code}")
        body += _attr(
            ATTR_ERROR_CODE, struct.pack("!HBB", 0, code // 100, code % 100) + _text(reason, "reason")
        )
    if message.unknown_attributes:
        body += _attr(
            ATTR_UNKNOWN_ATTRIBUTES,
            struct.pack(f"!{len(message.unknown_attributes)}H", *message.unknown_attributes),
        )
    if message.software is not None:
        body += _attr(ATTR_SOFTWARE, _text(message.software, "SOFTWARE"))
    mtype = message_type(message.cls, message.method)
    extra = 8 if message.fingerprint else 0
    out = _HEADER.pack(mtype, len(body) + extra, MAGIC_COOKIE, tid) + bytes(body)
    if message.fingerprint:
        crc = (zlib.crc32(out) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        out += _attr(ATTR_FINGERPRINT, struct.pack("!I", crc))
    if len(out) > MAX_MESSAGE_BYTES:
        raise ValueError("STUN message too long")
    return out


def binding_request(
    transaction_id: bytes, *, software: str | None = None, change: int = 0, fingerprint: bool = True
) -> bytes:
    """A Binding request; ``change`` is an RFC 5780 CHANGE-REQUEST (``CHANGE_IP | CHANGE_PORT``)."""
    return encode(
        StunMessage(
            StunClass.REQUEST,
            METHOD_BINDING,
            transaction_id,
            change_request=change or None,
            software=software,
            fingerprint=fingerprint,
        )
    )


def binding_success(
    transaction_id: bytes,
    mapped: Endpoint,
    *,
    response_origin: Endpoint | None = None,
    other_address: Endpoint | None = None,
    software: str | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A Binding success response telling the client where its request came from."""
    return encode(
        StunMessage(
            StunClass.SUCCESS,
            METHOD_BINDING,
            transaction_id,
            xor_mapped=mapped,
            response_origin=response_origin,
            other_address=other_address,
            software=software,
            fingerprint=fingerprint,
        )
    )


def binding_error(
    transaction_id: bytes,
    code: int,
    reason: str,
    *,
    unknown: tuple[int, ...] = (),
    software: str | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A Binding error response (420 carries the UNKNOWN-ATTRIBUTES list)."""
    return encode(
        StunMessage(
            StunClass.ERROR,
            METHOD_BINDING,
            transaction_id,
            error=(code, reason),
            unknown_attributes=unknown,
            software=software,
            fingerprint=fingerprint,
        )
    )


# -- decoding ------------------------------------------------------------------------------------------


def _decode_address(value: bytes, xor_with: bytes | None, what: str) -> Endpoint:
    if len(value) < 4:
        raise DecodeError(f"{what}: {len(value)} bytes")
    family = value[1]
    port = value[2] << 8 | value[3]
    raw = value[4:]
    if (family, len(raw)) not in ((_FAMILY_V4, 4), (_FAMILY_V6, 16)):
        raise DecodeError(f"{what}: family {family} with {len(raw)} address bytes")
    if xor_with is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor_with, strict=False))
    return (str(ipaddress.ip_address(raw)), port)


def _decode_error_code(value: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise DecodeError("ERROR-CODE too short")
    klass, number = value[2] & 0x07, value[3]
    if not 3 <= klass <= 6 or number > 99:
        raise DecodeError(f"ERROR-CODE {klass}/{number} out of range")
    return klass * 100 + number, value[4:].decode(errors="replace")


@dataclass(slots=True)
class _Fields:
    """The attributes decoded so far (first occurrence of each wins)."""

    addresses: dict[int, Endpoint]
    change: int | None = None
    error: tuple[int, str] | None = None
    unknown: tuple[int, ...] = ()
    software: str | None = None


def _decode_attribute(atype: int, value: bytes, xor_key: bytes, fields: _Fields) -> bool:
    """Decode one attribute into ``fields``; False if it is a comprehension-required type we do not know."""
    if atype == ATTR_XOR_MAPPED_ADDRESS:
        fields.addresses[atype] = _decode_address(value, xor_key, "XOR-MAPPED-ADDRESS")
    elif atype in (ATTR_MAPPED_ADDRESS, ATTR_RESPONSE_ORIGIN, ATTR_OTHER_ADDRESS, ATTR_CHANGED_ADDRESS):
        fields.addresses[atype] = _decode_address(value, None, f"address attribute {atype:#06x}")
    elif atype == ATTR_CHANGE_REQUEST:
        if len(value) != 4:
            raise DecodeError("CHANGE-REQUEST is not 4 bytes")
        fields.change = int.from_bytes(value, "big")
    elif atype == ATTR_ERROR_CODE:
        fields.error = _decode_error_code(value)
    elif atype == ATTR_UNKNOWN_ATTRIBUTES:
        if len(value) % 2:
            raise DecodeError("UNKNOWN-ATTRIBUTES has an odd length")
        fields.unknown = struct.unpack(f"!{len(value) // 2}H", value)
    elif atype == ATTR_SOFTWARE:
        fields.software = value.decode(errors="replace")
    elif atype not in _KNOWN_REQUIRED and atype < 0x8000:
        return False
    return True  # known (or comprehension-optional and skipped)


def decode(data: bytes) -> StunMessage:
    """Decode one STUN message. Raises :class:`DecodeError` and nothing else on any input."""
    n = len(data)
    if n > MAX_MESSAGE_BYTES:
        raise DecodeError(f"{n} bytes is longer than any STUN message we accept")
    if n < HEADER_BYTES:
        raise DecodeError("shorter than a STUN header")
    mtype, length, cookie, tid = _HEADER.unpack_from(data)
    if mtype & 0xC000:
        raise DecodeError("leading bits are not zero")
    if cookie != MAGIC_COOKIE:
        raise DecodeError("no magic cookie (RFC 3489 messages are not accepted)")
    if length % 4 or HEADER_BYTES + length != n:
        raise DecodeError(f"length field {length} does not match {n} bytes")
    cls, method = split_type(mtype)
    xor_key = _xor_key(tid)
    fields = _Fields(addresses={})
    seen: set[int] = set()
    unknown_required: list[int] = []
    fingerprint = False
    after_integrity = False
    offset = HEADER_BYTES
    while offset < n:
        if fingerprint:
            raise DecodeError("attribute after FINGERPRINT")
        if n - offset < 4:
            raise DecodeError("truncated attribute header")
        atype, alen = _ATTR.unpack_from(data, offset)
        end = offset + 4 + alen
        next_offset = end + (-alen % 4)
        if next_offset > n:
            raise DecodeError(f"attribute {atype:#06x} runs past the message")
        value = data[offset + 4 : end]
        if atype == ATTR_FINGERPRINT:
            if alen != 4:
                raise DecodeError("FINGERPRINT is not 4 bytes")
            want = (zlib.crc32(data[:offset]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if int.from_bytes(value, "big") != want:
                raise DecodeError("FINGERPRINT mismatch")
            fingerprint = True
        elif after_integrity and atype != ATTR_MESSAGE_INTEGRITY_SHA256:
            pass  # section 14.5: everything else after MESSAGE-INTEGRITY is ignored
        elif atype in (ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256):
            after_integrity = True
        elif atype not in seen:  # section 14: only the first occurrence is processed
            seen.add(atype)
            if not _decode_attribute(atype, value, xor_key, fields):
                unknown_required.append(atype)
        offset = next_offset
    addresses = fields.addresses
    return StunMessage(
        cls=cls,
        method=method,
        transaction_id=tid,
        xor_mapped=addresses.get(ATTR_XOR_MAPPED_ADDRESS),
        mapped=addresses.get(ATTR_MAPPED_ADDRESS),
        response_origin=addresses.get(ATTR_RESPONSE_ORIGIN),
        other_address=addresses.get(ATTR_OTHER_ADDRESS) or addresses.get(ATTR_CHANGED_ADDRESS),
        change_request=fields.change,
        software=fields.software,
        error=fields.error,
        unknown_attributes=fields.unknown,
        unknown_required=tuple(unknown_required),
        fingerprint=fingerprint,
    )
