"""Pure. How the DHCP server words and addresses its replies (RFC 2131 §4.1, §4.3, table 3).

Kept apart from the state machine so that each reads on its own: the server decides *what* to say,
this module decides which options a reply carries and where on the Ethernet it goes.

Addressing (§4.1): a NAK is broadcast; a reply to a client that has an address (``ciaddr``: renewing,
rebinding, informing) is unicast to it; otherwise a client that set the broadcast flag gets a broadcast,
and one that did not gets a unicast to the offered address at its hardware address. That last case needs
no ARP: the frame is written straight to the TAP device with the client's MAC.
"""

from __future__ import annotations

import re
import struct
from ipaddress import IPv4Address

from .dhcp import (
    BOOTREPLY,
    CLIENT_PORT,
    FLAG_BROADCAST,
    SERVER_PORT,
    UNSPECIFIED,
    DhcpMessage,
    MessageType,
    Opt,
    encode_domain_list,
)
from .dhcp_config import DhcpServerConfig
from .ethernet import BROADCAST_MAC, SendFrame
from .udp import UdpFrame, udp_frame

LIMITED_BROADCAST = IPv4Address("255.255.255.255")
RENEWAL_FRACTION = 0.5
"""T1 as a fraction of the lease: RFC 2131 §4.4.5's default."""
REBINDING_FRACTION = 0.875
"""T2 as a fraction of the lease: RFC 2131 §4.4.5's default."""
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
FQDN_FLAG_E = 0x04
"""Option 81 (RFC 4702 §2.1): the name is in DNS wire format rather than ASCII."""


def hostname_of(text: str | None) -> str | None:
    """A host name fit to be a DNS label under the virtual domain: the first label, lower-cased, of
    letters, digits and inner hyphens (RFC 1123 §2.1). Anything else is None: a client's host name is
    untrusted text that will be published in the DHT."""
    if not text:
        return None
    label = text.strip().lower().split(".", 1)[0]
    return label if _LABEL.match(label) else None


def requested_hostname(msg: DhcpMessage) -> str | None:
    """The host name a client announces: option 12, else the first label of option 81 (client FQDN)."""
    name = hostname_of(msg.hostname)
    if name is not None:
        return name
    fqdn = msg.option(Opt.CLIENT_FQDN)
    if fqdn is None or len(fqdn) < 4:
        return None
    if fqdn[0] & FQDN_FLAG_E:
        length = fqdn[3]
        raw = fqdn[4 : 4 + length] if 0 < length < 64 else b""
    else:
        raw = fqdn[3:]
    return hostname_of(raw.decode("ascii", "replace")) if raw.isascii() else None


