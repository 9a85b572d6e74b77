"""Pure. The overlay's messages inside a sealed link packet, and their codecs.

Everything here travels *inside* an authenticated, encrypted link datagram (see ``linksec``), so a peer
has already proven membership of the realm; still, every decoder treats its input as hostile: lengths are
checked before anything is allocated, msgpack runs with tight limits, and the only exception that leaves
this module on bad input is :class:`WireError`.

The first plaintext byte says what follows:

* ``APP`` - ``[0x01][service u8][payload]``: a message from the link peer itself (one hop). This is the
  data plane's path: three bytes of overhead and no encoding work per packet.
* ``CONTROL`` - ``[0x02][msgpack list]``: link management between the two ends (hello, ping, close, ...).
* ``ROUTED`` - ``[0x03][flags][service][hops][src 20][dest 20]([via 20])[payload]``: a message being routed
  across the overlay. A fixed binary header (not msgpack) because every forwarding hop reads it and
  rewrites the hop count; the payload is never re-encoded on the way.
* ``PROBE`` - ``[0x04][size u32][zero padding]``: a path MTU probe, padded so that the whole sealed
  datagram is ``size`` bytes (``overlay.linkmtu``); ``PROBE_ACK`` - ``[0x05][size u32]``: its answer.

The wire version is the outer datagram's first byte (``0xA1`` = ipop v1, see ``linksec``). Routed overlay
service messages (connect-to-me, route errors) are msgpack lists whose first element is their type.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from .address import ADDRESS_BYTES, Address
from .events import Endpoint

KIND_APP = 0x01
KIND_CONTROL = 0x02
KIND_ROUTED = 0x03
KIND_PROBE = 0x04
KIND_PROBE_ACK = 0x05

FLAG_EXACT = 0x01
"""Deliver only to the node with exactly this address; otherwise to the node closest to it."""
FLAG_EXCLUDE_SRC = 0x02
"""Route to the closest node *other than the source* (a joining node looking for its neighbours)."""
FLAG_VIA = 0x04
"""Travel to the ``via`` node first, which forwards to ``dest`` over its direct link (a node that is not
yet part of the ring is reachable only through the peer it joined through; relayed links use it too)."""

_ROUTED = struct.Struct("!BBBB20s20s")
ROUTED_HEADER = _ROUTED.size
ROUTED_VIA_HEADER = ROUTED_HEADER + ADDRESS_BYTES

MAX_CONTROL_BYTES = 4096
"""Control and overlay-service messages are small (a neighbour list is the largest, ~40 B per entry);
anything bigger is refused before msgpack looks at it."""

MAX_CANDIDATES = 8
"""Endpoints a node advertises: host addresses, reflexive and predicted ones; more is never useful."""

MAX_NEIGHBOURS = 16
"""Entries in a neighbour list: near links on both sides with room to spare."""

_UNPACK_LIMITS: dict[str, int] = {
    "max_str_len": 256,
    "max_bin_len": 1024,
    "max_array_len": 64,
    "max_map_len": 16,
    "max_ext_len": 0,
}


class WireError(ValueError):
    """A message that does not decode; the receiver counts and drops it."""


# --- control messages between the two ends of a link ---------------------------------------------

C_HELLO = 1
C_PING = 2
C_PONG = 3
C_CLOSE = 4
C_NEIGHBOURS = 5
C_ROLES = 6

# --- overlay-service messages routed across the overlay (service OVERLAY) -----------------------

R_CONNECT = 10
R_CONNECT_REPLY = 11
R_ROUTE_ERROR = 12


@dataclass(frozen=True, slots=True)
class Hello:
    """First message on a new session, from both ends: what the sender uses the link for, where it can be
    reached, and where it sees the receiver (reflexive-address discovery needs no STUN server)."""

    roles: int
    candidates: tuple[Endpoint, ...]
    observed: Endpoint | None


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int
    observed: Endpoint | None


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


@dataclass(frozen=True, slots=True)
class Neighbour:
    address: Address
    candidates: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class Neighbours:
    """The sender's ring neighbourhood: how nodes learn of nodes closer to them (ring stabilisation)."""

    entries: tuple[Neighbour, ...]


@dataclass(frozen=True, slots=True)
class Roles:
    roles: int


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect-to-me: "open a link to me for ``role``; here is where I can be reached". Routed to an
    address (exact) or to a ring position (far links; the closest node answers)."""

    token: int
    role: int
    candidates: tuple[Endpoint, ...]
    reply_via: Address | None


@dataclass(frozen=True, slots=True)
class ConnectReply:
    token: int
    candidates: tuple[Endpoint, ...]
    neighbours: tuple[Neighbour, ...]


@dataclass(frozen=True, slots=True)
class RouteError:
    """Sent back to a message's source when no node has its exact destination address."""

    dest: Address
    service: int


