"""Pure. DHCP messages (RFC 2131) and their options (RFC 2132), as a codec.

Options are kept as an ordered tuple of (code, value) pairs, which is what the wire holds: a decoder
that turned them into typed fields would have to know every option a client may send, and would lose
the order clients care about when we echo something back. Typed accessors read the few options a
server acts on. Decoding follows RFC 3396 (an option split over several instances is concatenated) and
the option-overload rule (option 52: more options in the ``file`` and/or ``sname`` fields).

Nothing here allocates more than the datagram it was given: every length byte is checked against what
remains before it is used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import IntEnum
from ipaddress import IPv4Address

from .errors import DecodeError

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
MAGIC_COOKIE = b"\x63\x82\x53\x63"
FIXED_LEN = 236
"""op .. file: the BOOTP header, before the magic cookie."""
MIN_LEN = FIXED_LEN + len(MAGIC_COOKIE)
BOOTP_MIN_LEN = 300
"""Replies are padded to BOOTP's 300 bytes: some old clients and relays drop anything shorter."""
FLAG_BROADCAST = 0x8000
SERVER_PORT = 67
CLIENT_PORT = 68
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
UNSPECIFIED = IPv4Address(0)


class MessageType(IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(IntEnum):
    """The option codes this package reads or writes."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS_SERVERS = 6
    HOSTNAME = 12
    DOMAIN_NAME = 15
    INTERFACE_MTU = 26
    BROADCAST_ADDRESS = 28
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    CLIENT_FQDN = 81
    DOMAIN_SEARCH = 119
    END = 255


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    op: int
    xid: int
    chaddr: bytes
    """The client hardware address, 16 bytes on the wire; only the first ``hlen`` are meaningful."""
    options: tuple[tuple[int, bytes], ...] = ()
    ciaddr: IPv4Address = UNSPECIFIED
    yiaddr: IPv4Address = UNSPECIFIED
    siaddr: IPv4Address = UNSPECIFIED
    giaddr: IPv4Address = UNSPECIFIED
    flags: int = 0
    secs: int = 0
    hops: int = 0
    htype: int = HTYPE_ETHERNET
    hlen: int = 6
    sname: bytes = b""
    file: bytes = b""

    # -- accessors --------------------------------------------------------------------------------

    def option(self, code: int) -> bytes | None:
        for c, value in self.options:
            if c == code:
                return value
        return None

    @property
    def message_type(self) -> int | None:
        value = self.option(Opt.MESSAGE_TYPE)
        return value[0] if value is not None and len(value) == 1 else None

    @property
    def client_mac(self) -> bytes:
        return self.chaddr[: min(self.hlen, 16)]

    @property
    def broadcast_flag(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    def ip_option(self, code: int) -> IPv4Address | None:
        value = self.option(code)
        return IPv4Address(value) if value is not None and len(value) == 4 else None

    def int_option(self, code: int) -> int | None:
        value = self.option(code)
        return int.from_bytes(value, "big") if value is not None and len(value) in (1, 2, 4) else None

    @property
    def requested_ip(self) -> IPv4Address | None:
        return self.ip_option(Opt.REQUESTED_IP)

    @property
    def server_id(self) -> IPv4Address | None:
        return self.ip_option(Opt.SERVER_ID)

    @property
    def client_id(self) -> bytes | None:
        value = self.option(Opt.CLIENT_ID)
        return value if value else None

    @property
    def hostname(self) -> str | None:
        """Option 12 as text if it is printable ASCII; validating it as a DNS label is the server's
        business."""
        value = self.option(Opt.HOSTNAME)
        if not value or not all(0x21 <= b < 0x7F for b in value.rstrip(b"\x00")):
            return None
        return value.rstrip(b"\x00").decode("ascii") or None

    @property
    def parameter_request_list(self) -> bytes:
        return self.option(Opt.PARAMETER_REQUEST_LIST) or b""

    def with_options(self, options: tuple[tuple[int, bytes], ...]) -> DhcpMessage:
        return replace(self, options=options)

    # -- wire -------------------------------------------------------------------------------------

    def encode(self, pad_to: int = BOOTP_MIN_LEN) -> bytes:
        """Encode with options in order, each split into 255-byte pieces (RFC 3396), END appended and
        the message padded to ``pad_to`` bytes."""
        if len(self.chaddr) > 16 or len(self.sname) > 64 or len(self.file) > 128:
            raise ValueError("chaddr, sname or file too long")
        fixed = _FIXED.pack(
            self.op,
            self.htype,
            self.hlen,
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr.packed,
            self.yiaddr.packed,
            self.siaddr.packed,
            self.giaddr.packed,
            self.chaddr,
            self.sname,
            self.file,
        )
        parts = [fixed, MAGIC_COOKIE]
        for code, value in self.options:
            if code in (Opt.PAD, Opt.END) or not 0 < code < 255:
                raise ValueError(f"option code {code} cannot carry a value")
            if not value:
                parts.append(bytes((code, 0)))
            for i in range(0, len(value), 255):
                piece = value[i : i + 255]
                parts.append(bytes((code, len(piece))) + piece)
        parts.append(bytes((Opt.END,)))
        data = b"".join(parts)
        return data + b"\x00" * (pad_to - len(data)) if len(data) < pad_to else data

    @classmethod
    def decode(cls, data: bytes) -> DhcpMessage:
        if len(data) < MIN_LEN:
            raise DecodeError(f"DHCP message of {len(data)} bytes, need at least {MIN_LEN}")
        if data[FIXED_LEN:MIN_LEN] != MAGIC_COOKIE:
            raise DecodeError("no DHCP magic cookie (a plain BOOTP message)")
        op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file = _FIXED.unpack_from(
            data
        )
        if op not in (BOOTREQUEST, BOOTREPLY):
            raise DecodeError(f"BOOTP op {op}")
        if hlen > 16:
            raise DecodeError(f"hardware address length {hlen}")
        collected: dict[int, bytearray] = {}
        order: list[int] = []
        _parse_options(data, MIN_LEN, len(data), collected, order)
        overload = 0
        overload_value = collected.get(Opt.OVERLOAD)
        if overload_value is not None:
            if len(overload_value) != 1 or overload_value[0] not in (1, 2, 3):
                raise DecodeError("bad option overload value")
            overload = overload_value[0]
            # RFC 2131 §4.1: the file field is read before sname.
            if overload & 1:
                _parse_options(data, 108, 236, collected, order)
            if overload & 2:
                _parse_options(data, 44, 108, collected, order)
        options = tuple((code, bytes(collected[code])) for code in order)
        if overload & 2:
            sname = b""
        if overload & 1:
            file = b""
        return cls(
            op,
            xid,
            chaddr,
            options,
            IPv4Address(ci),
            IPv4Address(yi),
            IPv4Address(si),
            IPv4Address(gi),
            flags,
            secs,
            hops,
            htype,
            hlen,
            sname.rstrip(b"\x00"),
            file.rstrip(b"\x00"),
        )


def _parse_options(data: bytes, start: int, end: int, into: dict[int, bytearray], order: list[int]) -> None:
    """Parse options from ``data[start:end]`` into ``into`` (concatenating repeats), recording first
    appearance in ``order``. A missing END is tolerated (many clients pad with zeros only)."""
    i = start
    while i < end:
        code = data[i]
        if code == Opt.PAD:
            i += 1
            continue
        if code == Opt.END:
            break
        if i + 1 >= end:
            raise DecodeError(f"option {code} has no length byte")
        length = data[i + 1]
        if i + 2 + length > end:
            raise DecodeError(f"option {code} of length {length} runs past the end")
        if code not in into:
            into[code] = bytearray()
            order.append(code)
        into[code] += data[i + 2 : i + 2 + length]
        i += 2 + length


def encode_domain_list(names: tuple[str, ...]) -> bytes:
    """Option 119's value: the names in DNS wire format, uncompressed (RFC 3397 allows either)."""
    out = bytearray()
    for name in names:
        for label in name.strip(".").split("."):
            raw = label.encode("ascii")
            if not 0 < len(raw) < 64:
                raise ValueError(f"bad DNS label in {name!r}")
            out += bytes((len(raw),)) + raw
        out += b"\x00"
    return bytes(out)


def decode_domain_list(value: bytes) -> tuple[str, ...]:
    """Inverse of :func:`encode_domain_list`, following compression pointers within the option."""
    names: list[str] = []
    i = 0
    while i < len(value):
        labels, i = _read_name(value, i)
        names.append(".".join(labels))
    return tuple(names)


def _read_name(value: bytes, i: int) -> tuple[list[str], int]:
    labels: list[str] = []
    end_after: int | None = None
    jumps = 0
    while True:
        if i >= len(value):
            raise DecodeError("domain list truncated")
        length = value[i]
        if length == 0:
            return labels, (i + 1 if end_after is None else end_after)
        if length & 0xC0 == 0xC0:
            if i + 1 >= len(value) or jumps > len(value):
                raise DecodeError("bad compression pointer in domain list")
            if end_after is None:
                end_after = i + 2
            i = ((length & 0x3F) << 8) | value[i + 1]
            jumps += 1
            continue
        if length > 63 or i + 1 + length > len(value):
            raise DecodeError("bad label in domain list")
        labels.append(value[i + 1 : i + 1 + length].decode("ascii", "replace"))
        i += 1 + length