class ReplyBuilder:
    """Builds OFFER, ACK, NAK and INFORM-ACK frames for one server configuration."""

    def __init__(self, config: DhcpServerConfig) -> None:
        self.config = config
        subnet = config.subnet
        common: list[tuple[int, bytes]] = [
            (Opt.SUBNET_MASK, subnet.netmask.packed),
            (Opt.BROADCAST_ADDRESS, subnet.broadcast_address.packed),
        ]
        if config.router is not None:
            common.append((Opt.ROUTER, config.router.packed))
        common += [
            (Opt.DNS_SERVERS, b"".join(ip.packed for ip in config.effective_dns_servers)),
            (Opt.DOMAIN_NAME, config.domain.encode("ascii")),
            (Opt.DOMAIN_SEARCH, encode_domain_list(config.effective_search_list)),
            (Opt.INTERFACE_MTU, struct.pack("!H", config.mtu)),
        ]
        self._common = tuple(common)
        lease = config.lease_time_s
        self._lease = (
            (Opt.LEASE_TIME, struct.pack("!I", lease)),
            (Opt.RENEWAL_TIME, struct.pack("!I", int(lease * RENEWAL_FRACTION))),
            (Opt.REBINDING_TIME, struct.pack("!I", int(lease * REBINDING_FRACTION))),
        )
        self._server_id = (Opt.SERVER_ID, config.server_ip.packed)

    def offer(self, request: DhcpMessage, via: UdpFrame, ip: IPv4Address) -> SendFrame:
        lease = (*self._lease, *self._common)
        return self._send(request, via, MessageType.OFFER, yiaddr=ip, ciaddr=UNSPECIFIED, options=lease)

    def ack(self, request: DhcpMessage, via: UdpFrame, ip: IPv4Address) -> SendFrame:
        lease = (*self._lease, *self._common)
        return self._send(request, via, MessageType.ACK, yiaddr=ip, ciaddr=request.ciaddr, options=lease)

    def inform_ack(self, request: DhcpMessage, via: UdpFrame) -> SendFrame:
        """RFC 2131 §3.4: configuration only, no address and no lease time."""
        return self._send(
            request, via, MessageType.ACK, yiaddr=UNSPECIFIED, ciaddr=request.ciaddr, options=self._common
        )

    def nak(self, request: DhcpMessage, why: str) -> SendFrame:
        message = (Opt.MESSAGE, why.encode("ascii", "replace")[:255])
        reply = self._message(
            request, MessageType.NAK, yiaddr=UNSPECIFIED, ciaddr=UNSPECIFIED, options=(message,)
        )
        frame = udp_frame(
            self.config.server_mac,
            BROADCAST_MAC,
            self.config.server_ip,
            LIMITED_BROADCAST,
            src_port=SERVER_PORT,
            dst_port=CLIENT_PORT,
            payload=reply.encode(),
        )
        return SendFrame(frame)

    def _send(
        self,
        request: DhcpMessage,
        via: UdpFrame,
        kind: MessageType,
        *,
        yiaddr: IPv4Address,
        ciaddr: IPv4Address,
        options: tuple[tuple[int, bytes], ...],
    ) -> SendFrame:
        reply = self._message(request, kind, yiaddr=yiaddr, ciaddr=ciaddr, options=options)
        if int(request.ciaddr):
            dst_ip, dst_mac = request.ciaddr, via.src_mac
        elif kind == MessageType.ACK and not int(yiaddr):
            # An INFORM without ciaddr: answer where it came from, or broadcast if that is unknown.
            dst_ip, dst_mac = (
                (via.src_ip, via.src_mac) if int(via.src_ip) else (LIMITED_BROADCAST, BROADCAST_MAC)
            )
        elif request.flags & FLAG_BROADCAST:
            dst_ip, dst_mac = LIMITED_BROADCAST, BROADCAST_MAC
        else:
            dst_ip, dst_mac = yiaddr, request.client_mac
        frame = udp_frame(
            self.config.server_mac,
            dst_mac,
            self.config.server_ip,
            dst_ip,
            src_port=SERVER_PORT,
            dst_port=CLIENT_PORT,
            payload=reply.encode(),
        )
        return SendFrame(frame)

    def _message(
        self,
        request: DhcpMessage,
        kind: MessageType,
        *,
        yiaddr: IPv4Address,
        ciaddr: IPv4Address,
        options: tuple[tuple[int, bytes], ...],
    ) -> DhcpMessage:
        head: tuple[tuple[int, bytes], ...] = ((Opt.MESSAGE_TYPE, bytes((kind,))), self._server_id)
        tail: tuple[tuple[int, bytes], ...] = ()
        if request.client_id is not None:
            # RFC 6842: a server MUST echo the client identifier.
            tail = ((Opt.CLIENT_ID, request.client_id),)
        return DhcpMessage(
            op=BOOTREPLY,
            xid=request.xid,
            chaddr=request.chaddr,
            options=head + options + tail,
            ciaddr=ciaddr,
            yiaddr=yiaddr,
            giaddr=request.giaddr,
            flags=request.flags,
            htype=request.htype,
            hlen=request.hlen,
        )
