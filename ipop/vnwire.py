"""Pure. What the virtual network puts in the DHT and on the overlay: record keys and values, the header
of a carried IPv4 packet, and the small control messages between nodes.

DHT records (keys are ASCII, prefixed with the namespace so that namespaces sharing an overlay never
see each other's records):

    dhcp:<ns>:<ip>     created (one owner): the node that holds the address. The value says for which
                       DHCP client, or that it is a static address; the owner's overlay address is the
                       hash of the record's signing key, so nobody can map an address to another node.
    dns:<ns>:<name>    created: the address of member ``<name>.<domain>``; the first owner keeps it.
    bcast:<ns>         put, one value per member node: who receives the namespace's broadcasts.

Values are msgpack arrays whose first element is a version, checked with size limits before anything
is unpacked. Every decoder here raises only :class:`WireError`.

Packets on the overlay (service ``IPOP``) are the bare IPv4 packet behind a five-byte header: one byte
of version and kind, four bytes of namespace tag (a hash of the namespace, so a packet of another
namespace is dropped before anything else is looked at). The Ethernet header is not carried: the
receiver writes its own, from its remote MAC to the local machine's MAC. Control messages (service
``IPOP_CONTROL``) are msgpack arrays ``[version, kind, tag, ...]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

import msgpack

VERSION = 1
"""Of every value and message here; a node refuses other versions (counted as malformed)."""

KIND_UNICAST = 1
KIND_BROADCAST = 2
HEADER_LEN = 5
"""Version/kind byte and the four-byte namespace tag before every carried packet: what the virtual
MTU gives up to the overlay's payload MTU."""

MAX_VALUE_BYTES = 128
"""Largest record value decoded: ours are under 40 bytes (a client key is at most 64)."""
MAX_CONTROL_BYTES = 256
"""Largest control message decoded: ours are under 30 bytes."""
MAX_CLIENT_KEY = 64
"""A DHCP client identifier (option 61) is at most 255 bytes on the wire, but any real one (a MAC, a
DUID) is under 40; longer ones are refused rather than stored in every replica."""

CONTROL_NO_MAPPING = "nomap"
""""I do not hold this address": the sender's mapping is stale and must be looked up again."""
CONTROL_HELLO = "hello"
""""I am a new member": receivers add the sender to the namespace's broadcast group at once, instead
of at their next read of the member list."""


class WireError(Exception):
    """Bytes that are not a valid value or message of this module."""


def namespace_tag(namespace: str) -> bytes:
    """Four bytes that tell namespaces apart on the wire (BLAKE2b, personalised for this use)."""
    return hashlib.blake2b(namespace.encode(), digest_size=4, person=b"ipop-ns").digest()


def packet_header(kind: int, tag: bytes) -> bytes:
    """The five bytes before a carried packet."""
    if kind not in (KIND_UNICAST, KIND_BROADCAST) or len(tag) != 4:
        raise ValueError("bad packet kind or namespace tag")
    return bytes([VERSION << 4 | kind]) + tag


# -- keys ------------------------------------------------------------------------------------------------


def address_key(namespace: str, ip: IPv4Address) -> bytes:
    return f"dhcp:{namespace}:{ip}".encode()


def name_key(namespace: str, name: str) -> bytes:
    return f"dns:{namespace}:{name}".encode()


def members_key(namespace: str) -> bytes:
    return f"bcast:{namespace}".encode()


# -- values ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddressClaim:
    """The value of ``dhcp:<ns>:<ip>``: which machine behind the owning node uses the address."""

    client: bytes
    """The DHCP client key (option 61, or 0x01 + MAC); empty for a statically configured address."""

    def encode(self) -> bytes:
        if len(self.client) > MAX_CLIENT_KEY:
            raise ValueError(f"a client key has at most {MAX_CLIENT_KEY} bytes")
        return _pack([VERSION, "a", self.client])

    @classmethod
    def decode(cls, data: bytes) -> AddressClaim:
        items = _unpack(data, MAX_VALUE_BYTES, "a", 3)
        client = items[2]
        if not isinstance(client, bytes) or len(client) > MAX_CLIENT_KEY:
            raise WireError("bad client key in an address claim")
        return cls(client)

    @property
    def static(self) -> bool:
        return not self.client


@dataclass(frozen=True, slots=True)
class NameRecord:
    """The value of ``dns:<ns>:<name>``: the member's virtual address."""

    ip: IPv4Address

    def encode(self) -> bytes:
        return _pack([VERSION, "n", self.ip.packed])

    @classmethod
    def decode(cls, data: bytes) -> NameRecord:
        items = _unpack(data, MAX_VALUE_BYTES, "n", 3)
        return cls(_ip(items[2]))


MEMBER_VALUE = b"\x92\x01\xa1m"
"""The value each member puts under ``bcast:<ns>`` (msgpack ``[1, "m"]``): the same for everyone,
because the DHT tells values apart by owner, and the owner is who receives the broadcasts."""


def is_member_value(data: bytes) -> bool:
    return data == MEMBER_VALUE


# -- control messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoMapping:
    """Sent to a node that delivered a packet for ``ip`` to us although we do not hold ``ip``."""

    ip: IPv4Address

    def encode(self, tag: bytes) -> bytes:
        return _pack([VERSION, CONTROL_NO_MAPPING, tag, self.ip.packed])


@dataclass(frozen=True, slots=True)
class Hello:
    """Sent by a new member to every member it found, once it announced itself."""

    def encode(self, tag: bytes) -> bytes:
        return _pack([VERSION, CONTROL_HELLO, tag])


ControlMessage = NoMapping | Hello


def decode_control(data: bytes, tag: bytes) -> ControlMessage:
    """A control message of namespace ``tag``. WireError for anything else, other namespaces included."""
    if len(data) > MAX_CONTROL_BYTES:
        raise WireError(f"control message of {len(data)} bytes")
    items = _unpack(data, MAX_CONTROL_BYTES, None, 3)
    if items[2] != tag:
        raise WireError("control message of another namespace")
    if items[1] == CONTROL_NO_MAPPING and len(items) == 4:
        return NoMapping(_ip(items[3]))
    if items[1] == CONTROL_HELLO and len(items) == 3:
        return Hello()
    raise WireError(f"unknown control message {items[1]!r}")


# -- helpers ---------------------------------------------------------------------------------------------


def _pack(items: list[Any]) -> bytes:
    data: bytes = msgpack.packb(items, use_bin_type=True)
    return data


def _unpack(data: bytes, limit: int, kind: str | None, least: int) -> list[Any]:
    if not isinstance(data, bytes) or len(data) > limit:
        raise WireError("value too long or not bytes")
    try:
        items = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=8,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"not msgpack: {exc}") from None
    if not isinstance(items, list) or len(items) < least or items[0] != VERSION or isinstance(items[0], bool):
        raise WireError("not a versioned array")
    if kind is not None and (items[1] != kind or len(items) != least):
        raise WireError(f"not a {kind!r} value")
    return items


def _ip(raw: Any) -> IPv4Address:
    if not isinstance(raw, bytes) or len(raw) != 4:
        raise WireError("bad IPv4 address")
    return IPv4Address(raw)
