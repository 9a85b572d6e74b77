"""The upstream DNS forwarder: which resolvers it uses, and a real round trip through aiodns to a small
resolver in this process (loopback, a port the system chooses), with answers, NXDOMAIN, and SERVFAIL."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSRecord

from ipop.upstream import UpstreamDns, host_resolvers, usable

SUBNET = IPv4Network("10.250.0.0/16")


def test_resolvers_from_resolv_conf_without_the_virtual_subnet(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# dhcp\nnameserver 10.250.0.1\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch ipop\n"
    )
    servers = host_resolvers(conf)
    assert servers == [("10.250.0.1", 53), ("192.0.2.53", 53), ("fe80::1", 53)]
    assert usable(servers, SUBNET) == [("192.0.2.53", 53), ("fe80::1", 53)]
    assert host_resolvers(tmp_path / "missing") == []


class Resolver(asyncio.DatagramProtocol):
    """Answers example.org with two records, a CNAME chain for www, NXDOMAIN for the rest."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = DNSRecord.parse(data)
        reply = query.reply()
        name = str(query.q.qname).rstrip(".")
        if name == "example.org" and query.q.qtype == QTYPE.A:
            reply.add_answer(*RR.fromZone("example.org. 60 A 192.0.2.1\nexample.org. 60 A 192.0.2.2"))
        elif name == "www.example.org":
            reply.add_answer(
                *RR.fromZone("www.example.org. 30 CNAME example.org.\nexample.org. 60 A 192.0.2.1")
            )
        elif name == "example.org" and query.q.qtype == QTYPE.MX:
            reply.add_answer(*RR.fromZone("example.org. 60 MX 10 mail.example.org."))
        elif name != "example.org":
            reply.header.rcode = RCODE.NXDOMAIN
        self.transport.sendto(reply.pack(), addr)


async def test_queries_are_answered_through_aiodns() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Resolver, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    upstream = UpstreamDns([("127.0.0.1", port)], SUBNET)
    try:

        async def ask(name: str, qtype: str = "A") -> DNSRecord:
            query = DNSRecord.question(name, qtype)
            reply = await upstream.resolve(query.pack())
            assert reply is not None
            parsed = DNSRecord.parse(reply)
            assert parsed.header.id == query.header.id and parsed.header.qr == 1
            return parsed

        both = await ask("example.org")
        assert sorted(str(rr.rdata) for rr in both.rr) == ["192.0.2.1", "192.0.2.2"]
        chain = await ask("www.example.org")
        assert [QTYPE[rr.rtype] for rr in chain.rr] == ["CNAME", "A"]
        assert str((await ask("example.org", "MX")).rr[0].rdata) == "10 mail.example.org."
        assert (await ask("nowhere.example")).header.rcode == RCODE.NXDOMAIN
        assert (await ask("example.org", "AAAA")).rr == []
        assert (await ask("example.org", "AXFR")).header.rcode == RCODE.NOTIMP
        assert await upstream.resolve(b"\x00\x01garbage") is None
    finally:
        await upstream.close()
        transport.close()
    dead = UpstreamDns([("10.250.0.1", 53)], SUBNET)  # only the node itself: nobody to ask
    reply = await dead.resolve(DNSRecord.question("example.org").pack())
    assert reply is not None and DNSRecord.parse(reply).header.rcode == RCODE.SERVFAIL
    await dead.close()