ControlMessage = Hello | Ping | Pong | Close | Neighbours | Roles
OverlayMessage = Connect | ConnectReply | RouteError


def _endpoints(items: tuple[Endpoint, ...]) -> list[list[Any]]:
    return [[host, port] for host, port in items[:MAX_CANDIDATES]]


def _neighbours(items: tuple[Neighbour, ...]) -> list[list[Any]]:
    return [
        [n.address.to_bytes(ADDRESS_BYTES, "big"), _endpoints(n.candidates)] for n in items[:MAX_NEIGHBOURS]
    ]


def _encode(obj: list[Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def encode_control(msg: ControlMessage) -> bytes:
    """A whole CONTROL plaintext (kind byte included)."""
    match msg:
        case Hello(roles, candidates, observed):
            body = [C_HELLO, roles, _endpoints(candidates), list(observed) if observed else None]
        case Ping(nonce):
            body = [C_PING, nonce]
        case Pong(nonce, observed):
            body = [C_PONG, nonce, list(observed) if observed else None]
        case Close(reason):
            body = [C_CLOSE, reason[:64]]
        case Neighbours(entries):
            body = [C_NEIGHBOURS, _neighbours(entries)]
        case Roles(roles):
            body = [C_ROLES, roles]
    return bytes((KIND_CONTROL,)) + _encode(body)


def encode_overlay(msg: OverlayMessage) -> bytes:
    """The payload of a routed message of service OVERLAY."""
    match msg:
        case Connect(token, role, candidates, reply_via):
            via = reply_via.to_bytes(ADDRESS_BYTES, "big") if reply_via is not None else None
            body = [R_CONNECT, token, role, _endpoints(candidates), via]
        case ConnectReply(token, candidates, neighbours):
            body = [R_CONNECT_REPLY, token, _endpoints(candidates), _neighbours(neighbours)]
        case RouteError(dest, service):
            body = [R_ROUTE_ERROR, dest.to_bytes(ADDRESS_BYTES, "big"), service]
    return _encode(body)


# --- decoding ---------------------------------------------------------------------------------------


def _unpack(data: bytes | memoryview) -> list[Any]:
    if len(data) > MAX_CONTROL_BYTES:
        raise WireError("message too large")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises a zoo of types on hostile input
        raise WireError(f"undecodable msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], int):
        raise WireError("not a typed message")
    return obj


def _int(value: Any, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise WireError("bad integer field")
    return value


def _endpoint(value: Any) -> Endpoint:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not 0 < len(value[0]) <= 64
    ):
        raise WireError("bad endpoint")
    # Shared (see ``_shared``): the same few thousand peer endpoints arrive in every neighbour list.
    endpoint: Endpoint = _shared((value[0], _int(value[1], 0, 65535)))
    return endpoint


SHARED_MAX = 32768
"""Distinct decoded values of one kind (addresses, endpoints, candidate lists) kept for sharing."""

_shared_values: dict[Any, Any] = {}


def _shared(value: Any) -> Any:
    """One object for equal values decoded from the wire: the same few thousand peer addresses and
    endpoints arrive in every neighbour list, Hello and Pong, and each decoded copy would otherwise live
    on in a node's tables (link candidates, hearsay, informants). In a simulator of N nodes in one
    process this sharing saved ~10 KB per node (docs/simscale.md); in a real node it costs a bounded
    dict. Oldest first out when full, so hostile input can only make sharing less effective."""
    got = _shared_values.get(value)
    if got is None:
        if len(_shared_values) >= SHARED_MAX:
            del _shared_values[next(iter(_shared_values))]
        _shared_values[value] = got = value
    return got


def _opt_endpoint(value: Any) -> Endpoint | None:
    return None if value is None else _endpoint(value)


def _endpoint_list(value: Any) -> tuple[Endpoint, ...]:
    if not isinstance(value, list) or len(value) > MAX_CANDIDATES:
        raise WireError("bad endpoint list")
    endpoints: tuple[Endpoint, ...] = _shared(tuple(_endpoint(v) for v in value))
    return endpoints


def _address(value: Any) -> Address:
    if not isinstance(value, bytes) or len(value) != ADDRESS_BYTES:
        raise WireError("bad address")
    address: Address = _shared(Address(int.from_bytes(value, "big")))
    return address


def _neighbour_list(value: Any) -> tuple[Neighbour, ...]:
    if not isinstance(value, list) or len(value) > MAX_NEIGHBOURS:
        raise WireError("bad neighbour list")
    out = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise WireError("bad neighbour")
        out.append(Neighbour(_address(item[0]), _endpoint_list(item[1])))
    return tuple(out)


def _fields(obj: list[Any], count: int) -> list[Any]:
    if len(obj) != count:
        raise WireError(f"message type {obj[0]} needs {count} fields")
    return obj


def decode_control(body: bytes | memoryview) -> ControlMessage:
    """Decode a CONTROL plaintext *without* its kind byte."""
    obj = _unpack(body)
    kind = obj[0]
    if kind == C_HELLO:
        _, roles, cands, observed = _fields(obj, 4)
        return Hello(_int(roles, 0, 255), _endpoint_list(cands), _opt_endpoint(observed))
    if kind == C_PING:
        return Ping(_int(_fields(obj, 2)[1]))
    if kind == C_PONG:
        _, nonce, observed = _fields(obj, 3)
        return Pong(_int(nonce), _opt_endpoint(observed))
    if kind == C_CLOSE:
        reason = _fields(obj, 2)[1]
        if not isinstance(reason, str):
            raise WireError("bad close reason")
        return Close(reason[:64])
    if kind == C_NEIGHBOURS:
        return Neighbours(_neighbour_list(_fields(obj, 2)[1]))
    if kind == C_ROLES:
        return Roles(_int(_fields(obj, 2)[1], 0, 255))
    raise WireError(f"unknown control message {kind}")


def decode_overlay(body: bytes | memoryview) -> OverlayMessage:
    obj = _unpack(body)
    kind = obj[0]
    if kind == R_CONNECT:
        _, token, role, cands, via = _fields(obj, 5)
        return Connect(
            _int(token), _int(role, 0, 255), _endpoint_list(cands), None if via is None else _address(via)
        )
    if kind == R_CONNECT_REPLY:
        _, token, cands, neighbours = _fields(obj, 4)
        return ConnectReply(_int(token), _endpoint_list(cands), _neighbour_list(neighbours))
    if kind == R_ROUTE_ERROR:
        _, dest, service = _fields(obj, 3)
        return RouteError(_address(dest), _int(service, 0, 255))
    raise WireError(f"unknown overlay message {kind}")


# --- routed messages ---------------------------------------------------------------------------------


def encode_routed(
    flags: int, service: int, hops: int, src: int, dest: int, via: int | None, payload: bytes
) -> bytes:
    head = _ROUTED.pack(
        KIND_ROUTED,
        flags | (FLAG_VIA if via is not None else 0),
        service,
        hops,
        src.to_bytes(ADDRESS_BYTES, "big"),
        dest.to_bytes(ADDRESS_BYTES, "big"),
    )
    if via is not None:
        return head + via.to_bytes(ADDRESS_BYTES, "big") + payload
    return head + payload


@dataclass(slots=True)
class Routed:
    """A decoded routed message. Mutable on purpose: a forwarding node bumps ``hops`` (and clears
    ``via`` on reaching it) and re-encodes the header only."""

    flags: int
    service: int
    hops: int
    src: Address
    dest: Address
    via: Address | None
    payload: bytes

    def encode(self) -> bytes:
        return encode_routed(
            self.flags & ~FLAG_VIA, self.service, self.hops, self.src, self.dest, self.via, self.payload
        )


def decode_routed(plaintext: bytes) -> Routed:
    """Decode a ROUTED plaintext (kind byte included)."""
    if len(plaintext) < ROUTED_HEADER:
        raise WireError("short routed header")
    _, flags, service, hops, src, dest = _ROUTED.unpack_from(plaintext)
    via: Address | None = None
    start = ROUTED_HEADER
    if flags & FLAG_VIA:
        if len(plaintext) < ROUTED_VIA_HEADER:
            raise WireError("short routed header")
        via = Address(int.from_bytes(plaintext[ROUTED_HEADER:ROUTED_VIA_HEADER], "big"))
        start = ROUTED_VIA_HEADER
    return Routed(
        flags,
        service,
        hops,
        Address(int.from_bytes(src, "big")),
        Address(int.from_bytes(dest, "big")),
        via,
        plaintext[start:],
    )


def encode_app(service: int, payload: bytes) -> bytes:
    return bytes((KIND_APP, service)) + payload
