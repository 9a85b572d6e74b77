"""I/O. A test harness that serves vnproto's responders on a real link, for the live tests.

Run inside a network namespace as ``python -m tests.vnproto.harness IFNAME``. It reads every frame of
the interface through an AF_PACKET socket and answers ARP, DHCP, DNS and ICMP echo for 10.250.0.1
with the pure responders, as the node will do on its TAP device; the interface itself has no address,
so the kernel answers nothing. Address allocation is a local pool here (the DHT's stand-in is a seam
the server defines: AllocateAddress in, address_allocated out, one loop turn later so the answer is
asynchronous as it will be in the node). Events are printed as JSON lines for the test to wait on.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from collections import deque
from ipaddress import IPv4Address, IPv4Network
from random import Random
from typing import Any

from vnproto import (
    AddressDeclined,
    AllocateAddress,
    Answer,
    ArpResponder,
    DhcpServer,
    DhcpServerConfig,
    DnsResponder,
    EtherType,
    Forward,
    GratuitousArp,
    HostnameLearned,
    IcmpMessage,
    IcmpType,
    IpProto,
    IPv4Packet,
    LeaseBound,
    Lookup,
    ProbeSeen,
    ReleaseAddress,
    SendFrame,
    build_frame,
    decode_udp_frame,
    mac_to_str,
    payload_offset,
    random_remote_mac,
    udp_frame,
    udp_ports,
)

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SERVER_IP = IPv4Address("10.250.0.1")
SUBNET = IPv4Network("10.250.0.0/16")
MEMBERS = {"alice": IPv4Address("10.250.0.77")}
"""Remote members the harness pretends the DHT knows."""
POOL_START = 100


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **{k: str(v) for k, v in fields.items()}}), flush=True)


class Harness:
    def __init__(self, ifname: str, seed: int) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.mac = random_remote_mac(Random(seed))
        config = DhcpServerConfig(server_ip=SERVER_IP, server_mac=self.mac, subnet=SUBNET, mtu=1400)
        self.dhcp = DhcpServer(config)
        self.dns = DnsResponder("ipop", SUBNET)
        self.arp = ArpResponder(self.mac, decide=self.answers_for, subnet=SUBNET)
        self.names = dict(MEMBERS)
        self.leased: dict[IPv4Address, bytes] = {}
        self.pending: deque[AllocateAddress] = deque()

    def answers_for(self, ip: IPv4Address) -> bool:
        return ip == SERVER_IP or ip in MEMBERS.values()

    def allocate(self, request: AllocateAddress) -> IPv4Address | None:
        mine = [ip for ip, key in self.leased.items() if key == request.client_key]
        if mine:
            return mine[0]
        wish = request.requested_ip
        if wish is not None and wish not in self.leased and wish not in MEMBERS.values():
            return wish
        for host in range(POOL_START, 250):
            ip = IPv4Address(int(SUBNET.network_address) + host)
            if ip not in self.leased:
                return ip
        return None

    def run(self) -> None:
        emit("ready", mac=mac_to_str(self.mac))
        while True:
            now = time.monotonic()
            deadline = self.dhcp.next_deadline()
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
            timeout = 0.0 if self.pending else timeout
            readable, _, _ = select.select([self.sock], [], [], timeout)
            now = time.monotonic()
            if readable:
                frame, address = self.sock.recvfrom(65535)
                if address[2] != PACKET_OUTGOING:
                    self.frame(frame, now)
            while self.pending:
                request = self.pending.popleft()
                ip = self.allocate(request)
                if ip is None:
                    self.act(self.dhcp.allocation_failed(request.client_key, now))
                else:
                    self.leased[ip] = request.client_key
                    self.act(self.dhcp.address_allocated(request.client_key, ip, now))
            self.act(self.dhcp.expire(now))

    def frame(self, frame: bytes, now: float) -> None:
        try:
            ethertype, offset = payload_offset(frame)
        except ValueError:
            return
        if ethertype == EtherType.ARP:
            self.act(self.arp.receive(frame))
            return
        ports = udp_ports(frame)
        if ports is not None and ports[1] == 67:
            self.act(self.dhcp.receive(frame, now))
        elif ports is not None and ports[1] == 53:
            self.dns_query(frame)
        elif ethertype == EtherType.IPV4:
            self.icmp(frame, offset)

    def dns_query(self, frame: bytes) -> None:
        query = decode_udp_frame(frame)
        if query.dst_ip != SERVER_IP:
            return
        decision = self.dns.handle(query.payload)
        if isinstance(decision, Lookup):
            reply = self.dns.complete(decision, self.names.get(decision.name))
        elif isinstance(decision, Answer):
            reply = decision.reply
        else:
            emit("dns-unanswered", decision=type(decision).__name__, forward=isinstance(decision, Forward))
            return
        port, mac, ip = query.src_port, query.src_mac, query.src_ip
        out = udp_frame(self.mac, mac, SERVER_IP, ip, src_port=53, dst_port=port, payload=reply)
        self.sock.send(out)

    def icmp(self, frame: bytes, offset: int) -> None:
        packet = IPv4Packet.decode(frame[offset:])
        if packet.dst != SERVER_IP or packet.protocol != IpProto.ICMP or packet.is_fragment:
            return
        message = IcmpMessage.decode(packet.payload)
        if message.type == IcmpType.ECHO_REQUEST:
            reply = IPv4Packet(SERVER_IP, packet.src, IpProto.ICMP, message.echo_reply().encode()).encode()
            self.sock.send(build_frame(frame[6:12], self.mac, EtherType.IPV4, reply))

    def act(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, SendFrame):
                self.sock.send(action.frame)
            elif isinstance(action, AllocateAddress):
                self.pending.append(action)
            elif isinstance(action, ReleaseAddress | AddressDeclined):
                self.leased.pop(action.ip, None)
                emit(type(action).__name__, ip=action.ip)
            elif isinstance(action, HostnameLearned):
                ip = next(ip for ip, key in self.leased.items() if key == action.client_key)
                self.names[action.hostname] = ip
                emit("HostnameLearned", hostname=action.hostname, ip=ip)
            elif isinstance(action, LeaseBound):
                emit("LeaseBound", ip=action.ip, mac=mac_to_str(action.mac))
            elif isinstance(action, GratuitousArp | ProbeSeen):
                emit(type(action).__name__, ip=action.ip, mac=mac_to_str(action.mac))


def main() -> None:
    Harness(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1).run()


if __name__ == "__main__":
    main()
